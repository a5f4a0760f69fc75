"""Label candidate pairs with an evaluator, resumably, and decide which to keep.

Labels go through a Journal per language (<lang>.labels.jsonl / <lang>.errors.jsonl), committed batch by
batch, so a run killed mid-iteration resumes where it stopped and never relabels a committed pair. A pair
whose grading failed is retried at once (`retries`); if it still fails it is written to errors with its
reason: backend errors are tried again on the next run, unparsable judgements stay set aside and counted.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable, Iterable

from xinstruct.config import LanguageQuota, RefineConfig
from xinstruct.io.journal import Journal, batches
from xinstruct.refine.ratings import GRADES

RETRYABLE = "backend_error"


def error_kind(error: str) -> str:
    return error.split(":", 1)[0]


def pair_key(item: dict) -> str:
    """A candidate's id and a hash of its content: a regenerated candidate with the same id is graded again."""
    blob = f"{item['instruction']}\x00{item['output']}".encode()
    return f"{item['id']}@{hashlib.sha256(blob).hexdigest()[:16]}"


def label_candidates(items: Iterable[dict], lang: str, evaluator, folder, iteration: int, batch_size: int = 64,
                     retries: int = 1, on_progress: Callable[[int], None] | None = None,
                     fingerprint: str | None = None) -> dict:
    """Grade every candidate not yet labelled in `folder` (by the same evaluator and settings: `fingerprint`);
    returns this run's counts."""
    stats: Counter = Counter()
    with Journal(folder, lang, ("labels", "errors"), fingerprint) as journal:
        done = {r["key"] for r in journal.records("labels")}
        done |= {r["key"] for r in journal.records("errors") if r["reason"] != RETRYABLE}

        def todo():
            for it in items:
                if pair_key(it) in done:
                    stats["skipped_done"] += 1
                    if on_progress:
                        on_progress(1)
                else:
                    yield it

        for batch in batches(todo(), batch_size):
            grades = evaluator.grade(batch)
            for _ in range(retries):
                failed = [i for i, g in enumerate(grades) if g.error]
                if not failed:
                    break
                stats["retried"] += len(failed)
                for i, g in zip(failed, evaluator.grade([batch[i] for i in failed])):
                    grades[i] = g
            labels, errors = [], []
            for item, g in zip(batch, grades):
                base = {"id": item["id"], "key": pair_key(item), "lang": lang, "iteration": iteration,
                        "evaluator": evaluator.id}
                if g.error:
                    errors.append({**base, "reason": error_kind(g.error), "error": g.error, "raw": g.reason})
                else:
                    label = {**base, "grade": g.grade, "probs": g.probs, "reason": g.reason}
                    if g.features is not None:
                        label["features"] = g.features
                    labels.append(label)
            journal.commit({"labels": labels, "errors": errors})
            stats["labelled"] += len(labels)
            stats.update(f"error:{e['reason']}" for e in errors)
            stats.update(f"grade:{r['grade']}" for r in labels)
            if on_progress:
                on_progress(len(batch))
    return dict(stats)


def p_best(label: dict) -> float:
    """P(best), or for a judge without probabilities 1/0.5/0 by grade, so quotas can still rank pairs."""
    if label.get("probs"):
        return label["probs"]["best"]
    return {"best": 1.0, "flawed": 0.5, "worst": 0.0}[label["grade"]]


def keep_rule(cfg: RefineConfig, lang: str) -> LanguageQuota:
    """The language's keep rule: its override where set, else the global one."""
    own = cfg.languages.get(lang, LanguageQuota())
    return LanguageQuota(
        min_best_prob=cfg.min_best_prob if own.min_best_prob is None else own.min_best_prob,
        min_keep=cfg.min_keep if own.min_keep is None else own.min_keep,
        min_keep_share=cfg.min_keep_share if own.min_keep_share is None else own.min_keep_share)


def select(candidates: list[dict], labels: dict[str, dict], rule: LanguageQuota,
           keep_flawed_above: float | None = None) -> list[dict]:
    """Keep 'best' pairs (at or above rule.min_best_prob), optionally confident 'flawed' ones, then top up
    to the language's quota with the highest-P(best) remaining labelled pairs, so no language is emptied."""
    kept, rest = [], []
    for cand in candidates:
        label = labels.get(pair_key(cand))
        if label is None:
            continue
        row = {**cand, "grade": label["grade"], "probs": label["probs"], "iteration": label["iteration"],
               "evaluator": label["evaluator"]}
        if label["grade"] == "best" and p_best(label) >= rule.min_best_prob:
            kept.append({**row, "kept_by": "best"})
        elif label["grade"] == "flawed" and keep_flawed_above is not None and p_best(label) >= keep_flawed_above:
            kept.append({**row, "kept_by": "flawed_above_threshold"})
        else:
            rest.append(row)
    quota = max(rule.min_keep, math.ceil(rule.min_keep_share * len(candidates)))
    if len(kept) < quota:
        rest.sort(key=lambda r: (-p_best(r), GRADES.index(r["grade"])))
        kept += [{**r, "kept_by": "quota"} for r in rest[:quota - len(kept)]]
    return kept


def compare(previous: dict[str, dict], current: dict[str, dict]) -> dict:
    """How labels moved between iterations, on the pairs labelled in both."""
    common = [i for i in current if i in previous]
    if not common:
        return {"compared": 0}
    rank = {g: k for k, g in enumerate(GRADES)}  # 0 = best
    before = [previous[i]["grade"] for i in common]
    after = [current[i]["grade"] for i in common]
    up = sum(rank[a] < rank[b] for b, a in zip(before, after))
    down = sum(rank[a] > rank[b] for b, a in zip(before, after))
    same = len(common) - up - down
    out = {"compared": len(common), "agreement": round(same / len(common), 4), "moved_up": up, "moved_down": down}
    if len(set(before) | set(after)) > 1:
        from sklearn.metrics import cohen_kappa_score
        out["cohen_kappa"] = round(float(cohen_kappa_score(before, after, labels=list(GRADES))), 4)
    return out
