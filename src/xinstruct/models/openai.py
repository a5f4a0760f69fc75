"""Any OpenAI-compatible server: vLLM, SGLang, Ollama, llama.cpp's server, hosted APIs; or one it starts itself.

One request per (prompt, sample): every server supports it, and vLLM/SGLang batch concurrent requests and share
the prompt prefix anyway. Requests run on an asyncio loop in a background thread, hundreds in flight over kept-
alive connections, while generate() and score() stay synchronous for the stages.

Failures (docs/BACKENDS.md):
- fatal, raised at once from generate()/score() as FatalBackendError: HTTP 401/402/403, 404/405 (unknown model
  or path), an answer that breaks the API's schema, a managed server that cannot start, or the error budget
  spent (more than error_budget.max_failed_share of the last error_budget.window calls failed after retries);
- transient, retried with exponential backoff and jitter (Retry-After honoured) up to max_retries: 408, 409,
  425, 429, 5xx, refused or reset connections, a stream cut before its finish_reason, and timeouts, though
  these only once: a server that hung twice on the same request is down, and a third wait costs another
  read timeout per record;
- per record, returned as GenerationResult.error / Score.error: other 4xx, and transient failures that outlast
  their retries. The stage records them and asks again on the next run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import random
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial

import httpx
import orjson

from xinstruct.config import OpenAIConfig
from xinstruct.models.base import (
    Backend,
    Completion,
    FatalBackendError,
    GenerationResult,
    SamplingParams,
    Score,
    clean_error,
)
from xinstruct.models.identity import openai_model_id
from xinstruct.models.managed import ManagedServer, request_fields

log = logging.getLogger(__name__)
RETRY_STATUS = {408, 409, 425, 429}  # and every 5xx
FATAL_STATUS = {401: "check the key in ${env}", 402: "check the account", 403: "check the key in ${env}",
                404: "check base_url and model", 405: "check base_url"}
TIMEOUT_RETRIES = 1  # see the module docstring: a hang costs at most 2 read timeouts per record
FAILS_BEFORE_COOLDOWN = 3  # consecutive failed attempts after which an endpoint of several is skipped


class _Retry(Exception):
    """This attempt failed; another may not."""

    def __init__(self, message: str, retry_after: float | None = None, timeout: bool = False,
                 unreachable: bool = False):
        super().__init__(message)
        self.retry_after, self.timeout, self.unreachable = retry_after, timeout, unreachable


class _PerRecord(Exception):
    """This request cannot succeed (e.g. HTTP 400: prompt too long): not retried, the record's error."""


class _Schema(Exception):
    """An answer that breaks the API's schema: the server is not what the config says it is."""


class _Failed(Exception):
    """A call failed for good; returned (not raised) as the record's error."""


@dataclass(eq=False)
class _Endpoint:
    url: str
    server: ManagedServer | None = None
    # idle transports, one kept-alive connection each: httpcore's pool scans every connection it holds on every
    # request, and one pool of 64 served ~85 requests/s here against ~500 for 64 pools of one (measured)
    lanes: list = field(default_factory=list)
    in_flight: int = 0
    fails: int = 0  # consecutive failed attempts
    down_until: float = 0.0
    ready: asyncio.Event | None = None  # managed: cleared while the server restarts
    restart: asyncio.Future | None = None
    fatal: FatalBackendError | None = None
    _targets: dict = field(default_factory=dict)

    def target(self, path: str) -> httpx.URL:
        """url + path, parsed once: parsing a URL costs a tenth of a request."""
        key = (self.url, path)  # a restarted managed server may have a new port
        if key not in self._targets:
            self._targets[key] = httpx.URL(self.url + path)
        return self._targets[key]


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, cfg: OpenAIConfig):
        self.cfg = cfg
        key = os.environ.get(cfg.api_key_env, "")
        self._secrets = (key,) if key else ()
        self._headers = httpx.Headers({"content-type": "application/json",
                                       **({"authorization": f"Bearer {key}"} if key else {})})
        self._timeouts = {"connect": cfg.connect_timeout_s, "read": cfg.read_timeout_s,
                          "write": cfg.read_timeout_s, "pool": cfg.request_timeout_s}
        self._ssl = httpx.create_ssl_context()  # shared: loading the CA bundle per connection costs ~70 ms
        self._outcomes: deque[bool] = deque(maxlen=cfg.error_budget.window)
        self._fatal: FatalBackendError | None = None
        self._closed = False
        self.waiting_to_retry = 0  # calls now waiting out a backoff before their next attempt (for the console)
        self._server = None
        if cfg.managed is not None:
            self._server = ManagedServer(cfg, self._secrets)
            self._fields = request_fields(cfg)
            try:
                self._endpoints = [_Endpoint(self._server.start(), server=self._server)]
            except BaseException:
                self._server.stop()  # children of a server that failed to start
                raise
        else:
            self._fields = {"model": cfg.model} if cfg.model else {}
            self._endpoints = [_Endpoint(url) for url in cfg.endpoints]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="xinstruct-openai", daemon=True)
        self._thread.start()
        self._run(self._setup())

    async def _setup(self) -> None:
        self._sem = asyncio.Semaphore(self.cfg.max_concurrency)
        self._watchers = []
        for ep in self._endpoints:
            if ep.server is not None:
                ep.ready = asyncio.Event()
                ep.ready.set()
                self._watchers.append(asyncio.ensure_future(self._watch(ep)))

    def __repr__(self) -> str:  # the key stays out of logs and tracebacks
        where = f"managed={self.cfg.managed.kind}" if self.cfg.managed else f"base_urls={self.cfg.endpoints!r}"
        return f"OpenAIBackend({where}, model={self.cfg.model!r})"

    @property
    def concurrent_calls(self) -> int:
        """Records the stages keep in flight at once (core/work.py), each its own call."""
        return self.cfg.max_concurrency

    @property
    def capabilities(self) -> frozenset[str]:
        # log-likelihoods come from echo + logprobs on /completions (vLLM, llama.cpp's server); a chat model is
        # addressed through /chat/completions, which has no prompt logprobs
        if self.cfg.chat:
            return frozenset({"generate"})
        return frozenset({"generate", "loglikelihood", "option_logprobs"})

    @property
    def model_id(self) -> str:
        return openai_model_id(self.cfg, self.model_name)

    def model_name(self) -> str:
        return self._run(self._model_fields())["model"]

    # -- the synchronous face ------------------------------------------------------------------------------
    def _run(self, coro):
        if self._loop.is_closed() or not self._thread.is_alive():
            coro.close()
            raise FatalBackendError(f"{self!r} is closed: no more calls")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            while True:
                try:
                    return future.result(timeout=0.5)
                except concurrent.futures.TimeoutError:
                    # a call submitted while close() was stopping the loop never runs: wake up, do not wait forever
                    if self._closed and not (self._loop.is_running() and self._thread.is_alive()):
                        raise FatalBackendError(f"{self!r} was closed while a call waited") from None
        except BaseException:
            future.cancel()  # e.g. Ctrl-C in the caller: stop the requests too
            raise

    def generate(self, prompts: list[str], params: SamplingParams) -> list[GenerationResult]:
        return self._run(self._generate(prompts, params))

    def score(self, requests: list[tuple[str, str]]) -> list[Score]:
        return self._run(self._score(requests))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._run(self._shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            if not self._thread.is_alive():
                self._loop.close()
            if self._server is not None:
                self._server.stop()

    async def _shutdown(self) -> None:
        # every call still in flight (a stage that stopped on an error leaves its other records' calls on worker
        # threads): cancelled, so the threads waiting on them wake up instead of waiting on a stopped loop forever
        in_flight = asyncio.all_tasks() - {asyncio.current_task()}
        for task in in_flight:
            task.cancel()
        if in_flight:
            await asyncio.wait(in_flight, timeout=10)
        for ep in self._endpoints:
            for lane in ep.lanes:
                await lane.aclose()
            ep.lanes.clear()
        await self._loop.shutdown_asyncgens()  # streams cut by a cancelled call

    # -- calls -----------------------------------------------------------------------------------------------
    async def _generate(self, prompts: list[str], params: SamplingParams) -> list[GenerationResult]:
        body = {**await self._model_fields(), "temperature": params.temperature, "top_p": params.top_p,
                "max_tokens": params.max_tokens, "n": 1}
        if params.stop:
            body["stop"] = list(params.stop)
        if self.cfg.stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        path = "/chat/completions" if self.cfg.chat else "/completions"
        parse = partial(_completion, self.cfg.chat)
        jobs, calls = [], []
        for i, prompt in enumerate(prompts):
            for k in range(params.n):
                one = {**body, **({"messages": _messages(prompt)} if self.cfg.chat else {"prompt": prompt})}
                if params.seed is not None:
                    one["seed"] = params.seed + k
                jobs.append((i, k))
                calls.append(self._counted(self._call("POST", path, one, parse, self.cfg.stream)))
        results = [GenerationResult(completions=[None] * params.n) for _ in prompts]
        for (i, k), out in zip(jobs, await self._gather(calls)):
            if isinstance(out, _Failed):
                if results[i].error is None:
                    results[i] = GenerationResult(error=str(out))
            elif results[i].error is None:
                results[i].completions[k] = out
        return results

    async def _score(self, requests: list[tuple[str, str]]) -> list[Score]:
        fields = await self._model_fields()
        calls = [self._counted(self._call("POST", "/completions", {
            **fields, "prompt": context + continuation, "max_tokens": 1, "temperature": 0.0, "echo": True,
            "logprobs": 1}, partial(_prompt_score, len(context), len(context + continuation))))
            for context, continuation in requests]
        return [Score(error=str(out)) if isinstance(out, _Failed) else out for out in await self._gather(calls)]

    async def _model_fields(self) -> dict:
        """What requests name: the configured model, a managed server's names, or the first one served."""
        if "model" not in self._fields:
            try:
                self._fields = {"model": await self._call("GET", "/models", None, _first_model)}
            except _Failed as e:
                raise FatalBackendError(f"cannot list the served models: {e}") from None
        return self._fields

    @staticmethod
    async def _gather(calls: list) -> list:
        """Run the calls together; the first FatalBackendError cancels the rest and is raised."""
        tasks = [asyncio.ensure_future(c) for c in calls]
        if not tasks:
            return []
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if task.exception() is not None:
                    raise task.exception()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return [task.result() for task in tasks]

    async def _counted(self, call):
        """One call's result, or its _Failed; every outcome counts toward the error budget."""
        try:
            result = await call
        except _Failed as e:
            self._outcomes.append(False)
            budget = self.cfg.error_budget
            failed = self._outcomes.count(False)
            if failed > budget.max_failed_share * budget.window and self._fatal is None:
                self._fatal = FatalBackendError(self._clean(
                    f"{failed} of the last {len(self._outcomes)} calls failed after their retries (error budget: "
                    f"more than {budget.max_failed_share:.0%} of {budget.window}); last: {e}"))
            if self._fatal is not None:
                raise self._fatal from None
            return e
        self._outcomes.append(True)
        return result

    async def _call(self, method: str, path: str, body: dict | None, parse, stream: bool = False):
        """One request with its retries: parse(answer). Raises _Failed, or FatalBackendError.

        The call keeps its concurrency slot through its retries: a retry waits its backoff rather than the
        whole queue (or a server failing everything gets every queued call's first attempt before any call
        ends and counts against the error budget), and backing off leaves the server room to recover."""
        async with self._sem:
            return await self._retrying(method, path, body, parse, stream)

    async def _retrying(self, method: str, path: str, body: dict | None, parse, stream: bool):
        attempt = timeouts = 0
        while True:
            if self._fatal is not None:
                raise self._fatal
            ep = self._pick()
            try:
                result = await self._attempt(ep, method, path, body, parse, stream)
            except _PerRecord as e:
                ep.fails = 0
                raise _Failed(self._clean(f"{path}: {e}")) from None
            except _Retry as e:
                self._attempt_failed(ep, e)
                timeouts += e.timeout
                if attempt >= self.cfg.max_retries or timeouts > TIMEOUT_RETRIES:
                    raise _Failed(self._clean(f"{path}: {e} (after {attempt + 1} attempts)")) from None
                delay = e.retry_after
                if delay is None:
                    delay = min(self.cfg.max_backoff_s, self.cfg.backoff_s * 2**attempt) * (0.5 + random.random())
                if ep.down_until > time.monotonic() and any(o.down_until <= time.monotonic()
                                                            for o in self._endpoints):
                    delay = 0.0  # another endpoint is up: go there now
                attempt += 1
                log.debug("%s %s%s failed (%s); retry %d in %.2fs", method, ep.url, path,
                          self._clean(str(e)), attempt, delay)
                self.waiting_to_retry += 1
                try:
                    await asyncio.sleep(delay)
                finally:
                    self.waiting_to_retry -= 1
            else:
                ep.fails = 0
                return result

    def _pick(self) -> _Endpoint:
        """The least busy endpoint not cooling down; if all are, the one back soonest (retries pace it)."""
        now = time.monotonic()
        up = [ep for ep in self._endpoints if ep.down_until <= now]
        if up:
            return min(up, key=lambda ep: ep.in_flight)
        return min(self._endpoints, key=lambda ep: ep.down_until)

    def _attempt_failed(self, ep: _Endpoint, e: _Retry) -> None:
        ep.fails += 1
        now = time.monotonic()
        if len(self._endpoints) > 1 and ep.down_until <= now and (e.unreachable or ep.fails >= FAILS_BEFORE_COOLDOWN):
            ep.down_until = now + self.cfg.endpoint_cooldown_s
            log.warning("%s: %s; skipped for %g s", ep.url, self._clean(str(e)), self.cfg.endpoint_cooldown_s)
        if ep.server is not None and not ep.server.alive():
            self._restart_soon(ep)

    async def _attempt(self, ep: _Endpoint, method: str, path: str, body: dict | None, parse, stream: bool):
        ep.in_flight += 1  # at once: the calls picking next see it
        lane, broken = None, True  # a connection cut mid-answer is not reused: the next request gets a fresh one
        try:
            if ep.server is not None:
                await self._server_ready(ep)
            lane = ep.lanes.pop() if ep.lanes else httpx.AsyncHTTPTransport(
                verify=self._ssl, limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))
            result = await _within(self.cfg.request_timeout_s,
                                   self._exchange(lane, method, ep.target(path), body, parse, stream))
            broken = False
            return result
        except asyncio.TimeoutError:
            raise _Retry(f"no whole answer within request_timeout_s={self.cfg.request_timeout_s:g}",
                         timeout=True) from None
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            raise _Retry(f"cannot connect ({type(e).__name__})", unreachable=True) from None
        except httpx.TimeoutException as e:
            raise _Retry(f"{type(e).__name__} (read_timeout_s={self.cfg.read_timeout_s:g})", timeout=True) from None
        except httpx.TransportError as e:  # reset, closed mid-answer, broken HTTP
            raise _Retry(f"{type(e).__name__}: {e}") from None
        except _Schema as e:
            raise FatalBackendError(self._clean(f"{ep.url}{path}: the answer breaks the OpenAI API schema: {e}")
                                    ) from None
        except (_Retry, _PerRecord):  # an HTTP error status or a cut stream, read to its end
            broken = False
            raise
        finally:
            ep.in_flight -= 1
            if lane is not None and broken:
                await lane.aclose()
            elif lane is not None:
                ep.lanes.append(lane)

    async def _exchange(self, lane, method: str, url: httpx.URL, body: dict | None, parse, stream: bool):
        request = httpx.Request(method, url, headers=self._headers,
                                content=None if body is None else orjson.dumps(body),
                                extensions={"timeout": self._timeouts})
        response = await lane.handle_async_request(request)
        try:
            if response.status_code >= 400:
                await response.aread()
                raise self._status_error(response, url)
            if stream and response.headers.get("content-type", "").startswith("text/event-stream"):
                return parse(await _read_events(response))
            return parse(_json_object(await response.aread(), "the body"))
        finally:
            await response.aclose()

    def _status_error(self, response: httpx.Response, url: str) -> Exception:
        code = response.status_code
        message = f"HTTP {code}: {clean_error(response.content.decode('utf-8', 'replace'), self._secrets, 200)}"
        if code in FATAL_STATUS:
            hint = FATAL_STATUS[code].replace("${env}", f"${self.cfg.api_key_env}")
            return FatalBackendError(self._clean(f"{url}: {message} ({hint})"))
        if code in RETRY_STATUS or code >= 500:
            return _Retry(message, retry_after=_retry_after(response))
        return _PerRecord(message)

    def _clean(self, text: str) -> str:
        return clean_error(text, self._secrets)

    # -- managed server --------------------------------------------------------------------------------------
    async def _watch(self, ep: _Endpoint) -> None:
        while True:
            await asyncio.sleep(0.2)
            if not ep.server.alive():
                self._restart_soon(ep)

    def _restart_soon(self, ep: _Endpoint) -> None:
        if ep.restart is None and ep.fatal is None and not self._closed:
            ep.ready.clear()  # requests wait for the new server instead of spending their retries
            ep.restart = asyncio.ensure_future(self._restart(ep))

    async def _restart(self, ep: _Endpoint) -> None:
        server, limit = ep.server, self.cfg.managed.max_restarts
        try:
            code = server.proc.poll() if server.proc else None
            if server.starts > limit:
                raise FatalBackendError(f"the managed {server.kind} server died {server.starts} times "
                                        f"(max_restarts: {limit}); last output: {server.tail()}")
            log.warning("the managed %s server died (exit code %s): restarting it (%d of at most %d)",
                        server.kind, code, server.starts, limit)
            await asyncio.to_thread(server.stop)  # reap what is left of its process group
            ep.url = await asyncio.to_thread(server.start)
            for lane in ep.lanes:
                await lane.aclose()
            ep.lanes.clear()
        except FatalBackendError as e:
            ep.fatal = e
        finally:
            ep.restart = None
            ep.ready.set()

    async def _server_ready(self, ep: _Endpoint) -> None:
        if not ep.ready.is_set():
            try:
                await asyncio.wait_for(ep.ready.wait(), self.cfg.managed.startup_timeout_s + 30)
            except asyncio.TimeoutError:
                raise FatalBackendError(f"the managed {ep.server.kind} server did not come back") from None
        if ep.fatal is not None:
            raise ep.fatal


async def _within(seconds: float, coro):
    """`await coro` with a deadline; asyncio.timeout (3.11+) spares the task that wait_for makes per request."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await coro
    return await asyncio.wait_for(coro, seconds)


# -- answers ---------------------------------------------------------------------------------------------------
def _json_object(raw: bytes | str, what: str) -> dict:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _Schema(f"{what} is not JSON: {raw[:120]!r}") from None
    if not isinstance(data, dict):
        raise _Schema(f"{what} is a JSON {type(data).__name__}, not an object")
    return data


def _choice(data: dict) -> dict:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise _Schema("no choices")
    if not isinstance(choices[0], dict):
        raise _Schema("a choice is not an object")
    return choices[0]


async def _read_events(response: httpx.Response) -> dict:
    """A streamed answer (server-sent events) gathered into the shape of a whole one."""
    pieces, finish, usage, done = [], None, None, False
    async for line in _lines(response):  # read to the end even after [DONE]: else the connection is dropped
        if done or not line.startswith(b"data:"):
            continue  # blank lines, comments (": ping"), event/id fields
        data = line[5:].strip()
        if data == b"[DONE]":
            done = True
            continue
        event = _json_object(data, "a stream event")
        if event.get("error"):
            raise _Retry(f"error event: {event['error']}")
        choices = event.get("choices")
        if not isinstance(choices, list):
            raise _Schema("a stream event without choices")
        for c in choices:
            if not isinstance(c, dict):
                raise _Schema("a choice is not an object")
            piece = c["text"] if "text" in c else (c.get("delta") or {}).get("content")
            if piece:
                pieces.append(piece)
            finish = c.get("finish_reason") or finish
        usage = event.get("usage") or usage
    if finish is None:
        raise _Retry("the stream ended before its finish_reason (the server cut it)")
    if finish == "abort":  # vLLM aborted it (e.g. shutting down)
        raise _Retry("the server aborted the request")
    text = "".join(pieces)
    return {"choices": [{"text": text, "message": {"content": text}, "finish_reason": finish}],
            "usage": usage or {"completion_tokens": len(pieces)}}


async def _lines(response: httpx.Response):
    """The body's lines as bytes (SSE is UTF-8 and JSON parses bytes: no text decoding on the way)."""
    rest = b""
    async for chunk in response.aiter_bytes():
        *lines, rest = (rest + chunk).split(b"\n")
        for line in lines:
            yield line
    if rest:
        yield rest


def _messages(prompt: str | list[dict]) -> list[dict]:
    """A chat request's messages: a text prompt is one user message; a conversation (a list of role/content
    messages, e.g. an evaluation's later turns) is sent as it is."""
    return prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]


def _completion(chat: bool, data: dict) -> Completion:
    choice = _choice(data)
    if chat:
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else None
    else:
        text = choice.get("text")
    if text is not None and not isinstance(text, str):
        raise _Schema("the completion's text is not a string")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return Completion(text=text or "", finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
                      n_tokens=int(usage.get("completion_tokens") or 0))


def _prompt_score(start: int, end: int, data: dict) -> Score:
    """log p(prompt[start:end] | prompt[:start]) from echoed prompt logprobs: the tokens whose text offset
    falls in [start, end) (vLLM and llama-cpp-python's server both give character offsets into the echo; the
    one generated token lies at `end` or beyond)."""
    logprobs = _choice(data).get("logprobs")
    offsets = logprobs.get("text_offset") if isinstance(logprobs, dict) else None
    values = logprobs.get("token_logprobs") if isinstance(logprobs, dict) else None
    if not isinstance(offsets, list) or not isinstance(values, list) or len(offsets) != len(values):
        raise _Schema("no prompt logprobs (the server does not support echo with logprobs on /completions)")
    picked = [(off - start, float(v)) for off, v in zip(offsets, values) if start <= off < end and v is not None]
    if end > start and not picked:
        raise _PerRecord("no token of the continuation starts after the context (they share a token)")
    return Score(float(sum(v for _, v in picked)), len(picked), [v for _, v in picked], [o for o, _ in picked])


def _first_model(data: dict) -> str:
    models = data.get("data")
    if not isinstance(models, list):
        raise _Schema("/models has no data list")
    if not models or not isinstance(models[0], dict) or not models[0].get("id"):
        raise _Schema("/models lists no model")
    return models[0]["id"]


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return min(60.0, max(0.0, float(response.headers["retry-after"])))
    except (KeyError, ValueError):
        return None
