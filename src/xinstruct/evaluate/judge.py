"""The judges' verdicts. Pairwise (the paper's): parse "<score1>N</score1><score2>N</score2>", ask both orders, and
count a win only when both orders agree. Single-answer (MT-Bench's): one "[[N]]" grade, 1-10. Anything unparseable
is a failure with its reason, never a score."""

from __future__ import annotations

import re
from dataclasses import dataclass

from xinstruct.prompts import GRADE_PREFILL, JUDGE_PREFILL

_TAG = {i: re.compile(rf"<score{i}>(.*?)</score{i}>", re.DOTALL | re.IGNORECASE) for i in (1, 2)}
_INT = re.compile(r"[+-]?\d+")


class JudgeParseError(ValueError):
    """The judge's output holds no valid pair of scores; the message is the reason."""


def _score(text: str, i: int) -> int:
    found = _TAG[i].findall(text)
    if not found:
        raise JudgeParseError(f"missing <score{i}>")
    values = {v.strip() for v in found}
    if len(values) > 1:
        raise JudgeParseError(f"conflicting <score{i}> values {sorted(values)}")
    value = values.pop()
    if not _INT.fullmatch(value):
        raise JudgeParseError(f"<score{i}> is not an integer: {value[:20]!r}")
    score = int(value)
    if not 0 <= score <= 10:
        raise JudgeParseError(f"<score{i}> out of range 0-10: {score}")
    return score


def parse_scores(output: str, prefilled: bool = True) -> tuple[int, int]:
    """(score of answer 1, score of answer 2) from the judge's output. The prompt ends with "<score1>", so a
    completion that does not repeat the tag is read as its continuation."""
    text = output if (not prefilled or "<score1>" in output.lower()) else JUDGE_PREFILL + output
    return _score(text, 1), _score(text, 2)


_RATING = re.compile(r"\[\[\s*([^\[\]]*?)\s*\]\]")
_NUMBER = re.compile(r"\d+(\.\d+)?")


def parse_rating(output: str, prefilled: bool = True) -> float:
    """The single-answer grade, 1-10, from "[[N]]" in the judge's output (MT-Bench's format). The prompt ends with
    "[[", so a completion that does not start with it is read as its continuation. One grade or none: two different
    grades, a grade out of range or no grade is a JudgeParseError, never a guess."""
    text = output if (not prefilled or output.lstrip().startswith(GRADE_PREFILL)) else GRADE_PREFILL + output
    found = {v for v in _RATING.findall(text)}
    if not found:
        raise JudgeParseError("missing [[rating]]")
    if len(found) > 1:
        raise JudgeParseError(f"conflicting ratings {sorted(found)}")
    value = found.pop()
    if not _NUMBER.fullmatch(value):
        raise JudgeParseError(f"rating is not a number: {value[:20]!r}")
    rating = float(value)
    if not 1 <= rating <= 10:
        raise JudgeParseError(f"rating out of range 1-10: {value}")
    return rating


def preference(scores: tuple[int, int] | None) -> int | None:
    """+1 answer 1 better, -1 answer 2 better, 0 equal, None: no valid judgement."""
    if scores is None:
        return None
    return (scores[0] > scores[1]) - (scores[0] < scores[1])


def verdict(focus_first: tuple[int, int] | None, focus_second: tuple[int, int] | None) -> str:
    """The focus system's result over both orders: win/loss only when both orders agree, else tie;
    "failed" when either order has no valid judgement."""
    a, b = preference(focus_first), preference(focus_second)
    if a is None or b is None:
        return "failed"
    b = -b  # in the swapped order the focus system is answer 2
    if a == b == 1:
        return "win"
    if a == b == -1:
        return "loss"
    return "tie"


def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k of n (scipy); (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    from scipy.stats import binomtest
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


@dataclass
class Tally:
    win: int = 0
    tie: int = 0
    loss: int = 0
    failed: int = 0

    def add(self, result: str) -> None:
        setattr(self, result, getattr(self, result) + 1)

    @property
    def judged(self) -> int:
        return self.win + self.tie + self.loss

    def as_dict(self) -> dict:
        out = {"win": self.win, "tie": self.tie, "loss": self.loss, "failed": self.failed, "judged": self.judged}
        for key in ("win", "tie", "loss"):
            k = getattr(self, key)
            lo, hi = wilson(k, self.judged)
            out[f"{key}_rate"] = k / self.judged if self.judged else None
            out[f"{key}_ci"] = [round(lo, 4), round(hi, 4)]
        return out


def tally(verdicts: list[str]) -> Tally:
    t = Tally()
    for v in verdicts:
        t.add(v)
    return t
