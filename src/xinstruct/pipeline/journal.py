"""Crash-safe, resumable JSONL output for the model stages (no library does batch commits of several files).

A Journal writes one or more JSONL streams (e.g. "candidates" and "rejects") and, after each batch, fsyncs
them and records their byte lengths in a small commit file, replaced atomically. On reopen every stream is
truncated back to its last committed length: a batch is either wholly in the output or wholly absent, so a
run killed at any instant and started again neither loses nor duplicates records.
"""

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


def batches(records: Iterable[dict], size: int) -> Iterator[list[dict]]:
    """Consecutive lists of `size` records (the last may be shorter): the unit a Journal commits."""
    batch = []
    for record in records:
        batch.append(record)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_jsonl(path: str | Path, records) -> int:
    """Write atomically (temp file + rename); returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(dumps(r))
            n += 1
    os.replace(tmp, path)
    return n


class Journal:
    def __init__(self, folder: str | Path, name: str, streams: tuple[str, ...]):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.commit_path = self.folder / f"{name}.commit.json"
        self.paths = {s: self.folder / f"{name}.{s}.jsonl" for s in streams}
        committed = json.loads(self.commit_path.read_text()) if self.commit_path.exists() else {}
        self.batches = committed.get("batches", 0)
        self._files = {}
        for stream, path in self.paths.items():
            length = committed.get("lengths", {}).get(stream, 0)
            path.touch()
            if path.stat().st_size != length:  # drop a batch that was cut off mid-write
                with open(path, "r+b") as f:
                    f.truncate(length)
            self._files[stream] = open(path, "ab")

    def records(self, stream: str) -> Iterator[dict]:
        """The committed records of a stream (call before appending)."""
        yield from read_jsonl(self.paths[stream])

    def commit(self, batch: dict[str, list[dict]]) -> None:
        for stream, records in batch.items():
            if records:
                self._files[stream].write("".join(dumps(r) for r in records).encode("utf-8"))
        lengths = {}
        for stream, f in self._files.items():
            f.flush()
            os.fsync(f.fileno())
            lengths[stream] = f.tell()
        self.batches += 1
        tmp = self.commit_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"lengths": lengths, "batches": self.batches}))
        os.replace(tmp, self.commit_path)

    def close(self) -> None:
        for f in self._files.values():
            f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
