"""Stage II, X-Instruction refinement: k rounds of grade → keep → retrain, each round earning its place.

Round 1 grades every candidate with the first grader: by default a small logistic regression over
log-likelihood features (refine/grader.py), fitted on this run's synthetic rating set (refine/ratings.py: true /
flawed / mismatched pairs built from the seed pairs). Round t > 1 is the paper's refinement: the grader is
refitted (or, for `kind: trained`, the LoRA grader retrained) on the rating set plus round t-1's confident
labels, and grades again. Every round is checked on the held-out seed pairs' rating set (ROC-AUC true vs
mismatched and true vs flawed, 3-grade accuracy, calibration error): a round that improves neither the mean AUC
(by `min_gain`) nor the calibration is not kept, and the rounds stop there, saying why. With `retrain:
generator` the generator is retrained on seed + kept pairs and writes new candidates; that round counts as an
improvement when more documents end with a kept instruction.

Per-pair model work (features, or a judge's grades) is cached (refine/evidence.py), so rounds, reruns and
new candidates cost only what is new. Round t's files, in <run>/refine/iter-<t>/: labels/<lang>.labels.jsonl
(grade, probabilities, features), labels/<lang>.errors.jsonl, kept/<lang>.jsonl, dropped/<lang>.jsonl (with
reasons), summary.json. The last kept round's pairs go to <run>/refine/final/<lang>.jsonl (and
<lang>.dropped.jsonl) for Stage III.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
from rich.table import Table

from xinstruct.config import RunConfig, with_adapter
from xinstruct.core.layout import RunLayout
from xinstruct.io.files import read_json, read_jsonl, write_json, write_jsonl
from xinstruct.refine.evidence import DONE, pair_key
from xinstruct.refine.label import compare, keep_rule, select, threshold
from xinstruct.refine.quality import quality
from xinstruct.refine.ratings import GRADES, rating_set

AUCS = ("auc_true_vs_mismatched", "auc_true_vs_flawed")


# -- the rating set ------------------------------------------------------------------------------------------------

def seed_pairs(cfg: RunConfig, split: str | None = None) -> list[dict]:
    pairs = list(read_jsonl(RunLayout(cfg.out).seed_pairs))
    return [p for p in pairs if split is None or p["split"] == split]


def rating_rows(cfg: RunConfig) -> list[dict]:
    """The synthetic rating set of this run's seed pairs; `split` says which rows fit and which check."""
    ecfg = cfg.refine.evaluator
    return rating_set(seed_pairs(cfg), tuple(ecfg.degradations), ecfg.train.seed)


def heldout_quality(probs: np.ndarray, rows: list[dict], languages: list[str]) -> dict:
    """Per language and mean: the grader's figures on held-out rating rows (refine/quality.py)."""
    out = {}
    for lang in languages:
        mine = [i for i, r in enumerate(rows) if r["lang"] == lang]
        if mine and {rows[i]["kind"] for i in mine} >= {"true", "mismatched"}:
            out[lang] = quality(probs[mine], [rows[i] for i in mine])
    if out:
        out["mean"] = {k: round(float(np.nanmean([q[k] for q in out.values()])), 4)
                       for k in (*AUCS, "accuracy", "ece")}
    return out


WEAK_GRADER_AUC = 0.70


def weak_languages(heldout: dict) -> dict[str, float]:
    """Languages where the grader barely tells a true pair from a mismatched one on the held-out seed set
    (AUC below WEAK_GRADER_AUC): their grades are close to guesses, and the card and console say so."""
    return {lang: q["auc_true_vs_mismatched"] for lang, q in heldout.items()
            if lang != "mean" and q.get("auc_true_vs_mismatched", 1.0) < WEAK_GRADER_AUC}


def mean_auc(q: dict) -> float:
    m = q.get("mean", {})
    return float(np.mean([m[k] for k in AUCS])) if m else float("nan")


def round_improves(before: dict, after: dict, min_gain: float) -> tuple[bool, str]:
    """Does the new round's grader earn its place: a higher held-out mean AUC, or a lower calibration error
    without losing AUC?"""
    if not before.get("mean") or not after.get("mean"):
        return False, "no held-out seed pairs to check the round against"
    a0, a1 = mean_auc(before), mean_auc(after)
    e0, e1 = before["mean"]["ece"], after["mean"]["ece"]
    figures = f"held-out mean AUC {a0:.3f} → {a1:.3f}, calibration error {e0:.3f} → {e1:.3f}"
    if a1 >= a0 + min_gain and e1 <= e0 + 0.02:
        return True, figures
    if e1 <= e0 - min_gain and a1 >= a0 - min_gain / 2:
        return True, figures
    return False, figures


# -- one round -----------------------------------------------------------------------------------------------------

def read_candidates(folder: Path, lang: str, limit: int | None = None) -> list[dict]:
    path = RunLayout.candidates_in(folder, lang)
    rows = list(read_jsonl(path)) if path.exists() else []
    return rows[:limit] if limit else rows


def label(cand: dict, status: str | None, ev: dict, probs: np.ndarray | None, t: int, evaluator: str) -> dict:
    base = {"id": cand["id"], "key": pair_key(cand), "lang": cand["lang"], "iteration": t, "evaluator": evaluator}
    if status != DONE:
        reason = "not_scored" if status is None else ev.get("error", "error").split(":", 1)[0]
        return {**base, "error": reason, "detail": ev.get("error"), "raw": ev.get("raw")}
    extra = {"unsupported": ev["unsupported"]} if ev.get("unsupported") else {}
    if probs is not None:
        p = {g: round(float(v), 6) for g, v in zip(GRADES, probs, strict=True)}
        return {**base, "grade": GRADES[int(np.argmax(probs))], "probs": p, "features": ev.get("features"), **extra}
    return {**base, "grade": ev["grade"], "probs": ev.get("probs"), "reason": ev.get("reason"),
            "features": ev.get("features"), **extra}


def grade_candidates(candidates: list[dict], evidence: dict, grader, t: int, evaluator_id: str) -> list[dict]:
    """A label per candidate from its cached evidence: the fitted grader's probabilities over its features
    (likelihood), else the grade the evaluator gave."""
    labels = [None] * len(candidates)
    if grader is not None:
        scored = [i for i, c in enumerate(candidates) if evidence[pair_key(c)][0] == DONE]
        if scored:
            x = np.array([[evidence[pair_key(candidates[i])][1]["features"][f] for f in grader.features]
                          for i in scored])
            for i, p in zip(scored, grader.predict_proba(x), strict=True):
                labels[i] = label(candidates[i], DONE, evidence[pair_key(candidates[i])][1], p, t, evaluator_id)
    for i, c in enumerate(candidates):
        if labels[i] is None:
            status, ev = evidence[pair_key(c)]
            labels[i] = label(c, status, ev, None, t, evaluator_id)
    return labels


def keep(cfg: RunConfig, lang: str, candidates: list[dict], labels: list[dict], grader_threshold: float | None = None
         ) -> tuple[list[dict], list[dict]]:
    graded = [{**c, **{k: lb[k] for k in ("grade", "probs", "iteration", "evaluator", "features") if k in lb},
               **({"unsupported": lb["unsupported"]} if cfg.refine.drop_unsupported and lb.get("unsupported") else {})}
              for c, lb in zip(candidates, labels, strict=True) if "grade" in lb]
    return select(graded, keep_rule(cfg.refine, lang, grader_threshold), cfg.refine.per_document)


def keep_threshold_summary(cfg: RunConfig, derived: dict | None) -> dict:
    """The round's keep threshold and where it came from: the config, the grader (derived from the rating set, or
    carried by a loaded grader), or the fallback; per-language overrides listed."""
    rcfg = cfg.refine
    own = derived["min_best_prob"] if derived else None
    source = ("refine.min_best_prob" if rcfg.min_best_prob is not None else
              "fallback" if own is None else "grader" if "loaded_from" in derived else "derived")
    out = {"min_best_prob": threshold(rcfg, own), "source": source}
    if derived and source != "refine.min_best_prob":
        out["derivation"] = derived
    overrides = {lang: q.min_best_prob for lang, q in rcfg.languages.items()
                 if lang in cfg.languages and q.min_best_prob is not None}
    if overrides:
        out["languages"] = overrides
    return out


def describe_keep(k: dict) -> str:
    """One line on the keep threshold, for the round's printout and the report."""
    line = f"keep: P(best) >= {k['min_best_prob']:g}"
    d = k.get("derivation") or {}
    if k["source"] == "derived":
        how = (f"out of fold ({d['folds']} folds)" if d.get("out_of_fold") else
               "in sample (too few seed pairs to hold some out)")
        line += (f", derived: the lowest that drops {d['drop_target']:.0%} of the seed rating set's "
                 f"{d['mismatched']} mismatched pairs {how}; there it drops {d['mismatched_dropped']:.1%} and keeps "
                 f"{d['true_kept']:.1%} of the true pairs")
    elif k["source"] == "grader":
        line += f", saved with the grader {d['loaded_from']} (derived on the rating set it was fitted on)"
    elif k["source"] == "fallback":
        line += " (the threshold derived for the bundled grader on FLORES; this grader carries none of its own)"
    else:
        line += " (refine.min_best_prob)"
    if k.get("languages"):
        line += "; per language: " + ", ".join(f"{lang} {v:g}" for lang, v in k["languages"].items())
    return line


def self_labelled_rows(cfg: RunConfig, labels: dict[str, list[dict]], candidates: dict[str, list[dict]],
                       evidence: dict[str, dict]) -> list[tuple[dict, dict]]:
    """A round's confident labels as (training row, evidence): per language and grade the most confident first,
    at most `self_label_max_per_grade`, at P(grade) ≥ `self_label_min_confidence`."""
    out = []
    for lang, lbs in labels.items():
        by_key = {pair_key(c): c for c in candidates[lang]}
        sure = [lb for lb in lbs if lb.get("probs") and lb["probs"][lb["grade"]] >= cfg.refine.self_label_min_confidence]
        for grade in GRADES:
            mine = sorted((lb for lb in sure if lb["grade"] == grade), key=lambda lb: -lb["probs"][grade])
            for lb in mine[:cfg.refine.self_label_max_per_grade]:
                c = by_key[lb["key"]]
                out.append(({"lang": lang, "grade": grade, "kind": "self_label", "instruction": c["instruction"],
                             "output": c["output"], "split": "train"}, evidence[lang][lb["key"]][1]))
    return out


def write_round(layout: RunLayout, t: int, lang: str, labels: list[dict], kept: list[dict], dropped: list[dict]
                ) -> None:
    write_jsonl(layout.labels_file(t, lang), (lb for lb in labels if "grade" in lb))
    write_jsonl(layout.label_errors_file(t, lang), (lb for lb in labels if "grade" not in lb))
    write_jsonl(layout.kept_file(t, lang), kept)
    write_jsonl(layout.round_dropped_file(t, lang), dropped)


def language_summary(candidates: list[dict], labels: list[dict], kept: list[dict], dropped: list[dict]) -> dict:
    grades = Counter(lb["grade"] for lb in labels if "grade" in lb)
    errors = Counter(lb["error"] for lb in labels if "grade" not in lb)
    docs = {c.get("doc_key") or c.get("doc_id") for c in candidates}
    return {"candidates": len(candidates), "documents": len(docs), "labelled": sum(grades.values()),
            "errors": dict(errors), "grades": {g: grades.get(g, 0) for g in GRADES}, "kept": len(kept),
            "documents_with_kept": len({k.get("doc_key") or k.get("doc_id") for k in kept}),
            "kept_by": dict(Counter(k["kept_by"] for k in kept)),
            "dropped": dict(Counter(d["drop_reason"].split(" (")[0] for d in dropped))}


def print_round(summary: dict, log) -> None:
    t = summary["iteration"]
    state = "kept" if summary.get("accepted", True) else "not kept"
    table = Table(title=f"refinement round {t} ({state}): {summary['evaluator']}", title_justify="left")
    for col in ("lang", "candidates", *GRADES, "errors", "kept", "docs with one", "vs previous round"):
        table.add_column(col)
    for lang, s in summary["languages"].items():
        v = s.get("vs_previous", {})
        moved = (f"agree {v['agreement']:.0%}, up {v['moved_up']}, down {v['moved_down']}"
                 if v.get("compared") else "")
        table.add_row(lang, str(s["candidates"]), *(str(s["grades"][g]) for g in GRADES),
                      str(sum(s["errors"].values())), str(s["kept"]),
                      f"{s['documents_with_kept']}/{s['documents']}", moved)
    log(table)
    q = summary.get("heldout", {})
    if q.get("mean"):
        m = q["mean"]
        per_lang = ", ".join(f"{k} {v['auc_true_vs_mismatched']:.2f}" for k, v in q.items() if k != "mean")
        log(f"  held-out seed rating set: AUC true/mismatched {m['auc_true_vs_mismatched']:.3f} ({per_lang}), "
            f"true/flawed {m['auc_true_vs_flawed']:.3f}, accuracy {m['accuracy']:.3f}, "
            f"calibration error {m['ece']:.3f}")
        for lang, auc in weak_languages(q).items():
            log(f"  [yellow]{lang}: the grader barely tells true from mismatched held-out pairs (AUC {auc:.2f} on "
                f"{q[lang]['n'] // 3} seed pairs); its {lang} grades are close to guesses — score with a stronger "
                "model (README)[/yellow]")
    if summary.get("keep"):
        log(f"  {describe_keep(summary['keep'])}")
    if summary.get("decision"):
        log(f"  {summary['decision']}")


# -- the rounds ----------------------------------------------------------------------------------------------------

class Rounds:
    """Runs the k rounds of one refinement for a RefineStage (which owns evidence, caches and backends)."""

    def __init__(self, stage):
        self.stage, self.cfg, self.ctx = stage, stage.cfg, stage.ctx
        self.layout = stage.layout

    def run(self) -> dict:
        cfg, ctx = self.cfg, self.ctx
        rows = rating_rows(cfg)
        candidates = {lang: read_candidates(self.layout.candidates, lang, ctx.limit) for lang in cfg.languages}
        rounds, accepted = [], None
        previous_labels: dict[str, dict] = {}
        train_extra: list[tuple[dict, dict]] = []
        for t in range(1, cfg.refine.iterations + 1):
            started = time.perf_counter()
            folder = self.layout.round_dir(t)
            if t > 1:
                reason = self.why_not_retrain(rounds[-1])
                if reason:
                    ctx.log(f"[dim]refine {t}: not run — {reason}[/dim]")
                    shutil.rmtree(folder, ignore_errors=True)
                    break
                if cfg.refine.retrain in ("generator", "both"):
                    candidates = self.stage.regenerate(t, accepted["kept_files"])
            rg = self.stage.round_evaluator(t, rows, candidates, train_extra)
            grader, evaluator_id, evidence = rg.grader, rg.id, rg.evidence
            summary = {"iteration": t, "evaluator": evaluator_id, "languages": {},
                       "heldout": heldout_quality(rg.heldout_probs, rg.heldout_rows, cfg.languages),
                       "keep": keep_threshold_summary(cfg, rg.keep_threshold)}
            labels = {}
            for lang in cfg.languages:
                labels[lang] = grade_candidates(candidates[lang], evidence[lang], grader, t, evaluator_id)
                kept, dropped = keep(cfg, lang, candidates[lang], labels[lang],
                                     (rg.keep_threshold or {}).get("min_best_prob"))
                write_round(self.layout, t, lang, labels[lang], kept, dropped)
                summary["languages"][lang] = language_summary(candidates[lang], labels[lang], kept, dropped)
                if previous_labels:
                    summary["languages"][lang]["vs_previous"] = compare(
                        previous_labels.get(lang, {}), {lb["key"]: lb for lb in labels[lang] if "grade" in lb})
            if t > 1:
                ok, figures = self.judge_round(rounds[-1], summary)
                summary["accepted"] = ok
                summary["decision"] = (f"round {t} kept: {figures}" if ok else
                                       f"round {t} not kept, refinement stops: {figures}; round {accepted['iteration']}'s "
                                       "grades stand")
            else:
                summary["accepted"] = True
            summary["seconds"] = round(time.perf_counter() - started, 1)
            summary["kept_files"] = str(self.layout.round_kept(t))
            write_json(RunLayout.summary_in(folder), summary)
            rounds.append(summary)
            print_round(summary, ctx.log)
            if not summary["accepted"]:
                break
            accepted = summary
            previous_labels = {lang: {lb["key"]: lb for lb in lbs if "grade" in lb} for lang, lbs in labels.items()}
            train_extra = self_labelled_rows(cfg, labels, candidates, evidence)
        for t in range(len(rounds) + 1, cfg.refine.iterations + 1):  # rounds of an earlier, longer refinement
            shutil.rmtree(self.layout.round_dir(t), ignore_errors=True)
        standing = accepted["iteration"]
        for lang in cfg.languages:
            write_jsonl(self.layout.refined_file(lang), read_jsonl(self.layout.kept_file(standing, lang)))
            write_jsonl(self.layout.refined_dropped_file(lang),
                        read_jsonl(self.layout.round_dropped_file(standing, lang)))
        return {"iterations": [{k: r[k] for k in ("iteration", "evaluator", "accepted", "heldout", "keep") if k in r}
                               | {"decision": r.get("decision")}
                               | {lang: {k: s[k] for k in ("grades", "kept", "errors", "documents_with_kept")}
                                  for lang, s in r["languages"].items()} for r in rounds],
                "final_round": accepted["iteration"],
                "final": {lang: accepted["languages"][lang]["kept"] for lang in cfg.languages},
                "unresolved": {lang: accepted["languages"][lang]["errors"].get("backend_error", 0)
                               + accepted["languages"][lang]["errors"].get("not_scored", 0) for lang in cfg.languages}}

    def why_not_retrain(self, last: dict) -> str | None:
        """Why round t would repeat round t-1, so it is not run."""
        cfg = self.cfg
        if cfg.refine.retrain == "none":
            return "refine.retrain is none: nothing is retrained between rounds"
        if cfg.refine.retrain == "evaluator" and cfg.refine.evaluator.kind == "judge":
            return "a prompted judge is not retrained between rounds (retrain: generator retrains the generator)"
        learns = cfg.refine.retrain in ("evaluator", "both") and cfg.refine.evaluator.kind != "judge"
        if learns and not any(s["grades"][g] for s in last["languages"].values() for g in GRADES):
            return f"round {last['iteration']} labelled nothing to learn from"
        return None

    def judge_round(self, before: dict, after: dict) -> tuple[bool, str]:
        """Did round t earn its cost? Its grader on held-out seed pairs, or (generator retrained) more documents
        with a kept instruction."""
        retrain = self.cfg.refine.retrain
        checks = []
        if retrain in ("evaluator", "both") and self.cfg.refine.evaluator.kind != "judge":
            checks.append(round_improves(before["heldout"], after["heldout"], self.cfg.refine.min_gain))
        if retrain in ("generator", "both"):
            def share(s):
                docs = sum(x["documents"] for x in s["languages"].values())
                return sum(x["documents_with_kept"] for x in s["languages"].values()) / max(1, docs)
            b, a = share(before), share(after)
            checks.append((a > b, f"documents with a kept instruction {b:.1%} → {a:.1%}"))
        return any(ok for ok, _ in checks), "; ".join(figures for _, figures in checks)


def last_round(out: Path) -> dict:
    """The summary of the refinement round whose grades stand (a later round that did not improve is not it)."""
    kept = [s for s in (read_json(p, {}) or {} for p in RunLayout(out).round_summaries()) if s.get("accepted", True)]
    return kept[-1] if kept else {}


def unresolved_of(summary: dict) -> dict[str, int]:
    n = sum(summary.get("unresolved", {}).values())
    return {"refine:backend_error": n} if n else {}


def evaluator_backend(cfg: RunConfig, trained_dir: Path | None):
    """The grading backend; a trained evaluator's adapter in the form the backend loads."""
    model = cfg.refine.evaluator.model
    if trained_dir is None:
        return model
    return with_adapter(model, trained_dir / "evaluator-lora.gguf", trained_dir / "adapter",
                        "the evaluator trained in this refinement round")
