"""What kinds of request a set of instructions makes: the share of each first word (diversify's
instruction_form, what max_form_share caps) and of each root verb (spaCy, as the dataset card's verb-noun chart),
for a run's selected pairs against the seed sets and Alpaca.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_forms.py [RUN ...] [--top 8]

Sets: the bundled demo seeds, the project's FLORES and XQuAD instructions, Alpaca (../shared/data/seed/
alpaca_5000.json) and, for each RUN, its diversify/<lang>.selected.jsonl (all languages together) and its
candidates before refinement.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def shares(items: list[str], top: int) -> str:
    counts = Counter(items)
    return ", ".join(f"{k} {v / len(items):.0%}" for k, v in counts.most_common(top))


def main() -> None:
    from xinstruct.diversify.select import instruction_form
    from xinstruct.export.card import load_spacy, verb_object
    from xinstruct.io.files import read_jsonl
    from xinstruct.seed import bundled_path

    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="*", type=Path)
    ap.add_argument("--top", type=int, default=8)
    args = ap.parse_args()
    sets = {"demo seeds": [r["instruction"] for lang in ("sw", "th", "hi")
                           for r in read_jsonl(bundled_path(f"demo/{lang}/seed.jsonl"))],
            "FLORES + XQuAD instructions": [r["instruction"] for name in ("flores_instructions.jsonl",
                                                                          "seed_instructions/flores_a.jsonl",
                                                                          "seed_instructions/flores_b.jsonl",
                                                                          "seed_instructions/xquad.jsonl")
                                            for r in read_jsonl(bundled_path(name))]}
    alpaca = SHARED / "seed" / "alpaca_5000.json"
    if alpaca.exists():
        sets["Alpaca (5,000)"] = [r["instruction"] for r in json.loads(alpaca.read_text())]
    for run in args.runs:
        sets[f"{run} candidates"] = [r["instruction"] for p in sorted((run / "candidates").glob("*.candidates.jsonl"))
                                     for r in read_jsonl(p)]
        sets[f"{run} selected"] = [r["instruction"] for p in sorted((run / "diversify").glob("*.selected.jsonl"))
                                   for r in read_jsonl(p)]
    nlp = load_spacy()
    for name, items in sets.items():
        verbs = [vo[0] if (vo := verb_object(doc)) else "(no verb root)" for doc in nlp.pipe(items, batch_size=256)]
        print(f"{name} ({len(items)}):\n  first word: {shares([instruction_form(q) for q in items], args.top)}"
              f"\n  root verb:  {shares(verbs, args.top)}")


if __name__ == "__main__":
    main()
