"""Fingerprints: short content hashes of what a stage is made from, so a rerun redoes exactly what changed.

- `digest(obj)`: canonical JSON → sha256, for settings.
- `file_sha256(path)`: content hash of a file, cached by (path, size, mtime) so a 250 MB model is read once.
- `tree_digest(paths)`: content hash of files and folders, for a stage's outputs.
- `source_digest(parts)`: hash of the package's own source files a stage runs, the "code version".
- `config_section(cfg, name)`: a config section without the keys that cannot change a result (batch sizes,
  thread counts, timeouts), which are marked `affects_output=False` on their fields.
- `changed(old, new)`: the dotted keys whose values differ, to tell the user why a stage is redone.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from pydantic import BaseModel

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def digest(obj, length: int = 16) -> str:
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


def _cache_path() -> Path:
    return Path(os.environ.get("XINSTRUCT_CACHE", Path.home() / ".cache" / "xinstruct")) / "sha256.json"


_MEMO: dict[str, str] = {}


def file_sha256(path: str | Path) -> str:
    """Full sha256 of a file's content; remembered on disk by (path, size, mtime) between runs."""
    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    if key in _MEMO:
        return _MEMO[key]
    cache_file = _cache_path()
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if key not in cache:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        cache[key] = h.hexdigest()
        if st.st_size > (1 << 20):  # only big files are worth remembering across runs
            try:
                cache_file.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache_file.with_name(f"{cache_file.name}.{os.getpid()}")
                tmp.write_text(json.dumps(cache))
                os.replace(tmp, cache_file)
            except OSError:
                pass  # a read-only home only costs re-hashing next time
    _MEMO[key] = cache[key]
    return cache[key]


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.endswith((".tmp", ".lock")))
    return [path] if path.is_file() else []


def tree_digest(paths: list[Path], root: Path | None = None) -> str:
    """Content hash over files (folders recursively), named relative to `root`; missing paths count as absent."""
    parts = []
    for top in paths:
        for f in _files(Path(top)):
            name = str(f.relative_to(root)) if root and f.is_relative_to(root) else str(f)
            parts.append((name, file_sha256(f) if f.stat().st_size > (1 << 20) else _small_sha(f)))
        if not Path(top).exists():
            parts.append((str(top), None))
    return digest(parts)


def _small_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source_digest(parts: tuple[str, ...]) -> str:
    """Hash of the package's source files under `parts` (folders or files relative to src/xinstruct)."""
    files = []
    for part in parts:
        top = PACKAGE_ROOT / part
        files += [f for f in _files(top) if f.suffix in (".py", ".txt", ".json", ".jsonl")]
    return digest([(str(f.relative_to(PACKAGE_ROOT)), _small_sha(f)) for f in sorted(set(files))])


def path_identity(path: str | None) -> str | None:
    """What a model or input path stands for: its content hash where it is a local file, else the name
    (a hub id or a served model)."""
    if not path:
        return path
    p = Path(path)
    if p.is_file():
        return file_sha256(p)
    if p.is_dir():
        return tree_digest([p], p)
    return str(path)


def _dump(value):
    """A config value as plain data, without fields marked `affects_output=False`."""
    if isinstance(value, BaseModel):
        out = {}
        for name, field in type(value).model_fields.items():
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            if extra.get("affects_output", True):
                out[name] = _dump(getattr(value, name))
        return out
    if isinstance(value, dict):
        return {str(k): _dump(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_dump(v) for v in value]
    return value


def config_section(cfg: BaseModel, name: str):
    """The part of the run config a stage reads, as plain data that can be diffed and hashed."""
    value = cfg
    for part in name.split("."):
        value = getattr(value, part)
    return _dump(value)


def flatten(tree, prefix: str = "") -> dict:
    """{dotted key: leaf value} of a plain-data tree (lists are leaves)."""
    if isinstance(tree, dict) and tree:
        out = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix or "(value)": tree}


def changed(old: dict, new: dict) -> dict[str, tuple]:
    """{dotted key: (old, new)} for every leaf that differs between two plain-data trees."""
    a, b = flatten(old), flatten(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def describe_change(old, new) -> str:
    """`old → new` for a changed value, short enough for one console line."""
    def short(v):
        text = json.dumps(v, ensure_ascii=False, default=str)
        return text if len(text) <= 40 else text[:37] + "..."
    return f"{short(old)} → {short(new)}"
