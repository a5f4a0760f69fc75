"""Grades from evidence: best / flawed / worst from a small multinomial logistic regression over the features of
refine/features.py, fitted on the synthetic rating set (true / flawed / mismatched) of the seed pairs.

The fitted model is a few dozen numbers kept as JSON (feature names, scaler, coefficients, intercepts, the model
that scored the features), so a run reuses it without refitting, a user can read it, and its fingerprint is
stable. Features are scored by a given base model: a grader fitted on one model's scores refuses another's.
The package ships one fitted on the FLORES train ids of the paper's 10 languages (`bundled`), which grades a
language with no seed pairs of its own.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from xinstruct.models.base import Backend
from xinstruct.refine.features import FEATURE_VERSION, FeatureScorer, ScoreCache, references_by_language
from xinstruct.refine.ratings import GRADES, Grade
from xinstruct.seed import bundled_path

# The features that earned their place on the FLORES rating set (docs/REFINEMENT.md, "Evaluator quality").
DEFAULT_FEATURES = ["pmi_per_token", "pmi_vs_references", "pmi_vs_references_total", "pmi_segment_min",
                    "pmi_segment_spread", "half_gap", "cut_mid_sentence"]
BUNDLED = "bundled"


@dataclass
class GraderModel:
    features: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[list[float]]  # one row per grade, in GRADES order
    intercept: list[float]
    model_id: str  # the backend model that scored the features
    feature_version: int = FEATURE_VERSION
    info: dict = field(default_factory=dict)  # what it was fitted on; not part of the fingerprint

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=float) - np.asarray(self.mean)) / np.asarray(self.scale)
        logits = z @ np.asarray(self.coef).T + np.asarray(self.intercept)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    @property
    def fingerprint(self) -> str:
        core = {k: v for k, v in asdict(self).items() if k != "info"}
        return hashlib.sha1(json.dumps(core, sort_keys=True).encode()).hexdigest()[:12]

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> GraderModel:
        if str(path) == BUNDLED:
            path = bundled_path("grader_flores.json")
        data = json.loads(Path(path).read_text())
        model = cls(**data)
        if model.feature_version != FEATURE_VERSION:
            raise ValueError(f"{path} was fitted on features v{model.feature_version}; this xinstruct computes "
                             f"v{FEATURE_VERSION}: refit it (xinstruct eval-evaluator --save-grader PATH)")
        return model


def fit_grader(x: np.ndarray, grades: list[str], features: list[str], model_id: str, c: float = 1.0,
               info: dict | None = None) -> GraderModel:
    """Standardise the features, fit a multinomial logistic regression (L2, strength 1/c)."""
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(x, dtype=float)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0  # a feature constant on the training set carries no weight, and must not divide by 0
    lr = LogisticRegression(C=c, max_iter=2000)
    lr.fit((x - mean) / scale, [GRADES.index(g) for g in grades])
    if list(lr.classes_) != [0, 1, 2]:
        raise ValueError("the rating set must hold all three grades")
    return GraderModel(features=list(features), mean=mean.tolist(), scale=scale.tolist(), coef=lr.coef_.tolist(),
                       intercept=lr.intercept_.tolist(), model_id=model_id, info=info or {})


def threshold_dropping(p_best: np.ndarray, share: float) -> float:
    """The lowest P(best) threshold (to 3 decimals, rounded up) under which at least `share` of these pairs fall."""
    p = np.sort(np.asarray(p_best, dtype=float))[::-1]
    passing = math.floor(round((1 - share) * len(p), 9))  # how many may reach the threshold
    if passing >= len(p):
        return 0.0
    return min(1.0, math.ceil((p[passing] + 1e-9) * 1000) / 1000)


def out_of_fold_probs(x: np.ndarray, grades: list[str], fold: np.ndarray, features: list[str], model_id: str,
                      fixed: tuple[np.ndarray, list[str]] | None = None) -> np.ndarray:
    """P(grade) of each row from a grader fitted on the rows of the other folds (and the `fixed` rows, which join
    every fit); NaN for a fold whose fit lacks one of the grades."""
    x = np.asarray(x, dtype=float)
    probs = np.full((len(x), len(GRADES)), np.nan)
    for j in np.unique(fold):
        fit_x, fit_g = x[fold != j], [g for g, f in zip(grades, fold, strict=True) if f != j]
        if fixed is not None:
            fit_x, fit_g = np.vstack([fit_x, fixed[0]]), fit_g + list(fixed[1])
        if set(fit_g) == set(GRADES):
            probs[fold == j] = fit_grader(fit_x, fit_g, features, model_id).predict_proba(x[fold == j])
    return probs


def derive_keep_threshold(x: np.ndarray, rows: list[dict], features: list[str], model_id: str, drop: float,
                          fixed: tuple[np.ndarray, list[str]] | None = None, folds: int = 5, seed: int = 0) -> dict:
    """The keep rule a fitted grader earns on its own rating rows (`grade`, `kind`, `lang`, `seed_id`): the lowest
    P(best) that drops `drop` of the mismatched pairs, judged out of fold (grouped by seed pair, so a pair's three
    rows are never split across a fit and its test) — in-sample probabilities flatter a grader fitted on a few
    dozen pairs a language. `fixed` rows (a round's self-labels) join every fit. Returns the threshold and, at it,
    the out-of-fold shares of mismatched dropped and true kept."""
    grades = [r["grade"] for r in rows]
    groups = [f"{r['lang']}:{r['seed_id']}" for r in rows]
    ids = sorted(set(groups))
    k = min(folds, len(ids))
    order = np.random.default_rng(seed).permutation(len(ids))
    fold_of = {ids[i]: j % k for j, i in enumerate(order)}
    fold = np.array([fold_of[g] for g in groups])
    p = out_of_fold_probs(x, grades, fold, features, model_id, fixed)[:, 0] if k > 1 else np.full(len(rows), np.nan)
    out_of_fold = not np.isnan(p).any()
    if not out_of_fold:  # too few seed pairs to hold some out: in sample, and said so
        fit_x, fit_g = (x, grades) if fixed is None else (np.vstack([x, fixed[0]]), grades + list(fixed[1]))
        p = fit_grader(fit_x, fit_g, features, model_id).predict_proba(x)[:, 0]
    kinds = np.array([r["kind"] for r in rows])
    mismatched, true = p[kinds == "mismatched"], p[kinds == "true"]
    t = threshold_dropping(mismatched, drop)
    return {"min_best_prob": t, "drop_target": drop, "out_of_fold": out_of_fold, "folds": k if out_of_fold else 1,
            "mismatched": len(mismatched), "mismatched_dropped": round(float((mismatched < t).mean()), 4),
            "true_kept": round(float((true >= t).mean()), 4)}


class LikelihoodEvaluator:
    """The default evaluator: features scored on the base model, grades from the fitted model.

    Each Grade keeps its feature values, so a label says why. A pair whose scoring failed gets an error and no
    grade; a backend that cannot score log-likelihoods is refused when the evaluator is built. Reference texts
    (the `references` features), when not given, are chosen per call among the texts being graded."""

    def __init__(self, backend: Backend, model: GraderModel, cache: ScoreCache | None = None,
                 references: dict[str, list[str]] | None = None):
        if model.model_id != backend.model_id:
            raise ValueError(f"the grader was fitted on features scored by {model.model_id}, but the backend is "
                             f"{backend.model_id}: fit one for this model (xinstruct eval-evaluator --save-grader)")
        self.model = model
        self.scorer = FeatureScorer(backend, model.features, cache, references=references)
        self.given_references = references is not None
        self.id = f"likelihood:{backend.model_id}:{model.fingerprint}"

    def grade(self, items: list[dict]) -> list[Grade]:
        if not self.given_references and "references" in self.scorer.families:
            self.scorer.references = references_by_language(items)
        rows = self.scorer.compute(items)
        ok = [i for i, r in enumerate(rows) if r.error is None]
        out = [Grade(error=r.error) for r in rows]
        if ok:
            x = np.array([[rows[i].values[f] for f in self.model.features] for i in ok])
            for i, p in zip(ok, self.model.predict_proba(x)):
                probs = {g: round(float(v), 6) for g, v in zip(GRADES, p)}
                out[i] = Grade(grade=GRADES[int(np.argmax(p))], probs=probs,
                               features={k: round(v, 4) for k, v in rows[i].values.items()})
        return out
