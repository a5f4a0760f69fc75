"""A deterministic stand-in model, for orchestration tests only (resume, error handling). Never a default."""

import os
import re
import time
import zlib

from xinstruct.models.base import Backend, Completion, GenerationResult

WORDS = ["Describe", "Explain", "Summarise", "Write about", "Tell me about", "Give an overview of"]


class FakeBackend(Backend):
    """Instruction-like completions from a hash of the prompt. Every FAKE_FAIL_EVERY-th prompt fails like a
    dead server; FAKE_DELAY slows each call; FAKE_LOG names a file that gets one line per prompt seen, to
    count work across runs."""

    name = "fake"

    def __init__(self, cfg=None):
        self.delay = float(os.environ.get("FAKE_DELAY", "0"))
        self.fail_every = int(os.environ.get("FAKE_FAIL_EVERY", "0"))
        self.log = os.environ.get("FAKE_LOG")
        self.calls = 0

    def fails(self, text: str) -> bool:
        """Count one request (logged to FAKE_LOG) and say whether it is one FAKE_FAIL_EVERY makes fail."""
        self.calls += 1
        if self.log:
            with open(self.log, "a") as f:
                f.write(f"{zlib.crc32(text.encode())}\n")
        return bool(self.fail_every) and self.calls % self.fail_every == 0

    def generate(self, prompts, params):
        time.sleep(self.delay)
        return [GenerationResult(error="HTTP 503: overloaded") if self.fails(p)
                else GenerationResult(completions=self.answer(zlib.crc32(p.encode()), params)) for p in prompts]

    def answer(self, h, params):
        return [Completion(f" {WORDS[(h + k) % len(WORDS)]} the topic of document {_letters(h % 100000)} "
                           f"in a short paragraph.", "stop", 12) for k in range(params.n)]


def _letters(n: int) -> str:
    """A number as a lowercase word (qbd...): unique per document like the number, but no digits for the text
    to lack (generate.require_support) and no capital for a name."""
    out = ""
    while True:
        out = "abcdefghijklmnopqrstuvwxyz"[n % 26] + out
        n //= 26
        if not n:
            return out


class FakeJudge(FakeBackend):
    """A stand-in judge for refinement orchestration: "Score: <grade>" from a hash of the prompt, and every
    prompt whose hash is a multiple of FAKE_GARBAGE_EVERY gets an answer with no score."""

    name = "fake-judge"

    def __init__(self, cfg=None):
        super().__init__(cfg)
        self.garbage_every = int(os.environ.get("FAKE_GARBAGE_EVERY", "0"))

    def answer(self, h, params):
        if self.garbage_every and h % self.garbage_every == 0:
            text = "The answer seems to be about something, I cannot tell."
        else:
            text = f"The answer matches in part.\nScore: {('best', 'flawed', 'worst')[h % 3]}"
        return [Completion(text, "stop", 12)]


class FakePositionBiasedJudge(FakeJudge):
    """A pairwise judge that always prefers whichever answer it sees first (scores 8 and 3), the bias the
    both-orders protocol exists to cancel; prompts whose hash is a multiple of FAKE_GARBAGE_EVERY get no scores."""

    name = "fake-pair-judge"

    def answer(self, h, params):
        if self.garbage_every and h % self.garbage_every == 0:
            return [Completion("N</score1><score2>N</score2>", "stop", 8)]
        return [Completion("8</score1><score2>3</score2> The first answer is better.", "stop", 12)]

    def generate(self, prompts, params):
        """Single-answer grading prompts (they end with "Rating: [["): a grade of 1-10 from a hash of the
        prompt, or garbage as above."""
        out = []
        for result, prompt in zip(super().generate(prompts, params), prompts):
            if prompt.endswith("[[") and not result.error:
                h = zlib.crc32(prompt.encode())
                text = "N/A]]" if self.garbage_every and h % self.garbage_every == 0 else f"{h % 10 + 1}]] Fair."
                result = GenerationResult(completions=[Completion(text, "stop", 4)])
            out.append(result)
        return out


class FakeScorer(FakeBackend):
    """A stand-in that scores log-likelihoods: each continuation word costs 3 nats, 1 if the context contains
    it. So an instruction whose words appear in the text has a high PMI, as with a real model, and orchestration
    tests of the likelihood grader run in milliseconds. FAKE_FAIL_EVERY fails every n-th request."""

    name = "fake-scorer"
    capabilities = frozenset({"generate", "loglikelihood"})

    @property
    def model_id(self) -> str:
        return "fake-scorer"

    def score(self, requests):
        from xinstruct.models.base import Score

        time.sleep(self.delay)
        out = []
        for context, continuation in requests:
            if self.fails(context + continuation):
                out.append(Score(error="HTTP 503: overloaded"))
                continue
            seen = set(context.lower().split())
            words = [(m.start(), m.group().strip().lower()) for m in re.finditer(r"\s*\S+", continuation)]
            values = [-1.0 if w in seen else -3.0 for _, w in words]
            out.append(Score(sum(values), max(1, len(words)), values, [o for o, _ in words]))
        return out


class PromptRecorder(FakeBackend):
    """The fake generator, writing every prompt it is sent to FAKE_PROMPTS (one JSON string a line)."""

    def generate(self, prompts, params):
        import json

        with open(os.environ["FAKE_PROMPTS"], "a", encoding="utf-8") as f:
            f.writelines(json.dumps(p) + "\n" for p in prompts)
        return super().generate(prompts, params)
