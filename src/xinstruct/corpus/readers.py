"""Read JSONL, Parquet, plain-text folders and HF datasets (streaming) into datatrove Documents.

Written rather than taken from datatrove's readers because those stop or skip silently on a broken line or a
wrong encoding; here every record that cannot become a document is set aside with its reason.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator
from pathlib import Path

from datatrove.data import Document
from datatrove.pipeline.base import PipelineStep

from xinstruct.config import InputSpec
from xinstruct.io.files import dumps, read_jsonl
from xinstruct.languages import LANGUAGES


def expand_inputs(specs: list[InputSpec]) -> list[tuple[InputSpec, str]]:
    """One (spec, source) per file (or per HF dataset): the unit datatrove shards across tasks."""
    units = []
    for spec in specs:
        fmt = detect_format(spec)
        if fmt in ("hf", "text"):
            units.append((spec, spec.path))
            continue
        path = Path(spec.path)
        if path.is_dir():
            files = sorted(str(p) for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        else:
            files = sorted(glob.glob(spec.path)) or [spec.path]
        units.extend((spec, f) for f in files)
    return units


def detect_format(spec: InputSpec) -> str:
    if spec.format != "auto":
        return spec.format
    if spec.path.startswith("hf:"):
        return "hf"
    if Path(spec.path).is_dir() and not any(Path(spec.path).glob("*.jsonl")) and not any(
            Path(spec.path).glob("*.parquet")):
        return "text"
    return "parquet" if spec.path.endswith(".parquet") else "jsonl"


def parse_json_record(line: bytes, max_bytes: int) -> tuple[dict | None, str | None]:
    """(record, None) or (None, reason) for one raw JSONL line."""
    if len(line) > max_bytes:
        return None, "too_large"
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None, "invalid_utf8"
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return None, "malformed_json"
    if not isinstance(record, dict):
        return None, "not_an_object"
    return record, None


class CorpusReader(PipelineStep):
    """Reads every input unit assigned to this rank; records that fail to parse go to `rejects_dir`."""

    name = "📖 xinstruct reader"
    type = "📖 - READER"

    def __init__(self, specs: list[InputSpec], rejects_dir: str, max_line_bytes: int = 4_000_000):
        super().__init__()
        self.specs = specs
        self.rejects_dir = rejects_dir
        self.max_line_bytes = max_line_bytes

    def _reject(self, out, source: str, where: str, reason: str, raw: bytes | str) -> None:
        self.stat_update(f"dropped_read:{reason}")
        if isinstance(raw, bytes):  # keep the bytes recoverable whatever their encoding
            raw = raw[:self.max_line_bytes].decode("utf-8", errors="backslashreplace")
        out.write(dumps({"stage": "read", "reason": f"read:{reason}", "source": source, "where": where,
                         "raw": raw}))

    def _document(self, spec: InputSpec, record: dict, source: str, where: str, out) -> Document | None:
        text = record.get(spec.text_key)
        if not isinstance(text, str):
            self._reject(out, source, where, "missing_text", json.dumps(record, ensure_ascii=False)[:10000])
            return None
        lang = spec.lang or record.get(spec.lang_key)
        if not lang or lang not in LANGUAGES:
            self._reject(out, source, where, "unknown_lang" if lang else "missing_lang",
                         json.dumps(record, ensure_ascii=False)[:10000])
            return None
        doc_id = str(record.get(spec.id_key) or f"{Path(source).name}:{where}")
        return Document(text=text, id=doc_id, metadata={"lang": lang, "source": source})

    def _read_unit(self, spec: InputSpec, source: str, out) -> Iterator[Document]:
        fmt = detect_format(spec)
        count = 0
        if fmt == "jsonl":
            with open(source, "rb") as f:
                for lineno, line in enumerate(f, 1):
                    if spec.limit is not None and count >= spec.limit:
                        return
                    if not line.strip():
                        continue
                    record, reason = parse_json_record(line, self.max_line_bytes)
                    if reason:
                        self._reject(out, source, f"line {lineno}", reason, line)
                        continue
                    doc = self._document(spec, record, source, f"line {lineno}", out)
                    if doc:
                        count += 1
                        yield doc
        elif fmt == "parquet":
            import pyarrow.parquet as pq
            row = 0
            for batch in pq.ParquetFile(source).iter_batches(batch_size=1000):
                for record in batch.to_pylist():
                    row += 1
                    if spec.limit is not None and count >= spec.limit:
                        return
                    doc = self._document(spec, record, source, f"row {row}", out)
                    if doc:
                        count += 1
                        yield doc
        elif fmt == "text":
            for path in sorted(Path(source).rglob("*.txt")):
                if spec.limit is not None and count >= spec.limit:
                    return
                raw = path.read_bytes()
                rel = str(path.relative_to(source))
                if len(raw) > self.max_line_bytes:
                    self._reject(out, str(path), rel, "too_large", raw[:10000])
                    continue
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    self._reject(out, str(path), rel, "invalid_utf8", raw)
                    continue
                count += 1
                yield Document(text=text, id=rel, metadata={"lang": spec.lang, "source": str(path)})
        elif fmt == "hf":
            from datasets import load_dataset
            name, _, config = source.removeprefix("hf:").partition(":")
            ds = load_dataset(name, config or None, split=spec.split, streaming=True)
            for i, record in enumerate(ds):
                if spec.limit is not None and count >= spec.limit:
                    return
                doc = self._document(spec, record, source, f"row {i}", out)
                if doc:
                    count += 1
                    yield doc

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        if data:
            yield from data
        units = expand_inputs(self.specs)[rank::world_size]
        os.makedirs(self.rejects_dir, exist_ok=True)
        with open(os.path.join(self.rejects_dir, f"{rank:05d}_read.jsonl"), "w", encoding="utf-8") as out:
            for spec, source in units:
                for doc in self._read_unit(spec, source, out):
                    self.stat_update("documents")
                    yield doc


class LanguageShardReader(PipelineStep):
    """Task `rank` reads every filtered file of `languages[rank]`: one task sees a whole language."""

    name = "📖 language shard"
    type = "📖 - READER"

    def __init__(self, folder: str, languages: list[str]):
        super().__init__()
        self.folder, self.languages = folder, languages

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        for path in sorted(Path(self.folder, self.languages[rank]).glob("*.jsonl")):
            for record in read_jsonl(path):
                text, doc_id = record.pop("text"), record.pop("id")
                self.stat_update("documents")
                yield Document(text=text, id=doc_id, metadata=record)
