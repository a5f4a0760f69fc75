"""Cleaning steps: each a datatrove filter answering True or (False, "stage:reason").

datatrove's own quality filters count words and sentence punctuation, which Thai and other scripts without
spaces or full stops fail wholesale; these use characters, lines and compressibility instead.
"""

from __future__ import annotations

import re
import unicodedata
import zlib

from datatrove.data import Document
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter

from xinstruct.corpus.langid import LanguageIdentifier, shared_identifier
from xinstruct.languages import JOINING_SCRIPTS, get_language, script_share

_SPACES = re.compile(r"[ \t\u00a0\u3000]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_BOILERPLATE = re.compile(
    r"(cookie|javascript|lorem ipsum|all rights reserved|terms of (use|service)|privacy policy|"
    r"click here|subscribe|sign up|log ?in|copyright ©|©)", re.IGNORECASE)
_URL = re.compile(r"https?://\S+|www\.\S+")
BOILERPLATE_PHRASES = 3  # this many cookie/login/copyright phrases make a page boilerplate
MAX_URL_SHARE = 0.2  # share of the characters in URLs


def normalize_text(text: str, lang: str | None = None) -> str:
    """NFC, one space between words, no control or invisible format characters, at most one blank line.

    ZWNJ and ZWJ change how Indic and Arabic-script text is shaped (half forms, Persian and Urdu joins), so they
    stay where the declared language is written in such a script (or none is declared); everywhere else they
    are stray, like the zero-width space, word joiner and BOM that are removed in every script. Thai loses its
    zero-width spaces too: they are only line-break hints, and a model trained on them would write them.
    """
    keep = "\u200c\u200d" if lang is None or get_language(lang).script in JOINING_SCRIPTS else ""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C" or ch in keep)
    text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


class Normalize(PipelineStep):
    name = "🔤 NFC normalise"
    type = "✂️ - FORMAT"

    def run(self, data, rank: int = 0, world_size: int = 1):
        for doc in data:
            doc.text = normalize_text(doc.text, doc.metadata["lang"])
            yield doc


class LengthFilter(BaseFilter):
    name = "📏 length"

    def __init__(self, min_chars: int, max_chars: int, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.min_chars, self.max_chars = min_chars, max_chars

    def filter(self, doc: Document):
        n = len(doc.text)
        if n == 0:
            return False, "length:empty"
        if n < self.min_chars:
            doc.metadata["detail"] = {"length": n, "min_chars": self.min_chars}
            return False, "length:too_short"
        if n > self.max_chars:
            doc.metadata["detail"] = {"length": n, "max_chars": self.max_chars}
            return False, "length:too_long"
        return True


def duplicate_line_share(text: str) -> float:
    """Share of characters in lines that occur more than once."""
    lines = [ln for ln in text.split("\n") if ln.strip()]
    if len(lines) < 2:
        return 0.0
    seen: dict[str, int] = {}
    for ln in lines:
        seen[ln] = seen.get(ln, 0) + 1
    dup = sum(len(ln) * c for ln, c in seen.items() if c > 1)
    return dup / max(1, sum(len(ln) for ln in lines))


def compression_ratio(text: str) -> float:
    """zlib output/input bytes: natural text ~0.3-0.5, text repeating itself far less, in any script."""
    raw = text.encode("utf-8")
    return len(zlib.compress(raw, 6)) / max(1, len(raw))


def symbol_share(text: str) -> float:
    """Share of non-space characters that are neither letters, marks nor digits (markup, tables, emoji)."""
    chars = [ch for ch in text if not ch.isspace()]
    if not chars:
        return 1.0
    return sum(1 for ch in chars if unicodedata.category(ch)[0] not in "LMN") / len(chars)


class QualityFilter(BaseFilter):
    """Repetition, boilerplate and script checks that work without spaces or sentence punctuation."""

    name = "🧹 quality"

    def __init__(self, min_script_share=0.6, max_dup_line_share=0.3, min_compression_ratio=0.25,
                 max_symbol_share=0.25, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.min_script_share = min_script_share
        self.max_dup_line_share = max_dup_line_share
        self.min_compression_ratio = min_compression_ratio
        self.max_symbol_share = max_symbol_share

    def filter(self, doc: Document):
        """The first check that fails; its score and threshold go in the document's `detail`."""
        text = doc.text
        share = script_share(text, get_language(doc.metadata["lang"]).script)
        if share < self.min_script_share:
            return _fail(doc, "quality:wrong_script", share, self.min_script_share)
        dup = duplicate_line_share(text)
        if dup > self.max_dup_line_share:
            return _fail(doc, "quality:duplicate_lines", dup, self.max_dup_line_share)
        ratio = compression_ratio(text)
        if ratio < self.min_compression_ratio:
            return _fail(doc, "quality:repetitive", ratio, self.min_compression_ratio)
        symbols = symbol_share(text)
        if symbols > self.max_symbol_share:
            return _fail(doc, "quality:symbols", symbols, self.max_symbol_share)
        phrases = len(_BOILERPLATE.findall(text))
        if phrases >= BOILERPLATE_PHRASES:
            return _fail(doc, "quality:boilerplate", phrases, BOILERPLATE_PHRASES)
        urls = len("".join(_URL.findall(text))) / max(1, len(text))
        if urls > MAX_URL_SHARE:
            return _fail(doc, "quality:urls", urls, MAX_URL_SHARE)
        return True


def _fail(doc: Document, reason: str, score: float, threshold: float) -> tuple[bool, str]:
    doc.metadata["detail"] = {"score": round(score, 4), "threshold": threshold}
    return False, reason


class LanguageFilter(BaseFilter):
    """Keeps documents identified as their declared language (py3langid, pycld2 as second vote)."""

    name = "🌐 language id"

    def __init__(self, min_prob: float = 0.5, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.min_prob = min_prob
        self._lid: LanguageIdentifier | None = None

    def filter(self, doc: Document):
        if self._lid is None:
            self._lid = shared_identifier()
        verdict = self._lid.check(doc.text, doc.metadata["lang"], self.min_prob)
        doc.metadata["langid"] = verdict.detected
        doc.metadata["langid_prob"] = round(verdict.prob, 4)
        if verdict.ok:
            return True
        doc.metadata["detail"] = {"detected": verdict.detected, "prob": round(verdict.prob, 4),
                                  "threshold": self.min_prob}
        return False, f"langid:{verdict.detected}"
