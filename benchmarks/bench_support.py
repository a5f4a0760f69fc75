"""The unsupported-reference checks (generate/support.py) on FLORES: how many true pairs they reject (false rejects:
the instruction was written for the passage) and how many mismatched pairs they catch (another passage's
instruction on this one), per language and per reason.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_support.py [--langs sw,th] [--model]

Without --model: the string checks alone (Stage I's deictic and number rejects, and names by spelling). With
--model: the rule the run applies, Stage I's rejects plus Stage II's name rule (a name the text does not spell is
dropped only if the bundled model finds it no likelier after the text than after none: PMI per token < 0).

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
    ap.add_argument("--model", action="store_true", help="names as Stage II judges them, with the bundled model")
    ap.add_argument("--true-only", action="store_true", help="with --model: score only the true pairs (the "
                    "false-reject rate; mismatched pairs keep the string verdicts)")
    args = ap.parse_args()
    backend = None
    if args.model:
        from xinstruct.config import model_config
        from xinstruct.models.llamacpp import LlamaCppBackend
        backend = LlamaCppBackend(model_config(n_ctx=2048))
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
        if backend is not None:
            true = as_the_run_judges(backend, {i: (instructions[i], passages[i]) for i in ids}, true)
            if not args.true_only:
                mismatched = as_the_run_judges(backend, {i: (instructions[ids[(k + 7) % len(ids)]], passages[i])
                                                         for k, i in enumerate(ids)}, mismatched)
        fr = Counter(r.split(":")[0] for r in true.values() if r)
        ca = Counter(r.split(":")[0] for r in mismatched.values() if r)
        totals.update({"true": len(ids), "false": sum(fr.values()), "mismatched": len(ids), "caught": sum(ca.values())})
        print(f"| {lang} | {len(ids)} | {sum(fr.values())} ({sum(fr.values()) / len(ids):.1%}) | {dict(fr)} | "
              f"{len(ids)} | {sum(ca.values())} ({sum(ca.values()) / len(ids):.1%}) | {dict(ca)} |")
        for i in [i for i, r in true.items() if r][:args.show]:
            print(f"  false reject {lang} {i}: {true[i]} — {instructions[i]!r} (en: {english.get(i, '')[:80]!r})")
    print(f"| all | {totals['true']} | {totals['false']} ({totals['false'] / totals['true']:.1%}) | | "
          f"{totals['mismatched']} | {totals['caught']} ({totals['caught'] / totals['mismatched']:.1%}) | |")


def as_the_run_judges(backend, pairs: dict, string_verdicts: dict) -> dict:
    """Stage I's deictic and number rejects stand; a name flagged by spelling stands only if the model's PMI per
    token over it is below NAME_MIN_PMI (refine/features.py: the same q|t and q|- requests)."""
    from xinstruct.generate.support import unsupported, unsupported_name_given_scores
    from xinstruct.prompts import scoring_prompt

    verdicts = {i: unsupported(q, t, names_too=False) for i, (q, t) in pairs.items()}
    ask = [i for i, r in string_verdicts.items() if r and r.startswith("name:") and not verdicts[i]]
    requests = [r for i in ask for r in ((scoring_prompt(pairs[i][1].strip()), " " + pairs[i][0].strip()),
                                         (scoring_prompt(""), " " + pairs[i][0].strip()))]
    scores = backend.score(requests)
    for k, i in enumerate(ask):
        with_text, without = scores[2 * k], scores[2 * k + 1]
        name = unsupported_name_given_scores(pairs[i][0], pairs[i][1], with_text.token_logprobs,
                                             without.token_logprobs, with_text.token_offsets)
        verdicts[i] = f"name:{name}" if name else None
    return verdicts


if __name__ == "__main__":
    main()
