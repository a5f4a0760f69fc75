"""The unsupported-reference checks (generate/support.py) on FLORES: how many true pairs they reject (false rejects:
the instruction was written for the passage) and how many mismatched pairs they catch (another passage's
instruction on this one), per language and per reason.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_support.py [--langs sw,th] [--instructions FILE ...]

Instructions: the bundled FLORES set and, where present, the project's extra seed instructions
(src/xinstruct/data/seed_instructions/flores_*.jsonl).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
LANGS = "bn,fi,hi,id,sw,ta,th,tr,ur,vi"


def main() -> None:
    from xinstruct.generate.support import unsupported
    from xinstruct.io.files import read_jsonl
    from xinstruct.seed import bundled_path

    ap = argparse.ArgumentParser()
    ap.add_argument("--langs", default=LANGS)
    ap.add_argument("--show", type=int, default=3, help="false rejects to print per language")
    args = ap.parse_args()
    instructions = {r["id"]: r["instruction"] for r in read_jsonl(bundled_path("flores_instructions.jsonl"))}
    for extra in sorted(bundled_path("seed_instructions").glob("flores_*.jsonl")):
        instructions |= {r["id"]: r["instruction"] for r in read_jsonl(extra)}
    english = {r["id"]: r["text"] for r in read_jsonl(SHARED / "text" / "flores_sib200" / "en.jsonl")}
    print(f"{len(instructions)} instructions; reasons: deictic / number / name")
    print("| lang | true pairs | false rejects | by reason | mismatched | caught | by reason |")
    print("|---|---|---|---|---|---|---|")
    totals = Counter()
    for lang in args.langs.split(","):
        passages = {r["id"]: r["text"] for r in read_jsonl(SHARED / "text" / "flores_sib200" / f"{lang}.jsonl")}
        ids = [i for i in instructions if i in passages]
        true = {i: unsupported(instructions[i], passages[i]) for i in ids}
        mismatched = {i: unsupported(instructions[ids[(k + 7) % len(ids)]], passages[i]) for k, i in enumerate(ids)}
        fr = Counter(r.split(":")[0] for r in true.values() if r)
        ca = Counter(r.split(":")[0] for r in mismatched.values() if r)
        totals.update({"true": len(ids), "false": sum(fr.values()), "mismatched": len(ids), "caught": sum(ca.values())})
        print(f"| {lang} | {len(ids)} | {sum(fr.values())} ({sum(fr.values()) / len(ids):.1%}) | {dict(fr)} | "
              f"{len(ids)} | {sum(ca.values())} ({sum(ca.values()) / len(ids):.1%}) | {dict(ca)} |")
        for i in [i for i, r in true.items() if r][:args.show]:
            print(f"  false reject {lang} {i}: {true[i]} — {instructions[i]!r} (en: {english.get(i, '')[:80]!r})")
    print(f"| all | {totals['true']} | {totals['false']} ({totals['false'] / totals['true']:.1%}) | | "
          f"{totals['mismatched']} | {totals['caught']} ({totals['caught'] / totals['mismatched']:.1%}) | |")


if __name__ == "__main__":
    main()
