"""Does Stage II drop what it should? Held-out FLORES pairs (known good) mixed with deliberately mismatched ones
(a text given another passage's instruction), graded by an evaluator alone (`noise_injection`) or through the
refine stage itself (`noise_refinement`): the share of mismatched pairs dropped and of true pairs kept.
benchmarks/bench_noise.py runs them; docs/RESULTS.md has the figures.
"""

from __future__ import annotations

import random
from pathlib import Path

from xinstruct.config import RunConfig
from xinstruct.core.layout import RunLayout
from xinstruct.core.stage import RunContext
from xinstruct.io.files import read_jsonl, write_jsonl
from xinstruct.refine.ratings import GRADES
from xinstruct.refine.stage import RefineStage
from xinstruct.seed.parallel import load_instructions, parallel_pairs

KEEP_RULES = {
    "P(best) >= 0.35": lambda p: p[0] >= 0.35,
    "P(best) >= 0.37": lambda p: p[0] >= 0.37,
    "grade best": lambda p: p[0] == max(p),
    "P(best) >= 0.3": lambda p: p[0] >= 0.3,
    "not worst (best or flawed)": lambda p: p[2] < max(p),
}
# The proposed keep rule: the lowest P(best) threshold that drops >= 95% of the mismatched pairs of the FLORES
# rating set's train split under the bundled grader (0.367 with the scoring-prompt grader: 95.0% dropped, 82.7% of
# true kept there; 0.35 under the generation-prompt grader before it). Re-derive it when the bundled grader is
# refitted. In refine: the threshold of the bundled grader and of evaluators that carry none (refine/label.py
# FALLBACK_MIN_BEST_PROB); a grader fitted in the run derives its own the same way, out of fold.
DEFAULT_KEEP_RULE = "P(best) >= 0.37"


def noise_injection(evaluator, lang: str, passages: Path, share: float = 0.3, limit: int | None = None,
                    seed: int = 0, rule: str = DEFAULT_KEEP_RULE) -> dict:
    """Issue 11's check: a language's held-out FLORES pairs (known good), mixed with deliberately mismatched ones
    (a text with another document's instruction) to make `share` of the whole; everything is graded and the
    keep rule applied. Returns the share of mismatched pairs dropped and of true pairs kept, under `rule` and
    under each of KEEP_RULES."""
    instructions = load_instructions("bundled:flores")
    good = parallel_pairs(instructions, passages, lang, split="heldout")[:limit]
    others = parallel_pairs(instructions, passages, lang)
    rng = random.Random(seed)
    n_bad = round(share * len(good) / (1 - share))
    bad = []
    for k, pair in enumerate(rng.sample(good, min(n_bad, len(good)))):
        other = rng.choice([o for o in others if o["id"] != pair["id"]])
        bad.append({**pair, "id": f"{pair['id']}#mismatched{k}", "instruction": other["instruction"]})
    grades = evaluator.grade(good + bad)
    probs = [[g.probs[k] for k in GRADES] if g.error is None else None for g in grades]
    is_true = [True] * len(good) + [False] * len(bad)

    def figures(keep) -> dict:
        kept = [p is not None and keep(p) for p in probs]
        return {"mismatched_dropped": round(1 - sum(k for k, t in zip(kept, is_true) if not t) / max(1, len(bad)), 4),
                "true_kept": round(sum(k for k, t in zip(kept, is_true) if t) / max(1, len(good)), 4)}

    return {"lang": lang, "true": len(good), "mismatched": len(bad), "rule": rule, **figures(KEEP_RULES[rule]),
            "errors": sum(p is None for p in probs), "rules": {name: figures(f) for name, f in KEEP_RULES.items()}}


def noise_refinement(langs: list[str], passages: Path, out: Path, share: float = 0.3, seeds: int | None = None,
                     documents: int | None = None, seed: int = 0, log=None, refine: dict | None = None) -> dict:
    """Issue 11's check through the refine stage itself, with its defaults: a run whose seed pairs are the FLORES
    train pairs (at most `seeds` per language) and whose candidates are held-out FLORES passages, `share` of them
    given another passage's instruction (each on a document of its own, so one-instruction-per-document cannot
    drop it for the stage); `refine` overrides refine settings. Returns per language and over all: the share of
    mismatched candidates dropped and of true ones kept."""
    instructions = load_instructions("bundled:flores")
    layout = RunLayout(out)
    rng = random.Random(seed)
    seed_rows, truth = [], {}
    for lang in langs:
        train = parallel_pairs(instructions, passages, lang, "train")
        heldout_pairs = parallel_pairs(instructions, passages, lang, "heldout")
        # the held-out seed pairs stay in the rating set (they check each round); candidates reuse their texts
        seed_rows += (train[:seeds] if seeds else train) + heldout_pairs
        heldout = heldout_pairs[:documents]
        n_bad = round(share * len(heldout))
        order = rng.sample(range(len(heldout)), len(heldout))
        bad = set(order[:n_bad])
        candidates = []
        for i, pair in enumerate(heldout):
            instruction = pair["instruction"]
            if i in bad:
                instruction = rng.choice([o["instruction"] for o in train if o["instruction"] != instruction])
            candidates.append({"id": f"{pair['id']}#c0", "doc_id": pair["id"], "doc_key": pair["id"], "lang": lang,
                               "candidate_index": 0, "instruction": instruction, "output": pair["output"]})
            truth[candidates[-1]["id"]] = (lang, i not in bad)
        write_jsonl(layout.candidates_file(lang), candidates)
    write_jsonl(layout.seed_pairs, seed_rows)
    cfg = RunConfig(output_dir=str(out), languages=list(langs), refine=refine or {})
    RefineStage(RunContext(cfg, log=log or (lambda *_: None), quiet=True)).run()
    report = {}
    for lang in [*langs, "all"]:
        kept = {r["id"] for code in (langs if lang == "all" else [lang])
                for r in read_jsonl(layout.refined_file(code))}
        ids = [i for i, (code, _) in truth.items() if lang in ("all", code)]
        good = [i for i in ids if truth[i][1]]
        bad = [i for i in ids if not truth[i][1]]
        report[lang] = {"true": len(good), "mismatched": len(bad),
                        "mismatched_dropped": round(1 - sum(i in kept for i in bad) / max(1, len(bad)), 4),
                        "true_kept": round(sum(i in kept for i in good) / max(1, len(good)), 4)}
    return report
