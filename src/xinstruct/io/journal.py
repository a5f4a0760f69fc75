"""Crash-safe, resumable JSONL output for the model stages (no library does batch commits of several files).

A Journal writes one or more JSONL streams (e.g. "candidates" and "rejects") and, after each batch, fsyncs
them and records their byte lengths in a small commit file, replaced atomically. On reopen every stream is
truncated back to its last committed length: a batch is either wholly in the output or wholly absent, so a
run killed at any instant and started again neither loses nor duplicates records.

A journal is a cache of model work, so it also records the fingerprint of the settings its records were made
with (model, prompt, sampling, code). Opened with another fingerprint it starts empty: records made by an
old generator or with old settings are never reused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from xinstruct.io.files import dumps, read_jsonl


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


class Journal:
    def __init__(self, folder: str | Path, name: str, streams: tuple[str, ...], fingerprint: str | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.commit_path = self.folder / f"{name}.commit.json"
        self.paths = {s: self.folder / f"{name}.{s}.jsonl" for s in streams}
        committed = json.loads(self.commit_path.read_text()) if self.commit_path.exists() else {}
        self.fingerprint = fingerprint
        # True when records made with other settings were dropped on opening
        self.reset = fingerprint is not None and committed.get("fingerprint", fingerprint) != fingerprint
        if self.reset:
            committed = {}
        self.batches = committed.get("batches", 0)
        self._files = {}
        for stream, path in self.paths.items():
            length = committed.get("lengths", {}).get(stream, 0)
            path.touch()
            if path.stat().st_size != length:  # drop a batch cut off mid-write, or records of other settings
                with open(path, "r+b") as f:
                    f.truncate(length)
            self._files[stream] = open(path, "ab")  # noqa: SIM115 - open for the journal's lifetime
        if self.reset:
            self._write_commit()

    def records(self, stream: str) -> Iterator[dict]:
        """The committed records of a stream (call before appending)."""
        yield from read_jsonl(self.paths[stream])

    def commit(self, batch: dict[str, list[dict]]) -> None:
        for stream, records in batch.items():
            if records:
                self._files[stream].write("".join(dumps(r) for r in records).encode("utf-8"))
        for f in self._files.values():
            f.flush()
            os.fsync(f.fileno())
        self.batches += 1
        self._write_commit()

    def _write_commit(self) -> None:
        lengths = {stream: f.tell() for stream, f in self._files.items()}
        tmp = self.commit_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"lengths": lengths, "batches": self.batches, "fingerprint": self.fingerprint}))
        os.replace(tmp, self.commit_path)

    def close(self) -> None:
        for f in self._files.values():
            f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
