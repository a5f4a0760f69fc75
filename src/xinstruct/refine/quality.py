"""How good is an evaluator? On a held-out rating set: ROC-AUC of P(best) for true vs mismatched pairs, and
the 3×3 confusion matrix of its grades (rows: the grade the pair was built with; columns: the evaluator's)."""

from __future__ import annotations

from xinstruct.refine.ratings import GRADES


def roc_auc(positive: list[float], negative: list[float]) -> float:
    """P(score of a random positive > a random negative), ties counting half: the Mann-Whitney form."""
    from sklearn.metrics import roc_auc_score

    if not positive or not negative:
        return float("nan")
    return float(roc_auc_score([1] * len(positive) + [0] * len(negative), positive + negative))


def evaluator_quality(rows: list[dict], grades: list) -> dict:
    """Per language: n, errors, ROC-AUC (true vs mismatched, by P(best)), accuracy, confusion[gold][pred]."""
    report: dict[str, dict] = {}
    for row, g in zip(rows, grades):
        r = report.setdefault(row["lang"], {"n": 0, "errors": 0, "confusion": {a: {b: 0 for b in GRADES}
                                                                               for a in GRADES},
                                            "_pos": [], "_neg": []})
        r["n"] += 1
        if g.error:
            r["errors"] += 1
            continue
        r["confusion"][row["grade"]][g.grade] += 1
        if g.probs is not None:
            if row["kind"] == "true":
                r["_pos"].append(g.probs["best"])
            elif row["kind"] == "mismatched":
                r["_neg"].append(g.probs["best"])
    for r in report.values():
        r["auc_true_vs_mismatched"] = round(roc_auc(r.pop("_pos"), r.pop("_neg")), 4)
        graded = sum(sum(row.values()) for row in r["confusion"].values())
        r["accuracy"] = round(sum(r["confusion"][g][g] for g in GRADES) / graded, 4) if graded else float("nan")
    return report
