"""Seed pairs from a parallel corpus: an English instruction written for the English passage, answered by the
same passage (same id) in the target language. The bundled set covers 150 FLORES-200 ids.
"""

from __future__ import annotations

from pathlib import Path

from xinstruct.io.files import read_jsonl
from xinstruct.seed import bundled_path

BUNDLED = {"bundled:flores": "flores_instructions.jsonl"}


def load_instructions(path: str) -> dict[str, dict]:
    """{id: {"instruction", "split", ...}} from a JSONL file, or a bundled set ("bundled:flores")."""
    resolved = bundled_path(BUNDLED[path]) if path in BUNDLED else Path(path)
    return {r["id"]: r for r in read_jsonl(resolved)}


def parallel_pairs(instructions: dict[str, dict], passages_dir: str | Path, lang: str,
                   split: str | None = None) -> list[dict]:
    """Pairs for every id that has both an instruction and a `lang` passage; `split` filters train/heldout."""
    path = Path(passages_dir) / f"{lang}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"no {lang} passages at {path}")
    pairs = []
    for passage in read_jsonl(path):
        meta = instructions.get(passage["id"])
        if meta is None or (split and meta.get("split", "train") != split):
            continue
        pairs.append({"id": f"{passage['id']}:{lang}", "lang": lang, "instruction": meta["instruction"],
                      "output": passage["text"], "source": f"parallel:{path}",
                      "split": meta.get("split", "train")})
    return pairs
