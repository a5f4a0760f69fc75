"""Seed pairs from a parallel corpus: an English instruction written for the English passage, answered by the
same passage (same id) in the target language. The bundled set covers 150 FLORES-200 ids.
"""

from __future__ import annotations

from pathlib import Path

from xinstruct.io.files import read_jsonl
from xinstruct.seed import bundled_path

# Instructions written for this project for the English side of parallel corpora (their passages are read from
# where the corpus lies, never copied here). bundled:flores: 150 FLORES ids (113 train, 37 held out: the grader's
# and the generator's held-out set); bundled:flores-all adds the other 285 FLORES-200 ids of SIB-200 (train);
# bundled:xquad: the 240 XQuAD paragraphs (every 5th held out).
BUNDLED = {"bundled:flores": ("flores_instructions.jsonl",),
           "bundled:flores-all": ("flores_instructions.jsonl", "seed_instructions/flores_a.jsonl",
                                  "seed_instructions/flores_b.jsonl"),
           "bundled:xquad": ("seed_instructions/xquad.jsonl",)}


def load_instructions(path: str) -> dict[str, dict]:
    """{id: {"instruction", "split", ...}} from a JSONL file, or a bundled set (BUNDLED)."""
    files = [bundled_path(name) for name in BUNDLED[path]] if path in BUNDLED else [Path(path)]
    return {r["id"]: r for f in files for r in read_jsonl(f)}


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


# What the bundled generator is trained on, and held out from it (scripts/bundled_generator.py).
GENERATOR_SETS = (("bundled:flores-all", "flores_sib200", ("bn", "fi", "hi", "id", "sw", "ta", "th", "tr", "ur", "vi")),
                  ("bundled:xquad", "xquad", ("hi", "th", "tr", "vi")))


def generator_pairs(shared_text: str | Path, split: str) -> list[dict]:
    """The bundled generator's `split` pairs: the FLORES-200 passages of the 10 paper languages and XQuAD's of
    hi, th, tr, vi with the project's English instructions, plus (train) the bundled demo seed pairs."""
    pairs = []
    for instructions, folder, langs in GENERATOR_SETS:
        table = load_instructions(instructions)
        for lang in langs:
            pairs += parallel_pairs(table, Path(shared_text) / folder, lang, split)
    if split == "train":
        for lang in ("sw", "th", "hi"):
            pairs += [{**r, "lang": lang, "source": f"bundled:demo/{lang}", "split": "train"}
                      for r in read_jsonl(bundled_path(f"demo/{lang}/seed.jsonl"))]
    return pairs
