"""Question sets: Vicuna/MT-Bench JSONL (`question_id`, `category`, `turns`), from a file or the HF hub, and the
bundled questions written in each target language (for the zero-shot check)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from xinstruct.io.questions import question_texts, read_question_records
from xinstruct.io.read import parse_hf


@dataclass(frozen=True)
class Question:
    set: str  # e.g. "vicuna_bench_question" or "native"
    id: str
    text: str  # the first turn: the harness answers single-turn questions
    category: str = ""
    lang: str = "en"


def question_from_record(record: dict, set_name: str, index: int) -> Question | None:
    """The record's first turn (the harness is single-turn), or None when it holds no question."""
    texts = question_texts(record)
    if not texts or not texts[0].strip():
        return None
    qid = next((record[k] for k in ("question_id", "prompt_id", "id") if record.get(k) is not None), index)
    return Question(set_name, str(qid), texts[0].strip(), str(record.get("category", "")),
                    str(record.get("lang", "en")))


def load_question_set(source: str, limit: int | None = None) -> list[Question]:
    """Questions of a file or an hf: source (see read_question_records); a record without a question is an error."""
    set_name = parse_hf(source).dataset.split("/")[-1] if source.startswith("hf:") else Path(source).stem
    questions = []
    for i, record in enumerate(read_question_records(source)):
        q = question_from_record(record, set_name, i)
        if q is None:
            raise ValueError(f"{source}: record {i + 1} has no question (expected `turns` or `question`)")
        questions.append(q)
    return spread(questions, limit)


def spread(items: list, limit: int | None) -> list:
    """`limit` items spaced evenly over the list: Vicuna and MT-Bench are ordered by category, so the first N
    would all be of one or two categories."""
    if not limit or limit >= len(items):
        return items
    return [items[i * len(items) // limit] for i in range(limit)]


def native_questions(lang: str) -> list[Question]:
    """The bundled hand-written questions in `lang` (8 per language for the paper's 10 languages)."""
    path = resources.files(__package__).joinpath("data", "native_questions.jsonl")
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        record = json.loads(line)
        if record["lang"] == lang:
            out.append(question_from_record(record, "native", i))
    return out
