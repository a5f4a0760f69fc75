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

from xinstruct.corpus.langid import LanguageIdentifier
from xinstruct.languages import get_language, script_share

_SPACES = re.compile(r"[ \t\u00a0\u3000]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_BOILERPLATE = re.compile(
    r"(cookie|javascript|lorem ipsum|all rights reserved|terms of (use|service)|privacy policy|"
    r"click here|subscribe|sign up|log ?in|copyright ©|©)", re.IGNORECASE)
_URL = re.compile(r"https?://\S+|www\.\S+")


def normalize_text(text: str) -> str:
    """NFC, one space between words, no control characters, at most one blank line."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C"
                   or ch in "\u200c\u200d")  # ZWNJ/ZWJ carry meaning in Indic and Persian scripts
    text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


class Normalize(PipelineStep):
    name = "🔤 NFC normalise"
    type = "✂️ - FORMAT"

    def run(self, data, rank: int = 0, world_size: int = 1):
        for doc in data:
            doc.text = normalize_text(doc.text)
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
            return False, "length:too_short"
        if n > self.max_chars:
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
        text = doc.text
        lang = get_language(doc.metadata["lang"])
        if script_share(text, lang.script) < self.min_script_share:
            return False, "quality:wrong_script"
        if duplicate_line_share(text) > self.max_dup_line_share:
            return False, "quality:duplicate_lines"
        if compression_ratio(text) < self.min_compression_ratio:
            return False, "quality:repetitive"
        if symbol_share(text) > self.max_symbol_share:
            return False, "quality:symbols"
        if len(_BOILERPLATE.findall(text)) >= 3 or len("".join(_URL.findall(text))) > 0.2 * len(text):
            return False, "quality:boilerplate"
        return True


class LanguageFilter(BaseFilter):
    """Keeps documents identified as their declared language (py3langid, pycld2 as second vote)."""

    name = "🌐 language id"

    def __init__(self, min_prob: float = 0.5, exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.min_prob = min_prob
        self._lid: LanguageIdentifier | None = None

    def filter(self, doc: Document):
        if self._lid is None:
            self._lid = LanguageIdentifier()
        verdict = self._lid.check(doc.text, doc.metadata["lang"], self.min_prob)
        doc.metadata["langid"] = verdict.detected
        doc.metadata["langid_prob"] = round(verdict.prob, 4)
        return True if verdict.ok else (False, f"langid:{verdict.detected}")
