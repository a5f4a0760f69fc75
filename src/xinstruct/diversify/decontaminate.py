"""Drop pairs whose instruction overlaps an evaluation question (word n-grams), so a benchmark is not trained on.

Texts are lower-cased and split into Unicode words. A pair is contaminated if its instruction shares a word
n-gram with a question, or, where either text is shorter than n words, if one contains the other whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from xinstruct.io.questions import question_texts, read_question_records

WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    """Word n-grams in reading order, so the first overlap found is the first in the text."""
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def load_questions(source: str) -> list[tuple[str, str]]:
    """(question id, text) pairs, every turn, from a file or `hf:<dataset>[:<config>[:<split>]]` (needs the hub)."""
    records = read_question_records(source)
    stem = Path(source).stem if not source.startswith("hf:") else source
    out = []
    for i, record in enumerate(records):
        qid = record.get("question_id", record.get("id", i))
        for turn, text in enumerate(question_texts(record)):
            out.append((f"{stem}:{qid}" + (f"/{turn + 1}" if turn else ""), text))
    return out


@dataclass
class Match:
    question_id: str
    overlap: str  # the shared n-gram, or the contained short text


class Decontaminator:
    def __init__(self, questions: list[tuple[str, str]], n: int = 8):
        self.n = n
        self.index: dict[tuple[str, ...], str] = {}
        self.short: list[tuple[str, str]] = []  # questions shorter than n words: (id, " joined ")
        self.padded: list[tuple[str, str]] = []  # every question as " joined ", for short instructions
        for qid, text in questions:
            tokens = words(text)
            if not tokens:
                continue
            for gram in ngrams(tokens, n):
                self.index.setdefault(gram, qid)
            joined = f" {' '.join(tokens)} "
            self.padded.append((qid, joined))
            if len(tokens) < n:
                self.short.append((qid, joined))

    def __len__(self) -> int:
        return len(self.padded)

    def match(self, instruction: str) -> Match | None:
        tokens = words(instruction)
        if not tokens:
            return None
        for gram in ngrams(tokens, self.n):
            if gram in self.index:
                return Match(self.index[gram], " ".join(gram))
        joined = f" {' '.join(tokens)} "
        if len(tokens) < self.n:
            for qid, question in self.padded:
                if joined in question:
                    return Match(qid, joined.strip())
        for qid, question in self.short:
            if question in joined:
                return Match(qid, question.strip())
        return None
