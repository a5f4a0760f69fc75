"""The one small interface every model backend implements."""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xinstruct.config import ModelConfig


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.7
    top_p: float = 0.9
    max_tokens: int = 128
    n: int = 1  # completions per prompt
    stop: tuple[str, ...] = ()
    seed: int | None = None
    grammar: str | None = None  # GBNF the output must match: llama.cpp constrains decoding; others ignore it


@dataclass(frozen=True)
class Sources:
    """Which candidates to draw for each prompt, in this order: `sampled.n` samples, one greedy text, one PMI-guided
    greedy text for each α in `guided`. Guided decoding picks, among tokens with p ≥ `plausibility` × the most
    likely token's p (after the prompt), the one maximising (1+α)·log p(y | prompt) − α·log p(y | `unconditional`):
    what the prompt's text adds, not what any text makes likely (the prompt without its text)."""

    sampled: SamplingParams
    greedy: bool = False
    guided: tuple[float, ...] = ()
    plausibility: float = 0.1
    unconditional: str = ""

    def labels(self) -> list[str]:
        return (["sample"] * self.sampled.n + (["greedy"] if self.greedy else [])
                + [f"guided:{a:g}" for a in self.guided])


@dataclass
class Completion:
    text: str
    finish_reason: str = "stop"  # "stop" (EOS or stop string) | "length"
    n_tokens: int = 0


@dataclass
class GenerationResult:
    """The n completions for one prompt, or the error that prevented them (never both)."""

    completions: list[Completion] = field(default_factory=list)
    error: str | None = None


@dataclass
class Score:
    """log p(continuation | context) summed over the continuation's tokens, and how many tokens that was;
    or the error that prevented scoring. Where the backend knows them, each token's log-probability and the
    character where it starts in the continuation (so a part of the continuation can be scored from them)."""

    logprob: float | None = None
    n_tokens: int = 0
    token_logprobs: list[float] | None = None
    token_offsets: list[int] | None = None
    error: str | None = None


@dataclass
class OptionScores:
    """log p(option | prompt) for each option of one prompt, or the error that prevented scoring."""

    logprobs: list[float] | None = None
    error: str | None = None


class BackendError(RuntimeError):
    """A model call failed after its retries: the record it was for is tried again on the next run."""


class FatalBackendError(BackendError):
    """The backend cannot work at all (rejected key, unknown model, answers that break the API's schema,
    error budget spent): the stage stops at once rather than marking every record failed. Never caught into a
    per-record error."""


class MissingCapability(RuntimeError):
    """A stage needs something the configured backend does not do (e.g. score log-likelihoods)."""


class Backend:
    """generate(): batched sampling. score(): log p(continuation | context), where supported.

    Backends batch internally; callers hand over as many prompts as they like. A failure of one prompt
    is reported in its GenerationResult.error (or Score.error) so the others are kept.
    `capabilities` says what a backend does beyond generate(); stages check it before they start.
    """

    name: str = "backend"
    capabilities: frozenset[str] = frozenset({"generate"})

    @property
    def model_id(self) -> str:
        """A stable id for provenance: model + adapter."""
        return self.name

    def generate(self, prompts: list[str], params: SamplingParams) -> list[GenerationResult]:
        raise NotImplementedError

    def generate_candidates(self, prompts: list[str], sources: Sources) -> list[GenerationResult]:
        """Completions in the order of `sources.labels()`. This default samples and decodes greedily with
        generate(); PMI-guided decoding needs a backend that implements it (llama.cpp)."""
        if sources.guided:
            raise MissingCapability(
                f"PMI-guided decoding (generate.guided) needs the next-token log-probabilities of the prompt with "
                f"and without its text at every step; the {self.name} backend does not give them: use the llamacpp "
                "backend, or drop generate.guided (greedy and sampled candidates work on every backend)")
        parts = []
        if sources.sampled.n:
            parts.append(self.generate(prompts, sources.sampled))
        if sources.greedy:
            parts.append(self.generate(prompts, replace(sources.sampled, temperature=0.0, n=1)))
        out = []
        for i in range(len(prompts)):
            errors = [p[i].error for p in parts if p[i].error]
            out.append(GenerationResult(error=errors[0]) if errors else
                       GenerationResult([c for p in parts for c in p[i].completions]))
        return out

    def score(self, requests: list[tuple[str, str]]) -> list[Score]:
        """For each (context, continuation): log p(continuation | context) and its token count."""
        raise MissingCapability(f"the {self.name} backend does not score log-likelihoods")

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[float]:
        """Sums of log p(continuation | context); raises BackendError if any request failed."""
        out = []
        for s in self.score(requests):
            if s.error:
                raise BackendError(s.error)
            out.append(s.logprob)
        return out

    def option_logprobs(self, prompts: list[str], options: tuple[str, ...]) -> list[OptionScores]:
        """log p(option | prompt) for a fixed set of options (e.g. grade labels) after each prompt.

        This default asks loglikelihood() once per option; llama.cpp overrides it with one batched
        forward pass per prompt when every option is a single token.
        """
        out = []
        for prompt in prompts:
            try:
                out.append(OptionScores(self.loglikelihood([(prompt, o) for o in options])))
            except FatalBackendError:
                raise
            except (BackendError, ValueError) as e:
                out.append(OptionScores(error=f"{type(e).__name__}: {e}"))
        return out

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def truncate_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """Cut `text` at the earliest stop string after its leading whitespace; report whether one was found.

    Base models often open with a newline; a blank-line stop must not end the answer before it starts.
    """
    text = text.lstrip()
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def clean_error(text: str, secrets: tuple[str, ...] = (), limit: int = 300) -> str:
    """Error text fit to store or print: one line, at most `limit` characters, with the configured key and
    anything shaped like a bearer token or an `sk-` key blanked (a server may echo them in its error body)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _BEARER.sub("Bearer ***", text)
    text = _SK_KEY.sub("***", text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=\-]+")
_SK_KEY = re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}")


def _scores(backend: Backend) -> bool:
    return type(backend).score is not Backend.score


def require(backend: Backend, capability: str, purpose: str) -> None:
    """Fail before any work starts when `backend` lacks what `purpose` needs: a backend that declares
    log-likelihoods but never implemented score() (a plugin) counts as lacking them."""
    declared = capability in backend.capabilities
    if capability == "loglikelihood":
        declared = declared and _scores(backend)
    elif capability == "option_logprobs":
        declared = declared and (_scores(backend) or type(backend).option_logprobs is not Backend.option_logprobs)
    if not declared:
        raise MissingCapability(f"{purpose} needs a backend that can {capability.replace('_', ' ')}; "
                                f"{backend.name} cannot (use llamacpp, transformers, or openai against a server "
                                "that returns prompt logprobs, e.g. vLLM or llama.cpp's server)")


# The built-in backends, by name, as `module:Class` like a plugin: the backends import this module, so it names
# them rather than importing them (and only the one a config asks for is loaded, with its heavy dependencies).
BACKENDS = {"llamacpp": "xinstruct.models.llamacpp:LlamaCppBackend",
            "openai": "xinstruct.models.openai:OpenAIBackend",
            "transformers": "xinstruct.models.transformers:TransformersBackend"}


def load_backend(cfg: ModelConfig) -> Backend:
    """Build the backend a ModelConfig names; `module.path:Class` plugs in a backend of your own."""
    if cfg.backend in BACKENDS:
        module, _, cls = BACKENDS[cfg.backend].partition(":")
        return getattr(importlib.import_module(module), cls)(cfg)
    if ":" in cfg.backend:
        module, _, cls = cfg.backend.partition(":")
        try:
            factory = getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"backend {cfg.backend}: cannot load it ({e})") from None
        return factory(cfg)
    raise ValueError(f"unknown backend {cfg.backend!r}: use llamacpp, openai, transformers or module:Class")
