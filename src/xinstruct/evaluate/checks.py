"""Checks that need no judge: is the answer in the requested language (py3langid, with the corpus stage's rules
for close neighbours), and how long is it."""

from __future__ import annotations

import statistics
from collections import Counter
from functools import cache

from xinstruct.evaluate.judge import wilson


@cache
def _identifier():
    from xinstruct.corpus.langid import LanguageIdentifier
    return LanguageIdentifier()


def detected_language(text: str, lang: str) -> str:
    """`lang` when the answer is in it (ms counts as id; Marathi for Hindi only on pycld2's second vote), else the
    language py3langid names; "empty" for an empty answer."""
    if not text.strip():
        return "empty"
    verdict = _identifier().check(text, lang, min_prob=0.0)
    return lang if verdict.ok else verdict.detected


def fidelity(answers: list[str], lang: str) -> dict:
    """Share of `answers` written in `lang`, with a Wilson 95% interval and what the others were in."""
    detected = [detected_language(a, lang) for a in answers]
    k, n = sum(d == lang for d in detected), len(detected)
    lo, hi = wilson(k, n)
    others = Counter(d for d in detected if d != lang)
    return {"n": n, "in_language": k, "share": k / n if n else None, "ci": [round(lo, 4), round(hi, 4)],
            "other_languages": dict(others.most_common(5))}


def length(answers: list[str]) -> dict:
    chars = [len(a.strip()) for a in answers]
    return {"mean_chars": round(statistics.fmean(chars), 1) if chars else None,
            "median_chars": statistics.median(chars) if chars else None,
            "empty": sum(c == 0 for c in chars)}
