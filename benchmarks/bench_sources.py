"""Candidate sources side by side (issue 23): the demo's documents, the bundled generator, every source at once
(samples at T = 0.7, greedy, PMI-guided greedy at each α), then Stage II as the demo runs it. Prints the time of
each stage and, per source, how many candidates passed Stage I's checks and how many Stage II kept; writes, per
language, each document's text and every source's instruction, with the one Stage II kept marked, for reading by
hand (`<out>/sources.<lang>.txt`): which source writes instructions the text answers is only known by reading.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_sources.py [--docs 20] [--guided 0.5,1] [--out runs/sources]
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections import Counter, defaultdict
from pathlib import Path


def main() -> None:
    from xinstruct.core.stage import RunContext
    from xinstruct.io.files import read_json, read_jsonl, write_jsonl
    from xinstruct.pipeline.demo import demo_config
    from xinstruct.pipeline.run import run_stages
    from xinstruct.seed import bundled_path

    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=20, help="documents per language")
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--guided", default="0.5,1")
    ap.add_argument("--out", default="runs/sources")
    ap.add_argument("--no-refine", action="store_true", help="generation only: the sources' candidates, unpicked")
    args = ap.parse_args()
    out = Path(args.out)
    cfg = demo_config(args.out)
    inputs = []
    for lang in cfg.languages:  # the first --docs documents of each demo corpus
        docs = list(itertools.islice(read_jsonl(bundled_path(f"demo/{lang}/corpus.jsonl")), args.docs))
        write_jsonl(out / "inputs" / f"{lang}.jsonl", docs)
        inputs.append({"path": str((out / "inputs" / f"{lang}.jsonl").resolve()), "lang": lang})
    generate = {**cfg.generate.model_dump(), "n_per_doc": args.samples, "greedy": True,
                "guided": [float(a) for a in args.guided.split(",") if a]}
    cfg = cfg.model_validate({**cfg.model_dump(), "generate": generate,
                              "corpus": {**cfg.corpus.model_dump(), "inputs": inputs}})
    ctx = RunContext(cfg, log=print, quiet=True)
    times = {}
    for stage in ("corpus", "seed", "generate") + (() if args.no_refine else ("refine",)):
        started = time.perf_counter()
        run_stages(ctx, (stage,))
        times[stage] = round(time.perf_counter() - started, 1)
    print("seconds by stage:", times)

    final = None if args.no_refine else read_json(out / "summaries" / "refine.json")["final_round"]
    for lang in cfg.languages:
        candidates = list(read_jsonl(out / "candidates" / f"{lang}.candidates.jsonl"))
        rejects = [r for r in read_jsonl(out / "candidates" / f"{lang}.rejects.jsonl") if "decoding" in r]
        kept, labels = set(), {}
        if final is not None:
            kept = {r["id"] for r in read_jsonl(out / "refine" / "final" / f"{lang}.jsonl")}
            labels = {lb["id"]: lb for lb in read_jsonl(out / "refine" / f"iter-{final}" / "labels" /
                                                         f"{lang}.labels.jsonl")}
        passed = Counter(c["decoding"] for c in candidates)
        print(f"{lang}: passed Stage I by source {dict(passed)}; rejected {dict(Counter(r['decoding'] for r in rejects))}"
              f"; kept by Stage II {dict(Counter(c['decoding'] for c in candidates if c['id'] in kept))}")
        by_doc: dict[str, list] = defaultdict(list)
        for c in candidates:
            by_doc[c["doc_id"]].append(c)
        for r in rejects:
            by_doc[r["doc_id"]].append(r)
        lines = []
        for doc_id, rows in by_doc.items():
            text = next((r["output"] for r in rows if "output" in r), "")
            lines.append(f"\n=== {doc_id}: {text[:400]}")
            for r in sorted(rows, key=lambda r: r["candidate_index"]):
                if "instruction" in r:
                    p = labels.get(r["id"], {}).get("probs", {}).get("best")
                    mark = "KEPT" if r["id"] in kept else "    "
                    lines.append(f"  {mark} {r['decoding']:11} P(best)={p if p is None else round(p, 2)}  "
                                 f"{r['instruction']}")
                else:
                    lines.append(f"  rej  {r['decoding']:11} {r['reason']}: {r.get('raw', '')[:120]!r}")
        (out / f"sources.{lang}.txt").write_text("\n".join(lines) + "\n")
        print(f"  → {out / f'sources.{lang}.txt'}")


if __name__ == "__main__":
    main()
