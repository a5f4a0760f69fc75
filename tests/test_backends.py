"""Real backends: the bundled Gemma on llama.cpp, a loopback llama.cpp server for the openai backend,
and transformers on CPU."""

import http.server
import json
import socket
import threading
import time

import pytest

from xinstruct.config import model_config
from xinstruct.models.base import SamplingParams
from xinstruct.prompts import INSTRUCTION_STOPS, generation_prompt

GREEDY = SamplingParams(temperature=0.0, max_tokens=24, stop=INSTRUCTION_STOPS)
PROMPTS = [generation_prompt(t) for t in (
    "Mvua kubwa imenyesha jijini Dar es Salaam usiku wa kuamkia leo na kusababisha mafuriko.",
    "วันนี้อากาศร้อนมาก ควรดื่มน้ำให้เพียงพอและหลีกเลี่ยงการออกแดดในช่วงบ่าย",
    "आज बाजार में सब्जियों के दाम बढ़ गए हैं क्योंकि बारिश से फसल खराब हुई है।",
    "The capital of France is",
    "Once upon a time",
)]


def test_llamacpp_generation_does_not_depend_on_the_other_prompts(llama):
    """batch_invariant (the default): a prompt's texts are the same, bit for bit, generated alone, among other
    prompts, in another order, greedy or sampled with n > 1 (what a resume or another batch size does)."""
    sampled = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=16, n=2, seed=5, stop=INSTRUCTION_STOPS)
    for params in (GREEDY, sampled):
        together = [[c.text for c in r.completions] for r in llama.generate(PROMPTS, params)]
        reversed_ = [[c.text for c in r.completions] for r in llama.generate(PROMPTS[::-1], params)][::-1]
        alone = [[c.text for c in llama.generate([p], params)[0].completions] for p in PROMPTS]
        assert together == reversed_ == alone
    assert len({t for texts in together for t in texts}) > len(PROMPTS)  # two samples of a prompt differ


def test_llamacpp_batching_keeps_sequences_apart():
    """batch_invariant false: sequences decoded together (more than n_parallel of them, so slots are reused) each
    read only their own prompt: every one repeats its own word, never a neighbour's. (Their texts may differ from
    those decoded alone: kernels round with the batch's shape, and a near-tie can flip.)"""
    from xinstruct.models.llamacpp import LlamaCppBackend

    words = ["kettle", "giraffe", "lantern", "pepper", "violin", "harbor"]
    prompts = [f"Q: Say the word 'mango' three times.\nA: mango mango mango\nQ: Say the word '{w}' three times.\nA:"
               for w in words]
    params = SamplingParams(temperature=0.0, max_tokens=8, stop=("\n",), n=2)
    with LlamaCppBackend(model_config(n_ctx=4096, n_parallel=4, batch_invariant=False)) as llama:
        results = llama.generate(prompts, params)
    for word, result in zip(words, results):
        for completion in result.completions:
            assert completion.text.split()[:2] == [word, word], (word, completion.text)


def test_llamacpp_sampling_n_and_seed(llama):
    params = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=16, n=3, seed=7)
    a = llama.generate(PROMPTS[:2], params)
    b = llama.generate(PROMPTS[:2], params)
    assert [len(r.completions) for r in a] == [3, 3]
    assert [c.text for r in a for c in r.completions] == [c.text for r in b for c in r.completions]
    assert all(c.n_tokens <= 16 for r in a for c in r.completions)


def test_llamacpp_loglikelihood(llama):
    right, wrong = llama.loglikelihood([("The capital of France is", " Paris"),
                                        ("The capital of France is", " banana")])
    assert right > wrong and right < 0


def test_llamacpp_rejects_prompt_longer_than_context(llama):
    result = llama.generate(["word " * 5000], GREEDY)[0]
    assert result.error and "n_ctx" in result.error


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server():
    from conftest import llama_cpp_server

    # n_ctx small (the helper's 512): with echo + logprobs the server turns its whole (n_ctx x 262k vocab) logits
    # array into log-probabilities, ~15 s a request at 2048 here; interrupt_requests False, or a new request cuts
    # the stream of the one running (logits_all, which prompt logprobs need, is on by default in the server)
    with llama_cpp_server("--interrupt_requests", "False") as url:
        yield url


def test_openai_backend_against_loopback_llama_server(llama_server, monkeypatch):
    from xinstruct.models.openai import OpenAIBackend

    monkeypatch.setenv("XI_TEST_KEY", "sk-secret-value")
    with OpenAIBackend(model_config(backend="openai", base_url=llama_server, api_key_env="XI_TEST_KEY",
                                   max_concurrency=2)) as backend:
        assert "sk-secret" not in repr(backend)
        assert backend.model_name() == "gemma"
        results = backend.generate(PROMPTS[:2], SamplingParams(temperature=0.0, max_tokens=12, n=2))
        assert all(r.error is None and len(r.completions) == 2 for r in results)
        assert all(c.n_tokens > 0 for r in results for c in r.completions)
        assert all(c.n_tokens <= 12 and c.finish_reason in ("stop", "length") for r in results for c in r.completions)
    with OpenAIBackend(model_config(backend="openai", base_url=llama_server, stream=False)) as whole:
        [result] = whole.generate(PROMPTS[:1], SamplingParams(temperature=0.0, max_tokens=12))
        assert result.error is None and 0 < result.completions[0].n_tokens <= 12


def test_managed_llama_server_killed_mid_batch_is_restarted(tmp_path):
    """`managed: {kind: llamacpp}`: the backend starts llama-cpp-python's server itself; SIGKILLed while it
    serves a batch, it is restarted and every prompt still gets its answer, once."""
    pytest.importorskip("llama_cpp.server")
    import os
    import signal

    from xinstruct.models.openai import OpenAIBackend

    log = tmp_path / "server.log"
    cfg = model_config(backend="openai", max_concurrency=2, backoff_s=0.2, max_backoff_s=1.0,
                       managed={"kind": "llamacpp", "args": ["--n_ctx", "512"], "startup_timeout_s": 120,
                                "log": str(log)})
    prompts = PROMPTS
    with OpenAIBackend(cfg) as backend:
        first = backend._server.proc.pid

        def kill_once_serving():  # uvicorn logs each request as it starts answering it
            deadline = time.time() + 120
            while log.read_text(errors="replace").count("POST /v1/completions") < 2 and time.time() < deadline:
                time.sleep(0.05)
            os.kill(first, signal.SIGKILL)

        killer = threading.Thread(target=kill_once_serving)
        killer.start()
        results = backend.generate(prompts, SamplingParams(temperature=0.0, max_tokens=6, n=1))
        killer.join()
        assert backend._server.starts == 2 and backend._server.proc.pid != first
        server = backend._server.proc
    assert [len(r.completions) for r in results] == [1] * len(prompts)
    assert all(r.error is None and r.completions[0].n_tokens > 0 for r in results)
    assert server.poll() is not None  # stopped with the backend


def test_openai_backend_scores_like_llama_cpp_in_process(llama_server, llama):
    """score() through /completions with echo + logprobs on llama-cpp-python's server agrees with the same
    GGUF in-process (to the ~0.3 nats that batch shapes move llama.cpp's CPU kernels)."""
    from xinstruct.models.openai import OpenAIBackend

    requests = [("The capital of France is", " Paris"), ("The capital of France is", " banana")]
    with OpenAIBackend(model_config(backend="openai", base_url=llama_server)) as backend:
        served = backend.score(requests)
    local = llama.score(requests)
    assert all(s.error is None for s in served)
    assert [s.n_tokens for s in served] == [s.n_tokens for s in local]
    assert served[0].logprob > served[1].logprob
    for s, x in zip(served, local):
        assert abs(s.logprob - x.logprob) < 0.5


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Answers 429, then 503, then a completion: the client must retry through both."""
    calls = 0

    def do_POST(self):
        type(self).calls += 1
        self.rfile.read(int(self.headers["content-length"]))
        if self.calls <= 2:
            self.send_response(429 if self.calls == 1 else 503)
            self.send_header("retry-after", "0")
            self.end_headers()
            return
        body = json.dumps({"choices": [{"text": " Describe the rains.", "finish_reason": "stop"}],
                           "usage": {"completion_tokens": 4}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_openai_backend_retries_then_gives_up_cleanly():
    from xinstruct.models.openai import OpenAIBackend

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/v1"
    with OpenAIBackend(model_config(backend="openai", base_url=url, model="m", max_retries=3)) as backend:
        [result] = backend.generate(["x"], SamplingParams(max_tokens=8))
        assert result.error is None and result.completions[0].text == " Describe the rains."
        assert _Flaky.calls == 3
    server.shutdown()
    dead = f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens: errors come back, nothing is raised
    with OpenAIBackend(model_config(backend="openai", base_url=dead, model="m", max_retries=1)) as backend:
        [result] = backend.generate(["x"], SamplingParams(max_tokens=8))
        assert result.error and "ConnectError" in result.error


@pytest.mark.slow
def test_transformers_backend_on_cpu(llama):
    from xinstruct.models.transformers import TransformersBackend

    backend = TransformersBackend(model_config(backend="transformers", device="cpu", batch_size=2))
    results = backend.generate(["The capital of France is", PROMPTS[0]], SamplingParams(temperature=0.0,
                                                                                          max_tokens=5, n=2))
    assert [len(r.completions) for r in results] == [2, 2]
    first = results[0].completions[0]
    assert first.text.strip() and first.n_tokens == 5 and first.finish_reason == "length"
    right, wrong = backend.loglikelihood([("The capital of France is", " Paris"),
                                          ("The capital of France is", " banana")])
    assert right > wrong
    # the dequantized model and llama.cpp's Q4 agree on the same log-likelihood to within quantization noise
    assert abs(right - llama.loglikelihood([("The capital of France is", " Paris")])[0]) < 1.0
    # a text too long for the model's context fails alone, as its record's error
    long = "word " * 40000
    assert "context" in backend.generate([long, "Hi"], SamplingParams(max_tokens=2))[0].error
    assert "context" in backend.score([(long, " x")])[0].error
