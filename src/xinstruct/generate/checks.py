"""Is a generated English instruction usable? One pure function, one reason per failure."""

from __future__ import annotations

import re

from xinstruct.corpus.filters import compression_ratio
from xinstruct.corpus.langid import LanguageIdentifier
from xinstruct.generate.support import english_words, unsupported
from xinstruct.models.base import Completion

_WORD = re.compile(r"[^\W\d_]+")
# Share of an instruction's words that must be common English words for it to pass when the language
# identifier says otherwise; with 5,000 words this accepts 2 of the 2 misread instructions and 5 of
# 10,001 Leipzig sentences in the paper's languages (names and "na", "la" do it; docs/RESULTS.md).
MIN_ENGLISH_WORD_SHARE = 0.6
_LEAD = re.compile(r"^\s*(#+\s*)?(english\s+)?instruction\s*:\s*", re.IGNORECASE)


def clean_instruction(text: str) -> str:
    """Strip the echo of a section header and surrounding quotes/whitespace."""
    text = _LEAD.sub("", text.strip())
    return text.strip().strip('"“”').strip()


def char_ngrams(text: str, n: int = 8) -> set[str]:
    text = " ".join(text.lower().split())
    return {text[i:i + n] for i in range(max(1, len(text) - n + 1))}


def echo_share(instruction: str, source: str, n: int = 8) -> float:
    """Share of the instruction's character n-grams that are copied from the source text."""
    grams = char_ngrams(instruction, n)
    return len(grams & char_ngrams(source, n)) / max(1, len(grams))


def english_word_share(text: str) -> float:
    """Share of the text's words found in a list of 5,000 common English words. Capitalised words after the first
    are names and count for no language, so "Summarise Tanganyika's history." is judged by its other words."""
    words = _WORD.findall(text)
    words = [w for k, w in enumerate(words) if k == 0 or not w[:1].isupper()]
    if not words:
        return 0.0
    vocab = english_words()
    return sum(w.lower() in vocab for w in words) / len(words)


def is_english(text: str, lid: LanguageIdentifier) -> tuple[bool, str]:
    """(verdict, code the identifier gave). Character n-gram identifiers misread short English (a 30-character
    instruction read as Hausa or Aragonese), so a second vote by English words overrules a non-English verdict."""
    code, _ = lid.detect(text)
    return code == "en" or english_word_share(text) >= MIN_ENGLISH_WORD_SHARE, code


def check_instruction(completion: Completion, source_text: str, lid: LanguageIdentifier, *,
                      min_chars: int = 10, max_chars: int = 400, max_echo: float = 0.5,
                      seen: set[str] | None = None, require_support: bool = True) -> tuple[str, str | None]:
    """(cleaned instruction, None) if usable, else (text, reason). `require_support`: also reject instructions
    that point at a context the reader lacks or give numbers the text does not contain (generate/support.py;
    names are checked in Stage II, where the model's scores are at hand)."""
    text = clean_instruction(completion.text)
    if not text:
        return text, "empty"
    if completion.finish_reason == "length" or len(text) > max_chars:
        return text, "too_long"
    if len(text) < min_chars:
        return text, "too_short"
    if len(text) >= 40 and compression_ratio(text) < 0.35 or _repeats_words(text):
        return text, "repetitive"
    if echo_share(text, source_text) > max_echo:
        return text, "echoes_text"
    english, code = is_english(text, lid)
    if not english:
        return text, f"not_english:{code}"
    if require_support and (why := unsupported(text, source_text, names_too=False)):
        return text, "deictic" if why.startswith("deictic") else "unsupported_number"
    if seen is not None:
        key = " ".join(text.lower().split())
        if key in seen:
            return text, "duplicate"
        seen.add(key)
    return text, None


def _repeats_words(text: str) -> bool:
    """The same word four times in a row, or a 3-word phrase three times: degenerate sampling."""
    words = text.lower().split()
    if any(len(set(words[i:i + 4])) == 1 for i in range(len(words) - 3)):
        return True
    trigrams = [" ".join(words[i:i + 3]) for i in range(len(words) - 2)]
    return any(trigrams.count(t) >= 3 for t in set(trigrams))
