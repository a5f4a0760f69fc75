"""Question sets as records: evaluation benchmarks (Vicuna/MT-Bench `turns`, or a question/instruction/prompt/text
field), read for evaluation and for decontaminating the data against them."""

from __future__ import annotations

from xinstruct.config import InputSpec
from xinstruct.io.read import iter_records
from xinstruct.io.records import Reject

QUESTION_KEYS = ("turns", "question", "instruction", "prompt", "text")


def question_texts(record: dict) -> list[str]:
    """The question text(s) of one record: Vicuna/MT-Bench `turns` (every turn), else the first text field
    (a list of turns or a string)."""
    for key in QUESTION_KEYS:
        value = record.get(key)
        if isinstance(value, list):
            return [v for v in value if isinstance(v, str)]
        if isinstance(value, str):
            return [value]
    return []


def read_question_records(source: str) -> list[dict]:
    """The records of a question set: any file io.read reads (JSONL, JSON, Parquet), or
    `hf:<dataset>[:<config>[:<split>]]` (needs the hub). A record that cannot be read is an error: a benchmark
    with holes would be compared as if whole."""
    items = list(iter_records(InputSpec(path=source)))
    bad = next((item for item in items if isinstance(item, Reject)), None)
    if bad is not None:
        raise ValueError(f"{source}: {bad.where}: {bad.reason.removeprefix('read:')}")
    return [item.record for item in items]
