"""The one reader: every kind of input (an `InputSpec`) becomes a stream of records and rejects.

    for item in iter_records(spec):                 # Row | Reject: a parsed record and where it came from
    for unit in check_spec(spec):                   # the spec's files (or hf: source), with their sizes
        for item in iter_documents(unit, langs):    # Document | Reject: rows read as target-language documents

Nothing is dropped without a `Reject` in the stream: a broken JSON line, invalid UTF-8, a non-object, a record
larger than `max_bytes`, a file that cannot be decompressed or parsed (`read:unreadable_file`), a file with no
record in it (`read:empty_file`), and for documents a missing text or language, an unknown language code, or a
language the run does not build. Each reject names the declared language wherever the spec, the record itself
(even in a line that will not parse) or a `<lang>/` folder gives one, in that order.
A mistake in the spec itself (no such file, a text folder with no language, a bad `hf:` source) is an
`InputError`, a one-line message raised before any record is read: `check_spec` finds it up front.

Formats, by suffix unless `format` says otherwise (an explicit format reads every file of a folder so):
- `.jsonl` / `.ndjson`, also `.gz`, `.bz2`, `.zst` compressed: streamed line by line, memory flat.
- `.json` (also compressed): a list of objects, or an object holding exactly one list of them.
- `.parquet`: streamed in record batches; an empty (0-byte) file is read as holding no records.
- `.txt`: one document per file; its language is the spec's `lang`, else the nearest `<lang>/` folder.
- `hf:<dataset>[:<config>[:<split>]]`: a Hugging Face dataset, streamed; empty parts are allowed
  (`hf:HuggingFaceH4/mt_bench_prompts::train`) and the spec's `split` is the split when none is named.
A folder is read file by file (hidden files and other suffixes skipped); a glob names its files.

Written here rather than taken from datatrove's readers because those stop at, or silently skip, a broken line
or a wrong encoding; decompression and Parquet are pyarrow's, the hub is datasets'.
"""

from __future__ import annotations

import glob
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from xinstruct.config import InputSpec
from xinstruct.io.records import Document, Reject
from xinstruct.languages import LANGUAGES

MAX_BYTES = 4_000_000  # a record larger than this is set aside unparsed
RAW_CHARS = 10_000  # how much of an unparsable record a reject keeps
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".zstd": "zstd"}
SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".txt": "text"}


class InputError(ValueError):
    """A mistake in an input spec (no such file, a text folder without a language...): one line for the user."""


class HFSource(NamedTuple):
    dataset: str
    config: str | None
    split: str


def parse_hf(source: str, default_split: str = "train") -> HFSource:
    """`hf:<dataset>[:<config>[:<split>]]`, empty parts allowed; `default_split` where no split is named."""
    parts = source.removeprefix("hf:").split(":")
    if not parts[0] or len(parts) > 3:
        raise InputError(f"{source}: expected hf:<dataset>[:<config>[:<split>]], e.g. hf:org/name::train")
    config = parts[1] if len(parts) > 1 and parts[1] else None
    split = parts[2] if len(parts) > 2 and parts[2] else default_split
    return HFSource(parts[0], config, split)


@dataclass(frozen=True)
class Unit:
    """One file (or one hf: dataset) of a spec: what a corpus task reads, and how big it is."""

    spec: InputSpec
    source: str
    format: str  # jsonl | json | parquet | text | hf
    size: int  # bytes on disk; 0 for hf:
    lang: str | None  # declared by the spec, else by the nearest `<lang>/` folder


@dataclass(slots=True)
class Row:
    """One parsed record, before a stage gives it meaning."""

    record: dict
    source: str
    where: str
    lang: str | None  # the declared language (spec or folder); the record's own field is the stage's to read


def file_format(path: str) -> str | None:
    """The format a file's suffix names (compression suffixes looked through), or None."""
    name = path.lower()
    for comp in COMPRESSIONS:
        name = name.removesuffix(comp)
    return next((fmt for suffix, fmt in SUFFIXES.items() if name.endswith(suffix)), None)


def folder_language(path: Path, root: Path) -> str | None:
    """The nearest folder between `path` and `root` (inclusive) named by a known language code."""
    for parent in path.parents:
        if parent.name in LANGUAGES:
            return parent.name
        if parent == root or parent == parent.parent:
            return None
    return None


def expand(spec: InputSpec) -> list[Unit]:
    """The units of a spec, in a stable order; raises InputError where the spec names nothing readable."""
    if spec.format == "hf" or spec.path.startswith("hf:"):
        parse_hf(spec.path, spec.split)
        return [Unit(spec, spec.path, "hf", 0, spec.lang)]
    path = Path(spec.path)
    if path.is_dir():
        root = path
        files = sorted(p for p in path.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if spec.format == "auto":
            files = [p for p in files if file_format(str(p))]
        elif spec.format == "text":
            files = [p for p in files if file_format(str(p)) == "text"]
        if not files:
            raise InputError(f"{spec.path}: no .jsonl, .json, .parquet or .txt files in this folder")
    elif path.is_file():
        root, files = path.parent, [path]
    else:
        files = sorted(Path(p) for p in glob.glob(spec.path, recursive=True) if Path(p).is_file())
        if not files:
            raise InputError(f"{spec.path}: no such file or folder")
        root = _glob_root(spec.path)
    units = []
    for f in files:
        fmt = spec.format if spec.format != "auto" else (file_format(str(f)) or "jsonl")
        if fmt == "parquet" and f.suffix.lower() in COMPRESSIONS:
            raise InputError(f"{f}: Parquet is compressed inside; give the .parquet file itself")
        units.append(Unit(spec, str(f), fmt, f.stat().st_size, spec.lang or folder_language(f, root)))
    return units


def _glob_root(pattern: str) -> Path:
    """The folders of a glob before its first wildcard: where a `<lang>/` folder name stops counting."""
    parts = Path(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    return Path(*parts[:fixed]) if fixed else Path(".")


def check_spec(spec: InputSpec) -> list[Unit]:
    """Its units, or an InputError naming the first mistake (missing file, text without a language...)."""
    units = expand(spec)
    if spec.lang is not None and spec.lang not in LANGUAGES:
        raise InputError(f"{spec.path}: unknown language {spec.lang!r}; known: {', '.join(sorted(LANGUAGES))} "
                         "(add one under `extra_languages:`)")
    for unit in units:
        if unit.format == "text" and unit.lang is None:
            raise InputError(f"{unit.source}: a .txt document needs a language: set `lang:` on the input, or "
                             "put the files in a folder named by the language code (e.g. sw/)")
    return units


def _open(path: str):
    """A binary file, decompressed as its suffix says. pyarrow's codecs stream (memory stays flat), read across
    zstd frames, and raise on a cut-off stream where zstandard's own reader ends quietly."""
    codec = COMPRESSIONS.get(Path(path).suffix.lower())
    if codec is None:
        return open(path, "rb")
    import pyarrow as pa

    return io.BufferedReader(pa.input_stream(path, compression=codec), 1 << 20)  # line iteration


def _raw(data: bytes | str) -> str:
    if isinstance(data, bytes):  # keep the bytes recoverable whatever their encoding
        data = data[:RAW_CHARS * 4].decode("utf-8", errors="backslashreplace")
    return data[:RAW_CHARS]


def _sniff_lang(unit: Unit, raw: bytes) -> str | None:
    """The record's language field, found in bytes that would not parse, so its reject is filed under it."""
    key = re.escape(unit.spec.lang_key.encode())
    found = re.search(rb'"' + key + rb'"\s*:\s*"([A-Za-z-]{2,12})"', raw[:RAW_CHARS * 4])
    code = found.group(1).decode() if found else None
    return code if code in LANGUAGES else None


def _reject(unit: Unit, where: str, reason: str, raw: bytes | str | None = None, lang: str | None = None,
            detail: dict | None = None) -> Reject:
    return Reject(stage="read", reason=f"read:{reason}", lang=unit.spec.lang or lang or unit.lang,
                  source=unit.source, where=where, detail=detail, raw=None if raw is None else _raw(raw))


def _parse_line(unit: Unit, line: bytes, where: str, max_bytes: int) -> Row | Reject:
    if len(line) > max_bytes:
        return _reject(unit, where, "too_large", line[:RAW_CHARS], _sniff_lang(unit, line),
                       {"bytes": len(line), "max_bytes": max_bytes})
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        return _reject(unit, where, "invalid_utf8", line, _sniff_lang(unit, line), {"at_byte": e.start})
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        return _reject(unit, where, "malformed_json", text, _sniff_lang(unit, line), {"error": e.msg, "at": e.pos})
    if not isinstance(record, dict):
        return _reject(unit, where, "not_an_object", text)
    return Row(record, unit.source, where, unit.lang)


def _jsonl(unit: Unit, max_bytes: int) -> Iterator[Row | Reject]:
    with _open(unit.source) as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                yield _parse_line(unit, line.rstrip(b"\r\n"), f"line {lineno}", max_bytes)


def _json(unit: Unit) -> Iterator[Row | Reject]:
    with _open(unit.source) as f:
        data = f.read()  # a JSON document is parsed whole; JSONL streams
    if not data.strip():
        return
    try:
        parsed = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        yield _reject(unit, "file", "invalid_utf8", data[:RAW_CHARS], detail={"at_byte": e.start})
        return
    except json.JSONDecodeError as e:
        yield _reject(unit, "file", "malformed_json", data[:RAW_CHARS], detail={"error": e.msg, "at": e.pos})
        return
    if isinstance(parsed, dict):  # {"data": [...]}: the one list it holds
        lists = [v for v in parsed.values() if isinstance(v, list)]
        if len(lists) != 1:
            yield _reject(unit, "file", "not_a_record_list", detail={"keys": sorted(parsed)[:20]})
            return
        parsed = lists[0]
    if not isinstance(parsed, list):
        yield _reject(unit, "file", "not_a_record_list", json.dumps(parsed, ensure_ascii=False))
        return
    for i, item in enumerate(parsed):
        if isinstance(item, dict):
            yield Row(item, unit.source, f"item {i}", unit.lang)
        else:
            yield _reject(unit, f"item {i}", "not_an_object", json.dumps(item, ensure_ascii=False))


def _parquet(unit: Unit) -> Iterator[Row | Reject]:
    import pyarrow.parquet as pq

    if unit.size == 0:  # an empty file: no records (pyarrow would call it corrupt)
        return
    row = 0
    for batch in pq.ParquetFile(unit.source).iter_batches(batch_size=1000):
        for record in batch.to_pylist():
            row += 1
            yield Row(record, unit.source, f"row {row}", unit.lang)


def _text(unit: Unit, max_bytes: int) -> Iterator[Row | Reject]:
    path = Path(unit.source)
    root = Path(unit.spec.path) if Path(unit.spec.path).is_dir() else path.parent
    rel = str(path.relative_to(root)) if path.is_relative_to(root) else path.name
    with _open(unit.source) as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        yield _reject(unit, "file", "too_large", data[:RAW_CHARS], detail={"max_bytes": max_bytes})
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        yield _reject(unit, "file", "invalid_utf8", data, detail={"at_byte": e.start})
        return
    yield Row({unit.spec.id_key: rel, unit.spec.text_key: text}, unit.source, "file", unit.lang)


def _hf(unit: Unit) -> Iterator[Row | Reject]:
    from datasets import load_dataset

    hf = parse_hf(unit.source, unit.spec.split)
    try:
        ds = load_dataset(hf.dataset, hf.config, split=hf.split, streaming=True)
    except (OSError, ValueError) as e:  # not found, offline, no such config or split: one line naming it
        raise InputError(f"{unit.source}: cannot load dataset {hf.dataset!r}, config {hf.config!r}, split "
                         f"{hf.split!r} ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    for i, record in enumerate(ds):
        yield Row(dict(record), unit.source, f"row {i}", unit.lang)


def read_unit(unit: Unit, max_bytes: int = MAX_BYTES) -> Iterator[Row | Reject]:
    """Every record of one unit. A file that cannot be read on (corrupt, cut off) ends with one
    `read:unreadable_file` reject, and one that holds no record gives `read:empty_file`, so neither goes unseen."""
    import pyarrow as pa

    readers = {"jsonl": lambda: _jsonl(unit, max_bytes), "json": lambda: _json(unit),
               "parquet": lambda: _parquet(unit), "text": lambda: _text(unit, max_bytes), "hf": lambda: _hf(unit)}
    n = 0
    try:
        for item in readers[unit.format]():
            n += 1
            yield item
    except (OSError, EOFError, pa.ArrowException) as e:
        yield _reject(unit, "file", "unreadable_file", detail={"error": f"{type(e).__name__}: {e}"[:300],
                                                              "records_before": n})
        return
    if n == 0:
        yield _reject(unit, "file", "empty_file")


def iter_records(spec: InputSpec, max_bytes: int = MAX_BYTES) -> Iterator[Row | Reject]:
    """Every record of every unit of `spec` (at most `spec.limit` rows per unit); see the module docstring."""
    for unit in check_spec(spec):
        yield from limited(read_unit(unit, max_bytes), spec.limit)


def limited(items: Iterator, limit: int | None) -> Iterator:
    """Items until `limit` records (rejects pass and do not count)."""
    n = 0
    for item in items:
        if limit is not None and n >= limit:
            return
        n += not isinstance(item, Reject)
        yield item


def to_document(row: Row, spec: InputSpec, languages: list[str] | None = None) -> Document | Reject:
    """A row as a document; a missing text or language, an unknown code or one outside `languages` is a reject."""
    record = row.record
    lang = spec.lang or record.get(spec.lang_key) or row.lang
    known = lang if isinstance(lang, str) and lang in LANGUAGES else None
    doc_id = record.get(spec.id_key)
    doc_id = str(doc_id) if doc_id not in (None, "") else f"{Path(row.source).name}:{row.where}"

    def reject(what: str, detail: dict | None = None) -> Reject:
        raw = json.dumps(record, ensure_ascii=False, default=str)
        return Reject(stage="read", reason=f"read:{what}", lang=known, source=row.source, where=row.where,
                      id=doc_id, detail=detail, raw=_raw(raw))

    text = record.get(spec.text_key)
    if not isinstance(text, str):
        return reject("missing_text", {"key": spec.text_key})
    if lang is None:
        return reject("missing_lang", {"key": spec.lang_key})
    if known is None:
        return reject("unknown_lang", {"lang": lang})
    if languages is not None and lang not in languages:
        return reject("not_in_run_languages", {"lang": lang, "languages": list(languages)})
    return Document(id=doc_id, lang=lang, text=text, source=row.source, where=row.where)


def iter_documents(unit: Unit, languages: list[str] | None = None,
                   max_bytes: int = MAX_BYTES) -> Iterator[Document | Reject]:
    """The documents of one unit (at most `limit` per unit), every record that is not one as a reject."""
    def items():
        for item in read_unit(unit, max_bytes):
            yield item if isinstance(item, Reject) else to_document(item, unit.spec, languages)

    yield from limited(items(), unit.spec.limit)
