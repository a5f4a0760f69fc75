"""JSON and JSONL files written atomically (temp file + rename), so a kill never leaves half a file behind."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path


def dumps(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


def read_jsonl(path: str | Path) -> Iterator[dict]:
    """Records of a JSONL file written by xinstruct (trusted: our own output)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _tmp(path: Path) -> Path:
    return path.with_name(f"{path.name}.tmp{os.getpid()}")


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    """Write atomically; returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(dumps(r))
            n += 1
    os.replace(tmp, path)
    return n


def write_text(path: str | Path, text: str) -> Path:
    """Replace a file's content atomically: readers see the old file or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_json(path: str | Path, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def read_json(path: str | Path, default=None):
    """The JSON in `path`, or `default` where the file does not exist."""
    path = Path(path)
    if not path.exists():
        return default
    return json.loads(path.read_text(encoding="utf-8"))
