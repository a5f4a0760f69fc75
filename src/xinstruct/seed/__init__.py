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
from xinstruct.io.read import Row, check_spec, limited, read_unit
from xinstruct.io.records import Reject, SeedPair
from xinstruct.languages import LANGUAGES

INSTRUCTION_KEYS = ("instruction", "prompt", "question")
RESPONSE_KEYS = ("output", "response", "answer", "completion")  # `output` is ours; the rest, other datasets'


def bundled_path(name: str) -> Path:
    """A data file shipped inside the package (demo set, FLORES instructions)."""
    return Path(str(resources.files("xinstruct").joinpath("data", name)))


def heldout_split(key: str, share: float = 0.2) -> str:
    """A deterministic split from a stable hash of the id."""
    return "heldout" if zlib.crc32(key.encode()) % 1000 < share * 1000 else "train"


def to_pair(row: Row, lang: str | None = None, languages: list[str] | None = None) -> SeedPair | Reject:
    """A record as a seed pair (Alpaca's `input` joins the instruction), or a `seed:*` reject saying why not."""
    record = row.record
    instruction = next((record[k] for k in INSTRUCTION_KEYS if isinstance(record.get(k), str)), None)
    output = next((record[k] for k in RESPONSE_KEYS if isinstance(record.get(k), str)), None)
    lang = lang or record.get("lang") or row.lang
    known = lang if isinstance(lang, str) and lang in LANGUAGES else None
    pair_id = str(record.get("id") or f"{Path(row.source).stem}:{row.where}")

    def reject(what: str, detail: dict | None = None) -> Reject:
        return Reject(stage="seed", reason=f"seed:{what}", lang=known, source=row.source, where=row.where,
                      id=pair_id, detail=detail, raw=json.dumps(record, ensure_ascii=False, default=str)[:2000])

    if not instruction or not instruction.strip():
        return reject("missing_instruction")
    if not output or not output.strip():
        return reject("missing_output")
    if not lang:
        return reject("missing_lang")
    if known is None:
        return reject("unknown_lang", {"lang": lang})
    if languages is not None and lang not in languages:
        return reject("not_in_run_languages", {"lang": lang, "languages": list(languages)})
    if isinstance(record.get("input"), str) and record["input"].strip():  # Alpaca's optional input
        instruction = f"{instruction.strip()}\n\n{record['input'].strip()}"
    return SeedPair(id=pair_id, lang=lang, instruction=instruction.strip(), output=output.strip(), source=row.source,
                    split=record.get("split") or heldout_split(pair_id))


def read_pairs(spec: InputSpec, languages: list[str] | None = None) -> Iterator[SeedPair | Reject]:
    """Seed pairs of one input (any format io.read reads; at most `limit` per file); every record that is not
    one as a reject."""
    for unit in check_spec(spec):
        items = read_unit(unit)
        yield from limited((i if isinstance(i, Reject) else to_pair(i, spec.lang, languages) for i in items),
                           spec.limit)


def load_pairs(specs: list[InputSpec], rejects: list | None = None,
               languages: list[str] | None = None) -> Iterator[dict]:
    """Seed pairs as dicts from files or HF datasets; unusable records go to `rejects` as dicts with a reason."""
    rejects = rejects if rejects is not None else []
    for spec in specs:
        for item in read_pairs(spec, languages):
            if isinstance(item, Reject):
                rejects.append(item.as_dict())
            else:
                yield item.as_dict()
