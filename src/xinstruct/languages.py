"""The language table: code, the English name used in "Answer in {Language}.", script, and language-ID quirks.

Add a language with `register_language(Language(...))` or a `languages:` block in the run config.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

# Unicode blocks per script, used by the script-share filter. Latin covers Vietnamese and Turkish diacritics.
SCRIPT_RANGES: dict[str, tuple[tuple[int, int], ...]] = {
    "Latin": ((0x0041, 0x005A), (0x0061, 0x007A), (0x00C0, 0x024F), (0x1E00, 0x1EFF)),
    "Bengali": ((0x0980, 0x09FF),),
    "Devanagari": ((0x0900, 0x097F), (0xA8E0, 0xA8FF)),
    "Tamil": ((0x0B80, 0x0BFF),),
    "Thai": ((0x0E00, 0x0E7F),),
    "Arabic": ((0x0600, 0x06FF), (0x0750, 0x077F), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF)),
}

# Scripts whose shaping uses ZWNJ/ZWJ (half forms, conjuncts, Persian/Urdu joins): the corpus keeps them there only.
JOINING_SCRIPTS = frozenset({"Bengali", "Devanagari", "Tamil", "Arabic"})


@dataclass(frozen=True)
class Language:
    code: str  # ISO 639-1, as language identifiers report it
    name: str  # English name, as in "Answer in Swahili."
    script: str  # a key of SCRIPT_RANGES
    # Codes a language identifier gives for this language that we accept outright (`ms` for Indonesian).
    same_as: tuple[str, ...] = field(default=())
    # Close neighbours an identifier confuses it with: accepted only when the second vote (pycld2) agrees.
    confusable_with: tuple[str, ...] = field(default=())


LANGUAGES: dict[str, Language] = {
    lang.code: lang
    for lang in [
        Language("en", "English", "Latin"),
        Language("bn", "Bengali", "Bengali", confusable_with=("as",)),
        Language("fi", "Finnish", "Latin", confusable_with=("et",)),
        Language("hi", "Hindi", "Devanagari", confusable_with=("mr", "ne")),
        Language("id", "Indonesian", "Latin", same_as=("ms",)),
        Language("sw", "Swahili", "Latin"),
        Language("ta", "Tamil", "Tamil"),
        Language("th", "Thai", "Thai"),
        Language("tr", "Turkish", "Latin", confusable_with=("az",)),
        Language("ur", "Urdu", "Arabic", confusable_with=("fa",)),
        Language("vi", "Vietnamese", "Latin"),
    ]
}

PAPER_LANGUAGES = ("bn", "fi", "hi", "id", "sw", "ta", "th", "tr", "ur", "vi")


def register_language(lang: Language) -> None:
    if lang.script not in SCRIPT_RANGES:
        raise ValueError(f"unknown script {lang.script!r} for {lang.code}; known: {sorted(SCRIPT_RANGES)}")
    LANGUAGES[lang.code] = lang


def get_language(code: str) -> Language:
    try:
        return LANGUAGES[code]
    except KeyError:
        raise KeyError(f"unknown language {code!r}; known: {', '.join(sorted(LANGUAGES))} "
                       "(add one under `languages:` in the config)") from None


def answer_suffix(code: str) -> str:
    """The paper's instruction suffix."""
    return f"Answer in {get_language(code).name}."


def script_share(text: str, script: str) -> float:
    """Share of the letters in `text` that belong to `script` (digits, spaces, punctuation ignored)."""
    ranges = SCRIPT_RANGES[script]
    letters = in_script = 0
    for ch in text:
        if not unicodedata.category(ch).startswith(("L", "M")):
            continue
        letters += 1
        cp = ord(ch)
        if any(lo <= cp <= hi for lo, hi in ranges):
            in_script += 1
    return in_script / letters if letters else 0.0
