"""A deterministic stand-in model, for orchestration tests only (resume, error handling). Never a default."""

import os
import time
import zlib

from xinstruct.models.base import Backend, Completion, GenerationResult

WORDS = ["Describe", "Explain", "Summarise", "Write about", "Tell me about", "Give an overview of"]


class FakeBackend(Backend):
    name = "fake"

    def __init__(self, cfg=None):
        self.delay = float(os.environ.get("FAKE_DELAY", "0"))
        self.fail_every = int(os.environ.get("FAKE_FAIL_EVERY", "0"))
        self.calls = 0

    def generate(self, prompts, params):
        time.sleep(self.delay)
        out = []
        for p in prompts:
            self.calls += 1
            if self.fail_every and self.calls % self.fail_every == 0:
                out.append(GenerationResult(error="HTTP 503: overloaded"))
                continue
            h = zlib.crc32(p.encode())
            comps = [Completion(f" {WORDS[(h + k) % len(WORDS)]} the topic of document number {h % 100000} "
                                f"in a short paragraph.", "stop", 12) for k in range(params.n)]
            out.append(GenerationResult(completions=comps))
        return out
