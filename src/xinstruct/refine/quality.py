"""How good is a grader? Its figures on held-out rating rows (true / flawed / mismatched pairs of known grade):
ROC-AUC of P(best) for true vs mismatched and true vs flawed pairs, 3-grade accuracy, expected calibration
error and the 3×3 confusion matrix (rows: the grade the pair was built with; columns: the grader's). Each
refinement round is judged by them (refine/loop.py), and so is the grader in `xinstruct eval-evaluator`
(experiments/eval_evaluator.py)."""

from __future__ import annotations

import itertools

import numpy as np

from xinstruct.refine.ratings import GRADES


def roc_auc(positive: list[float], negative: list[float]) -> float:
    """P(score of a random positive > a random negative), ties counting half: the Mann-Whitney form."""
    from sklearn.metrics import roc_auc_score  # lazy: a second to import, and most commands never grade

    if not positive or not negative:
        return float("nan")
    return float(roc_auc_score([1] * len(positive) + [0] * len(negative), positive + negative))


def expected_calibration_error(probs: np.ndarray, gold: np.ndarray, bins: int = 10) -> float:
    """Mean |accuracy − confidence| over equal-width confidence bins, weighted by the bins' sizes."""
    conf = probs.max(axis=1)
    right = probs.argmax(axis=1) == gold
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            total += inside.mean() * abs(right[inside].mean() - conf[inside].mean())
    return float(total)


def bootstrap_auc_interval(pos: np.ndarray, neg: np.ndarray, draws: int = 1000, seed: int = 0) -> list[float]:
    """95% interval of the true-vs-mismatched AUC over resampled seed pairs (a pair's true and mismatched rows are
    drawn together): how far 37 pairs a language let one trust the second decimal."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    n = len(pos)
    aucs = []
    for _ in range(draws):
        k = rng.integers(0, n, n)
        aucs.append(roc_auc_score(np.r_[np.ones(n), np.zeros(n)], np.r_[pos[k], neg[k]]))
    return [round(float(v), 3) for v in np.percentile(aucs, [2.5, 97.5])]


def quality(probs: np.ndarray, rows: list[dict], interval: bool = False) -> dict:
    """The grader's figures on one language's held-out rows (with the bootstrap interval of the first AUC when
    `interval`: it costs a thousand AUCs)."""
    kinds = np.array([r["kind"] for r in rows])
    gold = np.array([GRADES.index(r["grade"]) for r in rows])
    best = probs[:, 0]
    pred = probs.argmax(axis=1)
    confusion = {g: {h: int(((gold == a) & (pred == b)).sum()) for b, h in enumerate(GRADES)}
                 for a, g in enumerate(GRADES)}
    flawed = (kinds != "true") & (kinds != "mismatched")
    out = {"n": len(rows),
           "auc_true_vs_mismatched": roc_auc(best[kinds == "true"].tolist(), best[kinds == "mismatched"].tolist()),
           "auc_true_vs_flawed": roc_auc(best[kinds == "true"].tolist(), best[flawed].tolist()),
           "accuracy": float((pred == gold).mean()),
           "ece": expected_calibration_error(probs, gold),
           "confusion": confusion}
    if interval:
        true_of = {r["seed_id"]: p for r, p in zip(rows, best) if r["kind"] == "true"}
        paired = [(true_of[r["seed_id"]], p) for r, p in zip(rows, best)
                  if r["kind"] == "mismatched" and r["seed_id"] in true_of]
        if len(paired) > 1:
            out["auc_true_vs_mismatched_ci"] = bootstrap_auc_interval(*map(np.array, zip(*paired)))
    for kind in sorted(set(kinds[flawed])):
        out[f"auc_true_vs_{kind}"] = roc_auc(best[kinds == "true"].tolist(), best[kinds == kind].tolist())
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}
