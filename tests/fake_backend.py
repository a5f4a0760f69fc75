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


class FakeJudge(Backend):
    """A stand-in judge for refinement orchestration: "Score: <grade>" from a hash of the prompt; every
    FAKE_GARBAGE_EVERY-th answer has no score and every FAKE_FAIL_EVERY-th call fails like a dead server.
    FAKE_LOG names a file that gets one line per graded prompt, to count work across runs."""

    name = "fake-judge"

    def __init__(self, cfg=None):
        self.delay = float(os.environ.get("FAKE_DELAY", "0"))
        self.fail_every = int(os.environ.get("FAKE_FAIL_EVERY", "0"))
        self.garbage_every = int(os.environ.get("FAKE_GARBAGE_EVERY", "0"))
        self.log = os.environ.get("FAKE_LOG")
        self.calls = 0

    def generate(self, prompts, params):
        time.sleep(self.delay)
        out = []
        for p in prompts:
            self.calls += 1
            if self.log:
                with open(self.log, "a") as f:
                    f.write(f"{zlib.crc32(p.encode())}\n")
            if self.fail_every and self.calls % self.fail_every == 0:
                out.append(GenerationResult(error="HTTP 503: overloaded"))
                continue
            h = zlib.crc32(p.encode())
            if self.garbage_every and h % self.garbage_every == 0:
                text = "The answer seems to be about something, I cannot tell."
            else:
                text = f"The answer matches in part.\nScore: {('best', 'flawed', 'worst')[h % 3]}"
            out.append(GenerationResult(completions=[Completion(text, "stop", 12)]))
        return out
