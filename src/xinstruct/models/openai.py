"""Any OpenAI-compatible server: vLLM, SGLang, Ollama, llama.cpp's server, hosted APIs.

One request per (prompt, sample): every server supports it, and vLLM/SGLang batch concurrent requests and
share the prompt prefix anyway. Transient failures (429, 5xx, timeouts, refused connections) are retried with
exponential backoff and jitter, honouring Retry-After; what still fails is returned as an error, not raised.
"""

from __future__ import annotations

import logging
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from xinstruct.config import ModelConfig
from xinstruct.models.base import Backend, BackendError, Completion, GenerationResult, SamplingParams, Score

log = logging.getLogger(__name__)
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class OpenAIBackend(Backend):
    name = "openai"
    # loglikelihood through echo + logprobs on /completions (vLLM, llama.cpp's server); not on chat endpoints
    capabilities = frozenset({"generate", "loglikelihood", "option_logprobs"})

    def __init__(self, cfg: ModelConfig):
        self.cfg = cfg
        key = os.environ.get(cfg.api_key_env, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(base_url=cfg.base_url.rstrip("/"), headers=headers,
                                    timeout=httpx.Timeout(cfg.read_timeout_s, connect=cfg.connect_timeout_s),
                                    limits=httpx.Limits(max_connections=cfg.max_concurrency))
        self._pool = ThreadPoolExecutor(max_workers=cfg.max_concurrency)
        self._model = cfg.model

    def __repr__(self) -> str:  # the key stays out of logs and tracebacks
        return f"OpenAIBackend(base_url={self.cfg.base_url!r}, model={self._model!r})"

    @property
    def model_id(self) -> str:
        return f"openai:{self.model_name()}"

    def model_name(self) -> str:
        if self._model is None:
            models = self._request("GET", "/models")["data"]
            if not models:
                raise BackendError(f"{self.cfg.base_url} serves no model")
            self._model = models[0]["id"]
        return self._model

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        last = ""
        for attempt in range(self.cfg.max_retries + 1):
            try:
                resp = self._client.request(method, path, json=body)
            except (httpx.TimeoutException, httpx.TransportError) as e:
                last, wait = f"{type(e).__name__}: {e}", None
            else:
                if resp.status_code < 400:
                    return resp.json()
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                if resp.status_code not in RETRY_STATUS:
                    raise BackendError(last)
                wait = _retry_after(resp)
            if attempt == self.cfg.max_retries:
                break
            delay = wait if wait is not None else min(30.0, 0.5 * 2**attempt) * (0.5 + random.random())
            log.warning("%s %s failed (%s); retry %d in %.1fs", method, path, last, attempt + 1, delay)
            time.sleep(delay)
        raise BackendError(f"{method} {path} failed after {self.cfg.max_retries} retries: {last}")

    def _one(self, prompt: str, params: SamplingParams, sample: int) -> Completion:
        body = {"model": self.model_name(), "temperature": params.temperature, "top_p": params.top_p,
                "max_tokens": params.max_tokens, "n": 1}
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed + sample
        if self.cfg.chat:
            data = self._request("POST", "/chat/completions",
                                 {**body, "messages": [{"role": "user", "content": prompt}]})
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
        else:
            data = self._request("POST", "/completions", {**body, "prompt": prompt})
            choice = data["choices"][0]
            text = choice.get("text") or ""
        usage = data.get("usage") or {}
        return Completion(text=text, finish_reason=choice.get("finish_reason") or "stop",
                          n_tokens=int(usage.get("completion_tokens") or 0))

    def generate(self, prompts: list[str], params: SamplingParams) -> list[GenerationResult]:
        jobs = [[self._pool.submit(self._one, p, params, k) for k in range(params.n)] for p in prompts]
        results = []
        for futures in jobs:
            try:
                results.append(GenerationResult(completions=[f.result() for f in futures]))
            except (BackendError, KeyError, IndexError, ValueError) as e:
                results.append(GenerationResult(error=f"{type(e).__name__}: {e}"))
        return results

    def _score(self, context: str, continuation: str) -> Score:
        data = self._request("POST", "/completions", {
            "model": self.model_name(), "prompt": context + continuation, "max_tokens": 1,
            "temperature": 0.0, "echo": True, "logprobs": 1})
        lp = data["choices"][0].get("logprobs") or {}
        offsets, values = lp.get("text_offset"), lp.get("token_logprobs")
        if not offsets or not values:
            raise BackendError("server returned no prompt logprobs (echo+logprobs unsupported?)")
        n_prompt = len(offsets) - 1  # the last token is the generated one
        values = [v for off, v in zip(offsets[:n_prompt], values[:n_prompt]) if off >= len(context) and v is not None]
        return Score(float(sum(values)), len(values))

    def _score_or_error(self, context: str, continuation: str) -> Score:
        try:
            return self._score(context, continuation)
        except (BackendError, KeyError, IndexError, ValueError) as e:
            return Score(error=f"{type(e).__name__}: {e}")

    def score(self, requests: list[tuple[str, str]]) -> list[Score]:
        return list(self._pool.map(lambda r: self._score_or_error(*r), requests))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()


def _retry_after(resp: httpx.Response) -> float | None:
    try:
        return min(60.0, float(resp.headers["retry-after"]))
    except (KeyError, ValueError):
        return None
