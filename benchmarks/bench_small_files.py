"""The corpus stage over many small input files: the per-task cost that grouping files into tasks removes.

Writes `--files` small files (JSONL by default, or one .txt document each) into a temporary folder, made at run
time from the FLORES passages in ../shared/data (sw, th, hi; `--per-file` passages each, cycling), runs the
whole corpus stage on the folder and prints one line: files, documents read and kept, tasks, seconds.

    .venv/bin/python benchmarks/bench_small_files.py [--files 1000] [--per-file 3] [--format jsonl|txt]
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "text" / "flores_sib200"
LANGS = ("sw", "th", "hi")


def write_files(folder: Path, n_files: int, per_file: int, fmt: str) -> int:
    """`n_files` files under folder/<lang>/, languages in turn; returns the number of documents written."""
    passages = {lang: itertools.cycle([json.loads(line) for line in (SHARED / f"{lang}.jsonl").open()])
                for lang in LANGS}
    n_docs = 0
    for i in range(n_files):
        lang = LANGS[i % len(LANGS)]
        (folder / lang).mkdir(parents=True, exist_ok=True)
        docs = [next(passages[lang]) for _ in range(per_file if fmt == "jsonl" else 1)]
        if fmt == "jsonl":
            lines = (json.dumps({"id": f"{i}-{j}-{d['id']}", "lang": lang, "text": d["text"]}, ensure_ascii=False)
                     for j, d in enumerate(docs))
            (folder / lang / f"part-{i:05d}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        else:
            (folder / lang / f"part-{i:05d}.txt").write_text(docs[0]["text"], encoding="utf-8")
        n_docs += len(docs)
    return n_docs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--per-file", type=int, default=3, help="JSONL records per file (.txt: always one)")
    ap.add_argument("--format", choices=("jsonl", "txt"), default="jsonl")
    args = ap.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"needs the shared FLORES passages at {SHARED}")

    from loguru import logger

    from xinstruct.config import CorpusConfig, InputSpec
    from xinstruct.corpus.pipeline import run_corpus

    logger.disable("datatrove")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        n_docs = write_files(data, args.files, args.per_file, args.format)
        fmt = "text" if args.format == "txt" else "auto"
        inputs = [InputSpec(path=str(data / lang), lang=lang, format=fmt) for lang in LANGS]
        started = time.perf_counter()
        summary = run_corpus(CorpusConfig(inputs=inputs), Path(tmp) / "out", list(LANGS))
        seconds = time.perf_counter() - started
        tasks = len(list((Path(tmp) / "out" / "logs" / "filter" / "completions").glob("*")))
    kept = sum(s["kept"] for s in summary.values())
    read = sum(s["read"] for s in summary.values())
    print(f"{args.files} {args.format} files, {n_docs} documents: read {read}, kept {kept}, "
          f"{tasks} filter tasks, {seconds:.1f} s")


if __name__ == "__main__":
    main()
