"""How good is the Stage II grader? The experiment behind `xinstruct eval-evaluator`.

FLORES passages paired with the bundled English instructions (seed/parallel.py) give seed pairs in every
language; their synthetic rating set (refine/ratings.py: true / flawed / mismatched) keeps the seed split, so
the grader is fitted on the train ids and judged on the held-out ids it never saw. Reported per language and
as a mean (refine/quality.py): ROC-AUC of P(best) for true vs mismatched and true vs flawed pairs, 3-grade
accuracy, expected calibration error, the 3×3 confusion matrix, a bootstrap interval of the first AUC; three ways
to fit (pooled over languages, per language, pooled without the language: a new language's case), plus a 5-fold
cross-validation over all ids (150 pairs a language instead of 37, for firmer per-language figures); and an
ablation (drop one feature, one feature alone).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from xinstruct.config import EvaluatorConfig, model_config, validated_copy
from xinstruct.languages import PAPER_LANGUAGES
from xinstruct.models.llamacpp import LlamaCppBackend
from xinstruct.refine.evaluator import ScoringEvaluator
from xinstruct.refine.features import FeatureScorer, ScoreCache, references_by_language
from xinstruct.refine.grader import (
    DEFAULT_FEATURES,
    GraderModel,
    derive_keep_threshold,
    fit_grader,
    out_of_fold_probs,
)
from xinstruct.refine.quality import quality
from xinstruct.refine.ratings import GRADES, rating_set
from xinstruct.refine.training import train_evaluator
from xinstruct.seed.parallel import load_instructions, parallel_pairs

FITS = ("pooled", "per_language", "other_languages")


def flores_rating_rows(langs: list[str], passages: Path) -> list[dict]:
    instructions = load_instructions("bundled:flores")
    return [r for lang in langs for r in rating_set(parallel_pairs(instructions, passages, lang))]


def _mean(reports: dict[str, dict]) -> dict:
    keys = ("auc_true_vs_mismatched", "auc_true_vs_flawed", "accuracy", "ece")
    return {k: round(float(np.mean([r[k] for r in reports.values()])), 4) for k in keys}


def evaluate(x: np.ndarray, columns: list[str], rows: list[dict], langs: list[str], features: list[str],
             model_id: str, fit: str = "pooled", c: float = 1.0, interval: bool = False
             ) -> tuple[dict, dict[str, GraderModel]]:
    """Fit on the train rows as `fit` says, grade the held-out rows; per-language reports and their mean.
    `x` holds one column per name in `columns`; the grader uses `features` among them."""
    cols = [columns.index(f) for f in features]
    lang = np.array([r["lang"] for r in rows])
    train = np.array([r["split"] == "train" for r in rows])
    grades = [r["grade"] for r in rows]
    models: dict[str, GraderModel] = {}
    reports = {}
    for code in langs:
        if fit == "pooled":
            use = train
        elif fit == "per_language":
            use = train & (lang == code)
        else:
            use = train & (lang != code)
        key = "all" if fit == "pooled" else code
        if key not in models:
            models[key] = fit_grader(x[use][:, cols], [g for g, u in zip(grades, use) if u], features, model_id, c)
        test = (~train) & (lang == code)
        probs = models[key].predict_proba(x[test][:, cols])
        reports[code] = quality(probs, [r for r, t in zip(rows, test) if t], interval)
    return {"languages": reports, "mean": _mean(reports)}, models


def cross_validated(x: np.ndarray, columns: list[str], rows: list[dict], langs: list[str], features: list[str],
                    model_id: str, folds: int = 5) -> dict:
    """Pooled fits over `folds` folds of all ids (train and held-out; a seed pair's rows stay in one fold), each
    fold graded by the fit on the others: per-language figures over 150 pairs instead of 37, a firmer estimate
    of the same grader (the held-out figures stay the headline)."""
    cols = [columns.index(f) for f in features]
    fold = np.array([int(hashlib.sha1(r["seed_id"].encode()).hexdigest(), 16) % folds for r in rows])
    probs = out_of_fold_probs(x[:, cols], [r["grade"] for r in rows], fold, features, model_id)
    if np.isnan(probs).any():
        raise ValueError("the rating set must hold all three grades in every fold's fit")
    lang = np.array([r["lang"] for r in rows])
    reports = {code: quality(probs[lang == code], [r for r in rows if r["lang"] == code], interval=True)
               for code in langs}
    return {"languages": reports, "mean": _mean(reports)}


def ablation(x: np.ndarray, columns: list[str], rows: list[dict], langs: list[str], features: list[str],
             model_id: str) -> dict:
    """Pooled fits on `features`, with each one dropped, each one alone, and each other column added: what each
    feature carries."""
    def mean(names):
        return evaluate(x, columns, rows, langs, names, model_id)[0]["mean"]

    out = {"grader": mean(features)}
    for f in features:
        if len(features) > 1:
            out[f"without {f}"] = mean([g for g in features if g != f])
    for f in columns:
        if f not in features:
            out[f"with {f}"] = mean(features + [f])
    for f in columns:
        out[f"only {f}"] = mean([f])
    return out


def run_experiment(langs: list[str] | None = None, passages: Path = Path("../shared/data/text/flores_sib200"),
                   output_dir: Path = Path("runs/eval-evaluator"), features: list[str] | None = None,
                   candidates: list[str] | None = None, backend=None, cache: bool = True,
                   save_grader: Path | None = None, console=None) -> dict:
    """Score the features of every rating row (cached), fit, evaluate, ablate; writes quality.json.

    `features` are the grader's; `candidates` (default: the same) are the features the ablation compares, a
    superset. The grader fitted pooled on all languages' train ids is saved to `save_grader` when given."""
    console = console or Console()
    langs = list(langs or PAPER_LANGUAGES)
    features = list(features or DEFAULT_FEATURES)
    candidates = list(dict.fromkeys(list(candidates or []) + features))
    rows = flores_rating_rows(langs, passages)
    own = backend is None
    backend = backend or LlamaCppBackend(model_config())
    score_cache = ScoreCache(output_dir / "scores.jsonl" if cache else None)
    references = references_by_language(r for r in rows if r["kind"] == "true")
    scorer = FeatureScorer(backend, candidates, score_cache, references=references)
    timing, values = {}, []
    try:
        for code in langs:
            mine = [r for r in rows if r["lang"] == code]
            started = time.perf_counter()
            before = len(score_cache.data)
            feats = scorer.compute(mine)
            seconds = time.perf_counter() - started
            failed = [f.error for f in feats if f.error]
            if failed:
                raise RuntimeError(f"{len(failed)} {code} pairs could not be scored, e.g. {failed[0]}")
            values += [[f.values[c] for c in candidates] for f in feats]
            new = len(score_cache.data) - before
            timing[code] = {"pairs": len(mine), "new_requests": new, "seconds": round(seconds, 1),
                            "seconds_per_pair": round(seconds / len(mine), 3) if new else None}
            console.print(f"features {code}: {len(mine)} pairs, {new} new requests scored in {seconds:.1f}s")
    finally:
        if own:
            backend.close()
    x = np.array(values)
    model_id = backend.model_id
    report = {"features": features, "candidates": candidates, "model": model_id, "scoring": timing, "fits": {}}
    for fit in FITS if len(langs) > 1 else FITS[:2]:  # "other languages" needs another language
        report["fits"][fit], models = evaluate(x, candidates, rows, langs, features, model_id, fit,
                                               interval=fit == "pooled")
        if fit == "pooled":
            pooled = models["all"]
    report["fits"]["cross_validated"] = cross_validated(x, candidates, rows, langs, features, model_id)
    report["ablation"] = ablation(x, candidates, rows, langs, features, model_id)
    train = [i for i, r in enumerate(rows) if r["split"] == "train"]
    cols = [candidates.index(f) for f in features]
    pooled.info = {"fitted_on": "FLORES rating set, train ids", "languages": langs, "rows": len(train),
                   "heldout_mean": report["fits"]["pooled"]["mean"],
                   "keep_threshold": derive_keep_threshold(x[train][:, cols], [rows[i] for i in train], features,
                                                           model_id, 0.95)}
    report["grader"] = {"fingerprint": pooled.fingerprint, "coef": pooled.coef, "features": pooled.features}
    if save_grader:
        pooled.save(save_grader)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "quality.json").write_text(json.dumps(report, indent=1))
    print_report(report, console)
    return report


def print_report(report: dict, console) -> None:
    pooled = report["fits"]["pooled"]
    table = Table(title=f"grader on held-out FLORES rating pairs (pooled fit; features: "
                        f"{', '.join(report['features'])})")
    for col in ("lang", "n", "AUC true vs mismatched (95% CI)", "AUC true vs flawed", "accuracy", "ECE",
                "confusion (rows built best/flawed/worst → graded b f w)"):
        table.add_column(col)
    for code, r in {**pooled["languages"], "mean": pooled["mean"]}.items():
        conf = " | ".join(" ".join(str(r["confusion"][g][h]) for h in GRADES) for g in GRADES) if "confusion" in r \
            else ""
        ci = r.get("auc_true_vs_mismatched_ci")
        table.add_row(code, str(r.get("n", "")), f"{r['auc_true_vs_mismatched']:.3f}"
                      + (f" ({ci[0]:.2f}–{ci[1]:.2f})" if ci else ""),
                      f"{r['auc_true_vs_flawed']:.3f}", f"{r['accuracy']:.3f}", f"{r['ece']:.3f}", conf)
    console.print(table)
    fits = Table(title="how the grader is fitted (mean over languages)")
    for col in ("fit", "AUC t/m", "lowest AUC t/m", "AUC t/f", "accuracy", "ECE"):
        fits.add_column(col)
    for fit, r in report["fits"].items():
        m = r["mean"]
        low = min(r["languages"], key=lambda code: r["languages"][code]["auc_true_vs_mismatched"])
        fits.add_row(fit, f"{m['auc_true_vs_mismatched']:.3f}",
                     f"{r['languages'][low]['auc_true_vs_mismatched']:.3f} ({low})", f"{m['auc_true_vs_flawed']:.3f}",
                     f"{m['accuracy']:.3f}", f"{m['ece']:.3f}")
    console.print(fits)
    abl = Table(title="ablation (pooled fit, mean over languages)")
    for col in ("features", "AUC t/m", "AUC t/f", "accuracy", "ECE"):
        abl.add_column(col)
    for name, m in report["ablation"].items():
        abl.add_row(name, f"{m['auc_true_vs_mismatched']:.3f}", f"{m['auc_true_vs_flawed']:.3f}",
                    f"{m['accuracy']:.3f}", f"{m['ece']:.3f}")
    console.print(abl)
    per_pair = [t["seconds_per_pair"] for t in report["scoring"].values() if t["seconds_per_pair"]]
    if per_pair:
        console.print(f"scoring: {np.mean(per_pair):.2f} s a pair on average where scored now (other work may "
                      "share the machine)")


def run_trained(langs: list[str], passages: Path, evaluator: Path | None, output_dir: Path, epochs: float,
                console) -> dict:
    """The LoRA grader (kind `trained`): trained on the train ids' rating set unless given, graded on the
    held-out ids; slow (about 10 min of training on 2 cores for 3 languages)."""
    rows = flores_rating_rows(langs, passages)
    heldout = [r for r in rows if r["split"] == "heldout"]
    if evaluator is None:
        evaluator = output_dir / "evaluator" / "evaluator-lora.gguf"
        if not evaluator.exists():
            train_cfg = validated_copy(EvaluatorConfig().train, epochs=epochs)
            train = [r for r in rows if r["split"] == "train"]
            console.print(f"training the evaluator on {len(train)} graded FLORES train pairs ({epochs:g} epochs)")
            train_evaluator(train, train_cfg, output_dir / "evaluator")
    started = time.perf_counter()
    with LlamaCppBackend(model_config(lora=str(evaluator))) as backend:
        grades = ScoringEvaluator(backend).grade(heldout)
    seconds = time.perf_counter() - started
    failed = [g.error for g in grades if g.error]
    if failed:
        raise RuntimeError(f"{len(failed)} pairs could not be graded, e.g. {failed[0]}")
    probs = np.array([[g.probs[k] for k in GRADES] for g in grades])
    reports = {code: quality(probs[[r["lang"] == code for r in heldout]], [r for r in heldout if r["lang"] == code])
               for code in langs}
    report = {"kind": "trained", "evaluator": str(evaluator), "fits": {"trained": {"languages": reports,
                                                                                  "mean": _mean(reports)}},
              "seconds": round(seconds, 1)}
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "quality.json").write_text(json.dumps(report, indent=1))
    for code, r in {**reports, "mean": report["fits"]["trained"]["mean"]}.items():
        console.print(f"{code}: AUC true vs mismatched {r['auc_true_vs_mismatched']:.3f}, true vs flawed "
                      f"{r['auc_true_vs_flawed']:.3f}, accuracy {r['accuracy']:.3f}, ECE {r['ece']:.3f}")
    console.print(f"graded {len(heldout)} pairs in {seconds:.1f}s")
    return report
