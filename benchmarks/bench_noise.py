"""Issue 11's noise-injection check: each language's held-out FLORES pairs (known good) with 30% deliberately
mismatched pairs mixed in (a text with another document's instruction), graded by the default evaluator (the
bundled likelihood grader on the bundled Gemma) and kept by the proposed rule (P(best) >= 0.37). Prints the share of
mismatched pairs dropped (target >= 95%) and of true pairs kept (target >= 80%), and the same figures under
other keep rules, per language and over all languages.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_noise.py [--langs sw,th] [--share 0.3]

With --stage, the same check through the refine stage with its defaults (a grader fitted on the run's seed
rating set, the rounds, the keep threshold that grader derives from the rating set): seed pairs are the FLORES
train pairs, candidates the held-out passages. --reuse keeps the last run's cached evidence, so another keep rule
(--refine '{"min_best_prob": 0.45}') takes seconds.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_noise.py --stage [--langs sw,th,id] [--seeds 60] [--reuse]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    from xinstruct.languages import PAPER_LANGUAGES

    ap = argparse.ArgumentParser()
    ap.add_argument("--langs", default=",".join(PAPER_LANGUAGES))
    ap.add_argument("--share", type=float, default=0.3)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-noise.json"))
    ap.add_argument("--stage", action="store_true", help="through the refine stage (experiments/noise.py noise_refinement)")
    ap.add_argument("--seeds", type=int, default=None, help="--stage: train seed pairs per language")
    ap.add_argument("--reuse", action="store_true", help="--stage: keep the last run's cached evidence (to try "
                                                         "another keep rule; the candidates are the same)")
    ap.add_argument("--refine", type=json.loads, default={}, help="--stage: refine settings as JSON, e.g. "
                                                                  "'{\"min_best_prob\": 0.45}'")
    args = ap.parse_args()
    if args.stage:
        stage_check(args)
        return

    from xinstruct.config import model_config
    from xinstruct.experiments.noise import KEEP_RULES, noise_injection
    from xinstruct.models.llamacpp import LlamaCppBackend
    from xinstruct.refine.evaluator import make_evaluator

    results = []
    with LlamaCppBackend(model_config()) as backend:
        evaluator = make_evaluator("likelihood", backend)
        for lang in args.langs.split(","):
            started = time.perf_counter()
            r = noise_injection(evaluator, lang, SHARED / "text" / "flores_sib200", args.share)
            r["seconds"] = round(time.perf_counter() - started, 1)
            results.append(r)
            print(f"{lang}: {r['true']} true + {r['mismatched']} mismatched; rule '{r['rule']}': mismatched dropped "
                  f"{r['mismatched_dropped']:.0%}, true kept {r['true_kept']:.0%} ({r['seconds']}s)", flush=True)
    n_true = sum(r["true"] for r in results)
    n_bad = sum(r["mismatched"] for r in results)
    print(f"all {len(results)} languages, {n_true} true + {n_bad} mismatched ({args.share:.0%}):")
    for rule in KEEP_RULES:
        dropped = sum(r["rules"][rule]["mismatched_dropped"] * r["mismatched"] for r in results) / n_bad
        kept = sum(r["rules"][rule]["true_kept"] * r["true"] for r in results) / n_true
        print(f"  {rule:28s} mismatched dropped {dropped:.1%} (target >= 95%), true kept {kept:.1%} (target >= 80%)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))


def stage_check(args) -> None:
    import shutil

    from rich.console import Console

    from xinstruct.experiments.noise import noise_refinement

    out = args.out.with_suffix("") / "run"
    if not args.reuse:
        shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    report = noise_refinement(args.langs.split(","), SHARED / "text" / "flores_sib200", out, args.share,
                              seeds=args.seeds, log=Console(width=140).print, refine=args.refine)
    seconds = time.perf_counter() - started
    for lang, r in report.items():
        print(f"{lang}: {r['true']} true + {r['mismatched']} mismatched: mismatched dropped "
              f"{r['mismatched_dropped']:.1%}, true kept {r['true_kept']:.1%}")
    print(f"refine stage in {seconds:.0f}s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".stage.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
