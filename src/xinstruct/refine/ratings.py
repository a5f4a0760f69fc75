"""The synthetic rating set that teaches the evaluator its three grades, built from seed pairs alone.

Every seed pair yields one example of each grade, so the classes stay balanced:
- best: the pair as it is (an English instruction and the target-language text that answers it);
- flawed: the pair degraded so that the answer fits only in part, one of
    `truncated`   the answer cut to its first ~35% at a sentence (or word) boundary: an incomplete answer;
    `compound`    the instruction followed by a second request, taken from another pair of the same language,
                  that the answer does not address: an instruction answerable only in part;
    `spliced`     the first half of the answer followed by the second half of another pair's answer: a reply
                  that starts on the point and drifts off it;
- worst: `mismatched`, the instruction of another pair of the same language: the answer ignores the request.

Degradations are picked per pair by a seeded RNG; `split` carries over from the seed pair, so the held-out
seed pairs give a held-out rating set. `Grade` is what an evaluator gives a pair (refine/evaluator.py,
refine/grader.py).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

GRADES = ("best", "flawed", "worst")
FLAWED_KINDS = ("truncated", "compound", "spliced")


@dataclass
class Grade:
    grade: str | None = None
    probs: dict[str, float] | None = None  # None where the backend gives no log-probabilities
    error: str | None = None  # "backend_error: ...", "parse_failure", ...
    reason: str | None = None  # the judge's stated reason, or its unparsable text
    features: dict[str, float] | None = None  # the likelihood evaluator's evidence, so a label says why

    @property
    def confidence(self) -> float | None:
        return self.probs[self.grade] if self.probs and self.grade else None


_SENTENCE_END = re.compile(r"(?<=[.!?।॥۔。])\s+|(?<=[\u0E00-\u0E7F])\s+")


def truncate_answer(text: str, share: float = 0.35) -> str:
    """The first `share` of the text, ending at the last sentence (else word) boundary before the cut."""
    cut = max(1, int(len(text) * share))
    ends = [m.start() for m in _SENTENCE_END.finditer(text) if 0 < m.start() <= cut]
    if ends:
        return text[:ends[-1]].strip()
    space = text.rfind(" ", 0, cut)
    return text[:space if space > 0 else cut].strip()


def compound_instruction(instruction: str, other: str) -> str:
    """Append a second, unrelated request the answer does not cover."""
    other = other.strip().rstrip(".?!")
    return f"{instruction.strip()} Also, {other[:1].lower()}{other[1:]}."


def splice_answers(text: str, other: str) -> str:
    half = truncate_answer(text, 0.5)
    tail = other[len(other) // 2:]
    space = tail.find(" ")
    return f"{half} {tail[space + 1:] if 0 <= space < 40 else tail}".strip()


def degrade(pair: dict, other: dict, kind: str) -> tuple[str, str]:
    """(instruction, response) of the flawed version of `pair`; `other` is another pair, same language."""
    if kind == "truncated":
        return pair["instruction"], truncate_answer(pair["output"])
    if kind == "compound":
        return compound_instruction(pair["instruction"], other["instruction"]), pair["output"]
    if kind == "spliced":
        return pair["instruction"], splice_answers(pair["output"], other["output"])
    raise ValueError(f"unknown degradation {kind!r}: use one of {FLAWED_KINDS}")


def rating_set(pairs: list[dict], kinds: tuple[str, ...] = FLAWED_KINDS, seed: int = 0) -> list[dict]:
    """Three graded examples per seed pair: best, flawed (one of `kinds`), worst (mismatched)."""
    rng = random.Random(seed)
    by_lang: dict[str, list[dict]] = {}
    for p in pairs:
        by_lang.setdefault(p["lang"], []).append(p)
    rows = []
    for lang, group in sorted(by_lang.items()):
        if len(group) < 2:
            continue  # no other pair to mismatch with
        for i, pair in enumerate(group):
            other = group[(i + rng.randrange(1, len(group))) % len(group)]
            kind = rng.choice(kinds)
            flawed_instruction, flawed_response = degrade(pair, other, kind)
            base = {"seed_id": pair["id"], "lang": lang, "split": pair.get("split", "train")}
            rows += [
                {**base, "grade": "best", "kind": "true", "instruction": pair["instruction"],
                 "output": pair["output"]},
                {**base, "grade": "flawed", "kind": kind, "instruction": flawed_instruction,
                 "output": flawed_response},
                {**base, "grade": "worst", "kind": "mismatched", "instruction": other["instruction"],
                 "output": pair["output"]},
            ]
    return rows
