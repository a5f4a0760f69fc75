"""Which graded pairs to keep: the keep rule, one instruction per document, quotas. Pure functions over labels.

A pair is kept when its P(best) reaches the language's `min_best_prob` (a judge that gives no probabilities:
when it says `best`): set in the config, or else the grader's own (a fitted grader derives it from the run's
rating set: refine/grader.derive_keep_threshold). Of a document's kept pairs only the best-graded `per_document`
stay: for supervised tuning, one text with two instructions is one answer to two questions. A language's quota (`min_keep`,
`min_keep_share`) then tops up with the highest P(best) pairs of documents that have none, so no language is
emptied. Every pair ends with `kept_by` (best / quota) or `drop_reason`, so the audit view can say why.
"""

from __future__ import annotations

import math
from collections import defaultdict

from xinstruct.config import LanguageQuota, RefineConfig
from xinstruct.refine.ratings import GRADES


def p_best(label: dict) -> float:
    """P(best), or for a judge without probabilities 1/0.5/0 by grade, so quotas can still rank pairs."""
    if label.get("probs"):
        return label["probs"]["best"]
    return {"best": 1.0, "flawed": 0.5, "worst": 0.0}[label["grade"]]


# The keep threshold where neither the config nor the grader gives one: the bundled grader's (experiments/noise.py
# DEFAULT_KEEP_RULE), for a judge's or trained grader's probabilities.
FALLBACK_MIN_BEST_PROB = 0.37


def keep_rule(cfg: RefineConfig, lang: str, grader_threshold: float | None = None) -> LanguageQuota:
    """The language's keep rule: its override where set, else the global one; the threshold, where the config
    leaves it open, the grader's own."""
    own = cfg.languages.get(lang, LanguageQuota())
    return LanguageQuota(
        min_best_prob=own.min_best_prob if own.min_best_prob is not None else threshold(cfg, grader_threshold),
        min_keep=cfg.min_keep if own.min_keep is None else own.min_keep,
        min_keep_share=cfg.min_keep_share if own.min_keep_share is None else own.min_keep_share)


def threshold(cfg: RefineConfig, grader_threshold: float | None = None) -> float:
    """The global keep threshold: the config's, else the grader's, else the fallback."""
    if cfg.min_best_prob is not None:
        return cfg.min_best_prob
    return FALLBACK_MIN_BEST_PROB if grader_threshold is None else grader_threshold


def passes(label: dict, rule: LanguageQuota) -> bool:
    if label.get("probs"):
        return label["probs"]["best"] >= rule.min_best_prob
    return label["grade"] == "best"


def _rank(row: dict) -> tuple:
    """Best first: higher P(best), then better grade, then the earlier candidate (stable across runs)."""
    return -p_best(row), GRADES.index(row["grade"]), row.get("candidate_index", 0), str(row["id"])


def select(graded: list[dict], rule: LanguageQuota, per_document: int | None = 1) -> tuple[list[dict], list[dict]]:
    """(kept, dropped) of one language's graded pairs (candidates with `grade`, `probs`); each dropped pair says
    why: `unsupported:name:<name>` (the text does not support a name it asks about), `grade:<grade>` (below the
    rule), `another_instruction_of_the_document` (per_document)."""
    passing, dropped = [], []
    for row in graded:
        if row.get("unsupported"):  # a name the text neither spells nor makes likely: never kept, not even by quota
            dropped.append({**row, "drop_reason": f"unsupported:{row['unsupported']}"})
        elif passes(row, rule):
            passing.append(row)
        else:
            dropped.append({**row, "drop_reason": f"grade:{row['grade']}"
                            + (f" (P(best) {p_best(row):.2f} < {rule.min_best_prob:g})" if row.get("probs") else "")})
    kept = []
    by_doc: dict[str, list[dict]] = defaultdict(list)
    for row in passing:
        by_doc[_doc(row)].append(row)
    for rows in by_doc.values():
        rows.sort(key=_rank)
        limit = per_document or len(rows)
        kept += [{**r, "kept_by": "best"} for r in rows[:limit]]
        dropped += [{**r, "drop_reason": "another_instruction_of_the_document"} for r in rows[limit:]]
    quota = max(rule.min_keep, math.ceil(rule.min_keep_share * len({_doc(r) for r in graded})))
    if len(kept) < quota:
        have = {_doc(r) for r in kept}
        spare = sorted((r for r in dropped if r["drop_reason"].startswith("grade:")), key=_rank)
        topped = []
        for r in spare:
            if len(kept) + len(topped) >= quota:
                break
            if per_document and _doc(r) in have:
                continue
            have.add(_doc(r))
            topped.append(r)
        ids = {id(r) for r in topped}
        dropped = [r for r in dropped if id(r) not in ids]
        kept += [{**{k: v for k, v in r.items() if k != "drop_reason"}, "kept_by": "quota"} for r in topped]
    order = {id_: i for i, id_ in enumerate(r["id"] for r in graded)}
    kept.sort(key=lambda r: order[r["id"]])
    return kept, dropped


def _doc(row: dict) -> str:
    return row.get("doc_key") or row.get("doc_id") or str(row["id"])


def compare(previous: dict[str, dict], current: dict[str, dict]) -> dict:
    """How labels moved between rounds, on the pairs labelled in both."""
    common = [i for i in current if i in previous]
    if not common:
        return {"compared": 0}
    rank = {g: k for k, g in enumerate(GRADES)}  # 0 = best
    before = [previous[i]["grade"] for i in common]
    after = [current[i]["grade"] for i in common]
    up = sum(rank[a] < rank[b] for b, a in zip(before, after, strict=True))
    down = sum(rank[a] > rank[b] for b, a in zip(before, after, strict=True))
    same = len(common) - up - down
    out = {"compared": len(common), "agreement": round(same / len(common), 4), "moved_up": up, "moved_down": down}
    if len(set(before) | set(after)) > 1:
        from sklearn.metrics import cohen_kappa_score
        out["cohen_kappa"] = round(float(cohen_kappa_score(before, after, labels=list(GRADES))), 4)
    return out
