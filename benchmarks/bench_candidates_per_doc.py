"""More candidates per document (issue 11): the demo run again with n candidates per document, then for each
document the instruction that would be kept had only its first k candidates been drawn (k = 1, 2, 4 ...: the
best-graded passing candidate among candidate_index < k, same grader, same keep rule). Prints the share of
documents with a kept instruction at each k and writes, per language, the picks side by side for reading by hand
(`<out>/picks.<lang>.txt`): the share that *fits* is only known by reading them.

The run reuses a finished demo's corpus, seeds and generator (copied), so only generation and refinement run:

    .venv/bin/xinstruct demo                                   # once: runs/demo
    PYTHONPATH=src .venv/bin/python benchmarks/bench_candidates_per_doc.py [--from runs/demo] [--n 4]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path


def picks(run: Path, cfg, lang: str, ks: list[int]) -> list[dict]:
    """Per document: its text and, for each k, the instruction the stage's keep step (refine.loop.keep: the keep
    rule, one per document, quotas) keeps from the first k candidates of every document (or None)."""
    from xinstruct.io.files import read_json, read_jsonl
    from xinstruct.refine.loop import keep

    final = read_json(run / "summaries" / "refine.json")["final_round"]
    labels = {lb["id"]: lb for lb in read_jsonl(run / "refine" / f"iter-{final}" / "labels" / f"{lang}.labels.jsonl")}
    candidates = list(read_jsonl(run / "candidates" / f"{lang}.candidates.jsonl"))
    rows = {c["doc_id"]: {"doc": c["doc_id"], "text": c["output"]} for c in candidates}
    for k in ks:
        first = [c for c in candidates if c.get("candidate_index", 0) < k]
        kept, _ = keep(cfg, lang, first, [labels.get(c["id"], {}) for c in first])
        for row in rows.values():
            row[k] = None
        for r in kept:
            rows[r["doc_id"]][k] = (r["probs"]["best"], r["instruction"])
    return list(rows.values())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--from", dest="source", type=Path, default=Path("runs/demo"))
    ap.add_argument("--out", type=Path, default=Path("runs/demo-candidates"))
    ap.add_argument("--n", type=int, default=4)
    args = ap.parse_args()

    from rich.console import Console

    from xinstruct.core.stage import RunContext
    from xinstruct.io.files import read_json
    from xinstruct.pipeline.demo import demo_config
    from xinstruct.pipeline.run import run_stages

    if not (args.source / "stages" / "train.json").exists():
        raise SystemExit(f"{args.source}: no finished demo run (run `xinstruct demo` first)")
    shutil.rmtree(args.out, ignore_errors=True)
    shutil.copytree(args.source, args.out)
    saved = read_json(args.source / "config.json")
    cfg = demo_config(str(args.out), tuple(saved["languages"]), n_per_doc=args.n,
                      eval_questions=saved["diversify"]["decontaminate"]["questions"])
    console = Console(width=140)
    started = time.perf_counter()
    run_stages(RunContext(cfg, log=console.print, quiet=True), ("generate", "refine"))
    console.print(f"generate + refine with n = {args.n}: {time.perf_counter() - started:.0f}s")

    ks = [k for k in (1, 2, 4, 8) if k < args.n] + [args.n]
    for lang in cfg.languages:
        rows = picks(args.out, cfg, lang, ks)
        shares = ", ".join(f"k={k}: {sum(r[k] is not None for r in rows)}/{len(rows)}" for k in ks)
        console.print(f"{lang}: documents with a kept instruction {shares}")
        lines = []
        for r in rows:
            lines.append(f"== {r['doc']}  {r['text'][:240]}")
            lines += [f"   k={k}: " + (f"{r[k][1]}  (P(best) {r[k][0]:.2f})" if r[k] else "-- none kept") for k in ks]
        (args.out / f"picks.{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    console.print(f"read {args.out}/picks.<lang>.txt to count the documents whose pick fits")


if __name__ == "__main__":
    main()
