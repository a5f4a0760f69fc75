"""The openai backend against loopback servers that fail in every way issue 14 lists: the error class, the message,
the time it takes, and that no record is lost, mixed up or duplicated. Small timeouts and backoffs keep each fast."""

import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from loopback import LoopbackServer, answer_text, completion, reply

from xinstruct.config import model_config
from xinstruct.models.base import Backend, FatalBackendError, MissingCapability, SamplingParams, require
from xinstruct.models.openai import OpenAIBackend

FAST = {"connect_timeout_s": 0.5, "read_timeout_s": 0.5, "request_timeout_s": 5.0, "backoff_s": 0.01,
        "max_backoff_s": 0.05, "max_retries": 3}
PARAMS = SamplingParams(temperature=0.0, max_tokens=8)
PROMPTS = [f"document {i}" for i in range(30)]


def backend(url, **kw) -> OpenAIBackend:
    settings = {"backend": "openai", "model": "m", **FAST, **kw}
    if "base_urls" not in kw and "managed" not in kw:
        settings["base_url"] = url
    return OpenAIBackend(model_config(**settings))


def dead_url() -> str:
    from xinstruct.models.managed import free_port
    return f"http://127.0.0.1:{free_port()}/v1"


def assert_all_answered(results, prompts, n=1):
    """Every prompt has exactly its own n answers: nothing lost, mixed up or duplicated."""
    assert len(results) == len(prompts)
    for prompt, result in zip(prompts, results):
        assert result.error is None, result.error
        assert [c.text for c in result.completions] == [answer_text(prompt)] * n


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("chat", [False, True])
def test_answers_come_back_in_order(stream, chat):
    with LoopbackServer() as server, backend(server.url, model=None, stream=stream, chat=chat) as b:
        assert b.model_name() == "fake-model"
        results = b.generate(PROMPTS, SamplingParams(n=2, seed=1))
        assert_all_answered(results, PROMPTS, n=2)
        assert all(c.n_tokens == 2 and c.finish_reason == "stop" for r in results for c in r.completions)
        assert server.requests == 1 + 2 * len(PROMPTS)  # /models once, then one request per sample


def settled_count(server, quiet_s: float = 0.3, limit_s: float = 5.0) -> int:
    """The server's request count once it has not moved for `quiet_s` (a loaded machine delivers late)."""
    deadline = time.monotonic() + limit_s
    count = server.requests
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        if server.requests == count:
            break
        count = server.requests
    return count


def test_500_forever_stops_on_the_error_budget():
    with LoopbackServer(lambda r: reply({"error": "overloaded"}, 500)) as server:
        b = backend(server.url, max_concurrency=4, error_budget={"window": 10, "max_failed_share": 0.5})
        started = time.monotonic()
        with pytest.raises(FatalBackendError, match=r"^6 of the last 6 calls failed after their retries .*HTTP 500"):
            b.generate(PROMPTS * 10, PARAMS)
        assert time.monotonic() - started < 5
        # 300 calls would have made 1,200 requests; the budget stops them after its 6 calls and those in flight
        assert server.requests <= (6 + 4) * (FAST["max_retries"] + 1)
        seen = settled_count(server)  # requests sent before the budget was spent may still be reaching the server
        with pytest.raises(FatalBackendError, match="6 of the last 6"):  # a spent budget stays spent
            b.generate(PROMPTS[:1], PARAMS)
        assert server.requests == seen
        b.close()


def test_401_is_fatal_at_once_and_the_echoed_key_never_comes_back(monkeypatch, caplog):
    key = "sk-test-SECRET1234567890"
    monkeypatch.setenv("XI_FAULT_KEY", key)

    def echo_key(request):
        auth = request.headers.get("authorization", "")
        return reply({"error": f"invalid api key {auth}; other token Bearer abc.def-123 sk-live-0123456789"}, 401)

    caplog.set_level(logging.DEBUG)
    with LoopbackServer(echo_key) as server, backend(server.url, api_key_env="XI_FAULT_KEY",
                                                     max_concurrency=4) as b:
        assert "SECRET" not in repr(b)
        with pytest.raises(FatalBackendError) as e:
            b.generate(PROMPTS, PARAMS)
        assert server.requests <= 4  # the requests in flight, none retried
    message = str(e.value)
    assert "HTTP 401" in message and "$XI_FAULT_KEY" in message and "\n" not in message
    for secret in ("SECRET", "abc.def-123", "sk-live-0123456789"):
        assert secret not in message and secret not in caplog.text


def test_a_4xx_is_one_records_error_truncated_and_scrubbed(monkeypatch):
    monkeypatch.setenv("XI_FAULT_KEY", "sk-test-SECRET1234567890")

    def too_long(request):
        if "long" in request.body["prompt"]:
            return reply({"error": "prompt too long " + request.headers["authorization"] + " x" * 2000}, 400)
        return completion(request)

    prompts = ["a", "long b", "c"]
    with LoopbackServer(too_long) as server, backend(server.url, api_key_env="XI_FAULT_KEY") as b:
        results = b.generate(prompts, PARAMS)
        assert server.requests == 3  # a 400 is not retried
    assert [r.error is None for r in results] == [True, False, True]
    error = results[1].error
    assert "HTTP 400" in error and "SECRET" not in error and len(error) <= 300


def test_a_hang_fails_each_record_within_two_read_timeouts_and_the_call_within_the_budget():
    with LoopbackServer(lambda r: None) as server:
        with backend(server.url, max_concurrency=8) as b:
            started = time.monotonic()
            results = b.generate(PROMPTS[:3], PARAMS)
            took = time.monotonic() - started
        assert all("ReadTimeout" in r.error for r in results)
        assert 2 * 0.5 <= took < 2 * 0.5 + 0.5  # two read timeouts (a timeout is retried once) and the backoff
        assert server.requests == 6
        with backend(server.url, max_concurrency=30, error_budget={"window": 10, "max_failed_share": 0.5}) as b:
            started = time.monotonic()
            with pytest.raises(FatalBackendError, match="calls failed after their retries"):
                b.generate(PROMPTS, PARAMS)
            assert time.monotonic() - started < 2 * 0.5 + 0.5


@pytest.mark.parametrize("body, content_type, says", [
    ("<html>Bad gateway</html>", "text/html", "the body is not JSON"),
    ("[1, 2]", "application/json", "the body is a JSON list, not an object"),
    ({"choices": []}, "application/json", "no choices"),
    ({"object": "text_completion"}, "application/json", "no choices"),
])
@pytest.mark.parametrize("stream", [True, False])
def test_an_answer_that_breaks_the_schema_is_fatal(body, content_type, says, stream):
    with LoopbackServer(lambda r: reply(body, content_type=content_type)) as server, \
            backend(server.url, max_concurrency=2, stream=stream) as b:
        with pytest.raises(FatalBackendError, match=f"breaks the OpenAI API schema: {says}"):
            b.generate(PROMPTS, PARAMS)
        assert server.requests <= 2  # nothing retried


def test_a_non_json_models_list_is_fatal():
    with LoopbackServer(lambda r: reply("<html>no</html>", content_type="text/html")) as server, \
            backend(server.url, model=None) as b, \
            pytest.raises(FatalBackendError, match="/models: the answer breaks the OpenAI API schema"):
        b.generate(PROMPTS[:2], PARAMS)


def test_a_cut_stream_and_429s_are_retried():
    calls = []

    def flaky(request):
        calls.append(request.body["prompt"])
        if len(calls) == 1:  # a stream that ends before its finish_reason (llama-cpp-python's interrupt_requests)
            return reply('data: {"choices": [{"text": " Desc", "finish_reason": null}]}\n\ndata: [DONE]\n\n',
                         content_type="text/event-stream")
        if len(calls) == 2:
            return reply({"error": "slow down"}, 429, headers={"retry-after": "0.2"})
        return completion(request)

    with LoopbackServer(flaky) as server, backend(server.url) as b:
        started = time.monotonic()
        assert_all_answered(b.generate(["x"], PARAMS), ["x"])
        assert time.monotonic() - started >= 0.2  # Retry-After honoured
        assert server.requests == 3


def test_a_killed_server_that_comes_back_loses_nothing():
    holder = {}

    def dies_once(request):
        if holder["server"].requests == 12:  # the 12th request: the server goes down for 0.6 s mid-batch
            def down_and_up():
                holder["server"].kill()
                time.sleep(0.6)
                holder["server"].start()
            threading.Thread(target=down_and_up).start()
            return None
        return completion(request)

    with LoopbackServer(dies_once) as server:
        holder["server"] = server
        with backend(server.url, max_concurrency=4, max_retries=6, backoff_s=0.1, max_backoff_s=0.4) as b:
            results = b.generate(PROMPTS, PARAMS)
        assert_all_answered(results, PROMPTS)
        assert server.requests >= len(PROMPTS) + 1


def test_one_of_two_endpoints_down_the_work_finishes_on_the_other(caplog):
    with LoopbackServer() as good:
        with backend(None, base_urls=[dead_url(), good.url], max_concurrency=8) as b:
            results = b.generate(PROMPTS, PARAMS)
        assert_all_answered(results, PROMPTS)
        assert good.requests == len(PROMPTS)  # refused requests never reached a server: none doubled
        assert "skipped for 30 s" in caplog.text
        with LoopbackServer(lambda r: reply({"error": "boom"}, 503)) as failing:
            with backend(None, base_urls=[failing.url, good.url], max_concurrency=2) as b:
                assert_all_answered(b.generate(PROMPTS, PARAMS), PROMPTS)
            assert failing.requests <= 3 + 2  # skipped after 3 failures in a row (+ those already sent)


def test_capabilities_follow_the_config_and_require_checks_them():
    with backend(dead_url(), chat=True) as chat, backend(dead_url()) as completions:
        assert "loglikelihood" in completions.capabilities and "loglikelihood" not in chat.capabilities
        with pytest.raises(MissingCapability, match="judge needs a backend that can loglikelihood"):
            require(chat, "loglikelihood", "judge")

    class Plugin(Backend):  # declares log-likelihoods but never implemented score()
        capabilities = frozenset({"generate", "loglikelihood", "option_logprobs"})

    for capability in ("loglikelihood", "option_logprobs"):
        with pytest.raises(MissingCapability):
            require(Plugin(), capability, "grading")


def test_scores_from_echoed_prompt_logprobs():
    def echo(request):  # the shape vLLM and llama-cpp-python's server give: offsets into the echoed prompt
        prompt = request.body["prompt"]
        assert request.body["echo"] and request.body["logprobs"] == 1
        words = prompt.split(" ")
        offsets = [sum(len(w) + 1 for w in words[:i]) for i in range(len(words))] + [len(prompt)]
        return reply({"choices": [{"text": prompt + " x", "logprobs": {
            "text_offset": offsets, "token_logprobs": [None] + [-1.0] * (len(words) - 1) + [-9.0],
            "tokens": words + [" x"]}}]})

    with LoopbackServer(echo) as server, backend(server.url) as b:
        [s] = b.score([("The capital of", " France is")])
        assert (s.logprob, s.n_tokens, s.error) == (-2.0, 2, None)
    with LoopbackServer(lambda r: reply({"choices": [{"text": "x"}]})) as server, backend(server.url) as b, \
            pytest.raises(FatalBackendError, match="no prompt logprobs"):
        b.score([("a", " b")])


def test_managed_server_restarts_after_sigkill_and_nothing_is_lost(tmp_path):
    """A managed `command` server (this file's loopback server in a process) killed mid-batch: restarted on
    its port, the requests in flight retried, every answer back once."""
    loopback = Path(__file__).with_name("loopback.py")
    managed = {"kind": "command", "command": f"{{python}} {loopback} {{port}}", "startup_timeout_s": 30,
               "log": str(tmp_path / "server.log")}
    with backend(None, managed=managed, max_concurrency=4, backoff_s=0.05, max_backoff_s=0.2) as b:
        first = b._server.proc.pid
        killer = threading.Timer(0.05, os.kill, (first, signal.SIGKILL))
        killer.start()
        results = b.generate(PROMPTS * 20, PARAMS)
        killer.join()
        assert_all_answered(results, PROMPTS * 20)
        assert b._server.starts == 2 and b._server.alive() and b._server.proc.pid != first
        server = b._server.proc
    assert server.poll() is not None  # close() stopped it


def test_managed_server_that_cannot_start_is_fatal_with_its_output(tmp_path):
    command = "{python} -c \"import sys; print('no GPU found'); sys.exit(3)\""
    with pytest.raises(FatalBackendError, match="exited with code 3 while starting: no GPU found"):
        backend(None, managed={"kind": "command", "command": command, "log": str(tmp_path / "s.log")})


def test_managed_command_lines_for_vllm_and_sglang():
    """vLLM and SGLang cannot run here (no GPU): their command lines and request names are checked instead."""
    from xinstruct.models.managed import LORA_NAME, request_fields, server_command, server_env

    vllm = model_config(backend="openai", model="Qwen/Qwen2.5-7B", lora="/run/generator/adapter",
                        managed={"kind": "vllm", "gpus": [2, 3], "args": ["--max-lora-rank", "32"]})
    assert server_command(vllm, 8123) == [
        "vllm", "serve", "Qwen/Qwen2.5-7B", "--host", "127.0.0.1", "--port", "8123", "--served-model-name",
        "xinstruct", "--tensor-parallel-size", "2", "--enable-lora", "--lora-modules",
        f"{LORA_NAME}=/run/generator/adapter", "--max-lora-rank", "32"]
    assert request_fields(vllm) == {"model": LORA_NAME}
    assert server_env(vllm.managed) == {"VLLM_BATCH_INVARIANT": "1", "CUDA_VISIBLE_DEVICES": "2,3"}
    fast = model_config(backend="openai", model="m", managed={"kind": "vllm", "batch_invariant": False})
    assert "VLLM_BATCH_INVARIANT" not in server_env(fast.managed)
    sglang = model_config(backend="openai", model="Qwen/Qwen2.5-7B", lora="/a", managed={"kind": "sglang"})
    assert server_command(sglang, 30000) == [
        sys.executable, "-m", "sglang.launch_server", "--model-path", "Qwen/Qwen2.5-7B", "--host", "127.0.0.1",
        "--port", "30000", "--served-model-name", "xinstruct", "--enable-lora", "--lora-paths", f"{LORA_NAME}=/a"]
    assert request_fields(sglang) == {"model": "xinstruct", "lora_path": LORA_NAME}
    llama = model_config(backend="openai", lora="/g.gguf", managed={"kind": "llamacpp"})
    cmd = server_command(llama, 9000)
    assert cmd[1:3] == ["-m", "xinstruct.models.llama_server"] and cmd[-2:] == ["--lora_path", "/g.gguf"]
    assert ["--interrupt_requests", "False"] == cmd[cmd.index("--interrupt_requests"):][:2]
    assert request_fields(llama) == {"model": "xinstruct"}
    assert json.dumps(request_fields(llama))  # what goes into every request body


def test_transport_settings_do_not_change_the_outputs():
    """The openai client's settings are Knobs (in no fingerprint): concurrency, streaming, timeouts, retries,
    one endpoint or several, flaky or not, give the same generations and scores, in the same order."""
    def echo(request):  # completions, and scores from echoed prompt logprobs (one token a word)
        if request.path.endswith("/models") or not request.body.get("echo"):
            return completion(request)
        prompt = request.body["prompt"]
        words = prompt.split(" ")
        offsets = [sum(len(w) + 1 for w in words[:i]) for i in range(len(words))] + [len(prompt)]
        values = [None] + [-float(len(w)) for w in words[1:]] + [-9.0]
        return reply({"choices": [{"text": prompt + " x", "logprobs": {"text_offset": offsets, "token_logprobs": values,
                                                                        "tokens": words + [" x"]}}]})

    flaky_calls = []

    def flaky(request):  # every third request fails first with a 503
        flaky_calls.append(1)
        if len(flaky_calls) % 3 == 0:
            return reply({"error": "busy"}, 503)
        return echo(request)

    requests = [(f"context {i}", f" the continuation of {i}") for i in range(12)]
    outputs = []
    with LoopbackServer(echo) as one, LoopbackServer(echo) as two, LoopbackServer(flaky) as three:
        for url, settings in ((one.url, {}), (one.url, {"max_concurrency": 1, "stream": False}),
                              (None, {"base_urls": [one.url, two.url], "max_concurrency": 3, "read_timeout_s": 2.0}),
                              (three.url, {"max_retries": 5, "backoff_s": 0.02, "endpoint_cooldown_s": 1.0})):
            with backend(url, **settings) as b:
                generated = b.generate(PROMPTS, SamplingParams(n=2, seed=3))
                outputs.append(([[c.text for c in r.completions] for r in generated], b.score(requests)))
    assert all(o == outputs[0] for o in outputs[1:])
    assert outputs[0][1][0].token_offsets == [1, 5, 18, 21] and outputs[0][1][0].error is None  # word starts
