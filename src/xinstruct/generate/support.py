"""Can the text support the instruction? Two cheap checks a 270M generator fails often (issue 23):

- **context the reader lacks**: "Summarise this text.", "Give some tips for visiting this place.", "the above
  passage": the instruction points at something only the generator saw. A user's request names its subject.
- **names and numbers the text does not contain**: "Describe the market in Yangpu." for a text that never names
  Yangpu. A number must be in the text (any script's digits); a name must be found in it: by accent- and case-
  blind prefix match in Latin-script text, and in other scripts by comparing consonant skeletons of the name
  and of the text transliterated to Latin letters (anyascii), since "Obama" is written ओबामा, โอบามา, اوباما.

Both are pure functions of the two strings; docs/RESULTS.md has their false-reject rate on true FLORES pairs and
what they catch on mismatched ones (benchmarks/bench_support.py).
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache

from anyascii import anyascii

from xinstruct.seed import bundled_path

_GENERIC = ("text|passage|paragraph|article|excerpt|extract|story|report|document|post|page|piece|letter|speech|"
            "poem|song|notice|announcement|advert|advertisement|message|statement|content|writing|description|"
            "place|area|region|city|town|village|country|event|person|man|woman|company|organisation|organization|"
            "product|book|film|movie|recipe|dish|school|hospital|team|game|match|topic|subject|case|situation|"
            "information|news|item|entry|job|vacancy|position|announcement|list|table|conversation|dialogue")
_DEICTIC = [
    re.compile(rf"\b(this|these|that|those|said)\s+(\w+\s+)?({_GENERIC})s?\b", re.IGNORECASE),
    re.compile(r"\bthe\s+(text|passage|paragraph|excerpt|extract|above)\b", re.IGNORECASE),
    re.compile(r"\bthe\s+(following|given|provided)(\s*[.:?]|\s*$|\s+(" + _GENERIC + r")s?\b)", re.IGNORECASE),
    re.compile(r"\b(above|below|aforementioned)\s+(\w+\s+)?(" + _GENERIC + r")s?\b", re.IGNORECASE),
    re.compile(r"\b(in|from|according to|based on)\s+(the|this)\s+(article|story|report|document|post|page|"
               r"source|author|writer|speaker)\b", re.IGNORECASE),
    re.compile(r"\bthe (author|writer|speaker|narrator)\b", re.IGNORECASE),
]
_FOLLOWED_BY_NAME = re.compile(r"^\s+(of|in|at|called|named)\s+[A-Z]")


def deictic_reference(instruction: str) -> str | None:
    """The words that point at a context the reader does not have ("this place", "the passage"), else None.
    "this year", "these days" and a generic noun followed by its name ("this town of Arusha") pass."""
    for pattern in _DEICTIC:
        for m in pattern.finditer(instruction):
            if _FOLLOWED_BY_NAME.match(instruction[m.end():]):
                continue
            return m.group(0)
    return None


# -- numbers ----------------------------------------------------------------------------------------------------
_NUMBER = re.compile(r"(?<![A-Za-z]-)(?<![\d.,])\d+(?:[.,\u060c\u066b\u066c\s]\d+)*")  # not COVID-19's 19


def _ascii_digits(text: str) -> str:
    """Every script's digits as 0-9 (Devanagari १९४७, Thai ๒๕๖๐, Arabic-Indic ٢٠١٠ ...)."""
    return "".join(str(unicodedata.digit(c)) if c.isdigit() and not c.isascii() else c for c in text)


def numbers(text: str) -> set[str]:
    """The numbers written in digits, separators removed (10,000 / 10.000 / 10 000 → 10000)."""
    return {re.sub(r"\D", "", m.group(0)) for m in _NUMBER.finditer(_ascii_digits(text))}


def unsupported_numbers(instruction: str, text: str) -> list[str]:
    """Numbers of the instruction that the text does not contain (as a number or inside a longer one)."""
    have = numbers(text)
    return [n for n in sorted(numbers(instruction)) if not any(n in h for h in have)]


# -- names ------------------------------------------------------------------------------------------------------
_WORDS = re.compile(r"[^\W\d_][\w'’-]*")
_SENTENCE_START = re.compile(r"(^|[.?!:;]\s+|[\"“(]\s*)$")
MIN_NAME_CHARS = 3


@cache
def english_words() -> frozenset[str]:
    """A list of 5,000 common English words (the English-instruction check, and words that are no names)."""
    lines = bundled_path("english_words.txt").read_text(encoding="utf-8").splitlines()
    return frozenset(w for w in lines if w and not w.startswith("#"))


@cache
def _common() -> frozenset[str]:
    extra = {"english", "answer", "january", "february", "march", "april", "may", "june", "july", "august",
             "september", "october", "november", "december", "monday", "tuesday", "wednesday", "thursday",
             "friday", "saturday", "sunday", "i", "mr", "mrs", "ms", "dr", "st", "ok"}
    return frozenset(english_words()) | extra


def names(instruction: str) -> list[str]:
    """Capitalised words that are not sentence-initial and not common English words: the names it mentions."""
    out = []
    for m in _WORDS.finditer(instruction):
        word = m.group(0).strip("'’-")
        if not word[:1].isupper() or len(word) < MIN_NAME_CHARS:
            continue
        if _SENTENCE_START.search(instruction[:m.start()]):
            continue
        base = re.sub(r"['’]s$", "", word)
        if base.lower() in _common():
            continue
        out.append(base)
    return out


def _fold(text: str) -> str:
    """Lowercase Latin letters without accents (ü → u, ş → s, đ → d)."""
    text = unicodedata.normalize("NFKD", text.replace("đ", "d").replace("Đ", "D").replace("ı", "i"))
    return "".join(c for c in text if not unicodedata.combining(c)).lower()


def _is_latin(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and sum(c.isascii() or "LATIN" in unicodedata.name(c, "") for c in letters) > 0.8 * len(letters)


# consonant classes that transliteration from other scripts confuses (b/p/v/w, d/t, g/k/c/q, s/z/j ...)
_CLASSES = str.maketrans({**dict.fromkeys("bpfvw", "P"), **dict.fromkeys("dt", "T"), **dict.fromkeys("gkcqx", "K"),
                          **dict.fromkeys("szj", "S"), "m": "M", "n": "N", **dict.fromkeys("lr", "L")})


def skeleton(text: str) -> str:
    """Consonant classes of the ASCII letters, vowels and h/y dropped, repeats collapsed: "Obama" → "PM"."""
    classes = [c for c in _fold(text).translate(_CLASSES) if c.isupper()]
    return "".join(c for k, c in enumerate(classes) if k == 0 or c != classes[k - 1])


MIN_SKELETON = 3  # shorter skeletons match too much of any text by chance: such names are not checked


def name_in_text(name: str, text: str, latin: bool | None = None) -> bool | None:
    """Is the name in the text? None where this cannot be told (a name too short to check in another script)."""
    latin = _is_latin(text) if latin is None else latin
    if latin:
        stem = _fold(name)[:max(MIN_NAME_CHARS, min(5, len(name) - 1))]
        return stem in _fold(text)

    target = skeleton(name)
    if len(target) < MIN_SKELETON:
        return None
    words = [skeleton(w) for w in anyascii(text).split()]
    stream = " ".join(words)
    return target in stream.replace(" ", "") or any(w.startswith(target[:MIN_SKELETON]) and target in w
                                                     for w in words)


def unsupported_names(instruction: str, text: str) -> list[str]:
    """Names of the instruction that the text does not contain (where that can be told)."""
    latin = _is_latin(text)
    return [n for n in names(instruction) if name_in_text(n, text, latin) is False]


# A name the text does not spell (no prefix or consonant-skeleton match) is still taken as supported when the model
# finds it likely given the text: a translated name (Saturn in Swahili is Zohali) or a transliteration the
# skeleton misses. Below this PMI per token (nats) it is not (benchmarks/bench_support.py).
NAME_MIN_PMI = 0.0


def name_spans(instruction: str, offsets: list[int]) -> dict[str, range]:
    """{name: the tokens of the continuation " " + instruction that spell it}, from token start offsets."""
    continuation = " " + instruction.strip()
    spans = {}
    for name in names(instruction):
        at = continuation.find(name)
        if at < 0:
            continue
        span = [j for j, o in enumerate(offsets) if at - 1 <= o < at + len(name)]
        if span:
            spans[name] = range(span[0], span[-1] + 1)
    return spans


def unsupported_name_given_scores(instruction: str, text: str, with_text: list[float], without: list[float],
                                  offsets: list[int]) -> str | None:
    """The first name the text neither spells nor makes likely (PMI per token < NAME_MIN_PMI), else None.
    `with_text` / `without`: per-token log-probabilities of " " + instruction after the text and after no text."""
    latin = _is_latin(text)
    spans = name_spans(instruction, offsets)
    for name in names(instruction):
        if name_in_text(name, text, latin) is not False or name not in spans:
            continue
        span = spans[name]
        if sum(with_text[j] - without[j] for j in span) / len(span) < NAME_MIN_PMI:
            return name
    return None


def unsupported(instruction: str, text: str, names_too: bool = True) -> str | None:
    """Why the text cannot support the instruction ("deictic:this place", "number:1990", "name:Yangpu"), else
    None. Names by spelling only (`names_too`); Stage II also asks the model (unsupported_name_given_scores)."""
    if (words := deictic_reference(instruction)) is not None:
        return f"deictic:{words.lower()}"
    if missing := unsupported_numbers(instruction, text):
        return f"number:{missing[0]}"
    if names_too and (missing := unsupported_names(instruction, text)):
        return f"name:{missing[0]}"
    return None
