"""Seed pairs (English instruction, target-language response): load them, or build them by translation or
from a parallel corpus. Every pair is {"id", "lang", "instruction", "output", "source", "split"}.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from xinstruct.config import InputSpec
from xinstruct.corpus.readers import detect_format, expand_inputs, parse_json_record

INSTRUCTION_KEYS = ("instruction", "prompt", "question")
RESPONSE_KEYS = ("response", "output", "answer", "completion")


def bundled_path(name: str) -> Path:
    """A data file shipped inside the package (demo set, FLORES instructions)."""
    return Path(str(resources.files("xinstruct").joinpath("data", name)))


def heldout_split(key: str, share: float = 0.2) -> str:
    """A deterministic split from a stable hash of the id."""
    return "heldout" if zlib.crc32(key.encode()) % 1000 < share * 1000 else "train"


def to_pair(record: dict, lang: str | None, source: str, where: str) -> tuple[dict | None, str | None]:
    instruction = next((record[k] for k in INSTRUCTION_KEYS if isinstance(record.get(k), str)), None)
    response = next((record[k] for k in RESPONSE_KEYS if isinstance(record.get(k), str)), None)
    lang = lang or record.get("lang")
    if not instruction or not instruction.strip():
        return None, "missing_instruction"
    if not response or not response.strip():
        return None, "missing_response"
    if not lang:
        return None, "missing_lang"
    if isinstance(record.get("input"), str) and record["input"].strip():  # Alpaca's optional input
        instruction = f"{instruction.strip()}\n\n{record['input'].strip()}"
    pair_id = str(record.get("id") or f"{Path(source).stem}:{where}")
    return {"id": pair_id, "lang": lang, "instruction": instruction.strip(), "output": response.strip(),
            "source": source, "split": record.get("split") or heldout_split(pair_id)}, None


def load_pairs(specs: list[InputSpec], rejects: list | None = None) -> Iterator[dict]:
    """Seed pairs from JSONL/JSON files or HF datasets; unusable records go to `rejects` with a reason."""
    rejects = rejects if rejects is not None else []
    for spec, source in expand_inputs(specs):
        fmt = detect_format(spec)
        if fmt == "hf":
            from datasets import load_dataset
            name, _, config = source.removeprefix("hf:").partition(":")
            rows = ((f"row {i}", r) for i, r in enumerate(load_dataset(name, config or None, split=spec.split,
                                                                         streaming=True)))
        elif source.endswith(".json"):
            rows = ((f"item {i}", r) for i, r in enumerate(json.loads(Path(source).read_text("utf-8"))))
        else:
            rows = _jsonl_rows(source, rejects)
        n = 0
        for where, record in rows:
            if spec.limit is not None and n >= spec.limit:
                break
            pair, reason = to_pair(record, spec.lang, source, where)
            if reason:
                rejects.append({"stage": "seed", "reason": f"seed:{reason}", "source": source, "where": where})
                continue
            n += 1
            yield pair


def _jsonl_rows(source: str, rejects: list) -> Iterator[tuple[str, dict]]:
    with open(source, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            record, reason = parse_json_record(line, 4_000_000)
            if reason:
                rejects.append({"stage": "seed", "reason": f"seed:{reason}", "source": source,
                                "where": f"line {lineno}"})
                continue
            yield f"line {lineno}", record
