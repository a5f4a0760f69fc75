"""How diverse a selection is: coverage of the pool's clusters (entropy as a share of its maximum) and the mean
pairwise cosine distance of its instructions, each beside random subsets of the same size from the same pool."""

from __future__ import annotations

import math

import numpy as np

DIVERSITY_HEADER = ("lang", "pool", "selected", "clusters", "entropy share", "random (sd)", "cosine distance",
                    "random (sd)", "verdict")
DIVERSITY_TARGET = "target: entropy share ≥ 0.95 and above random; cosine distance above random"


def verdict(d: dict) -> str:
    """Does a language's selection meet DIVERSITY_TARGET (d: diversity_report's figures)?"""
    ok = (d["entropy_fraction"] >= 0.95 and d["entropy_fraction"] > d["random_entropy_fraction"]
          and d["mean_cosine_distance"] > d["random_mean_cosine_distance"])
    return "selection = whole pool" if d["selected"] == d["pool"] else "ok" if ok else "below target"


def diversity_row(lang: str, d: dict) -> tuple[str, ...]:
    """One language's row under DIVERSITY_HEADER."""
    if not d.get("selected"):
        return (lang, str(d["pool"]), "0", "", "", "", "", "", "empty")
    return (lang, str(d["pool"]), str(d["selected"]), str(d["clusters"]), f"{d['entropy_fraction']:.3f}",
            f"{d['random_entropy_fraction']:.3f} ({d['random_entropy_fraction_sd']:.3f})",
            f"{d['mean_cosine_distance']:.4f}",
            f"{d['random_mean_cosine_distance']:.4f} ({d['random_mean_cosine_distance_sd']:.4f})", verdict(d))


def coverage_entropy(labels: np.ndarray) -> float:
    """Shannon entropy (nats) of the selection's distribution over clusters."""
    if len(labels) == 0:
        return 0.0
    _, counts = np.unique(labels, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def max_entropy(n_selected: int, k: int) -> float:
    """The most a selection of n can reach over k clusters: every cluster equally, or n clusters once each."""
    return math.log(max(1, min(n_selected, k)))


def mean_cosine_distance(x: np.ndarray) -> float:
    """1 − mean cosine over all pairs i≠j of unit vectors, exactly, in O(n·d): Σ_i≠j x_i·x_j = |Σx|² − n."""
    n = len(x)
    if n < 2:
        return 0.0
    total = x.astype(np.float64).sum(0)
    mean_cos = (float(total @ total) - n) / (n * (n - 1))
    return 1.0 - mean_cos


def diversity_report(embeddings: np.ndarray, labels: np.ndarray, k: int, selected: np.ndarray,
                     draws: int = 20, seed: int = 0) -> dict:
    """The selection's figures and those of `draws` random same-size subsets of the pool (mean and sd)."""
    n = len(selected)
    top = max_entropy(n, k)
    rng = np.random.default_rng(seed)

    def figures(idx: np.ndarray) -> tuple[float, float]:
        return (coverage_entropy(labels[idx]) / top if top else 1.0), mean_cosine_distance(embeddings[idx])

    sel_entropy, sel_distance = figures(selected)
    random = np.array([figures(rng.choice(len(labels), size=n, replace=False)) for _ in range(draws)])
    return {"pool": len(labels), "selected": int(n), "clusters": int(k),
            "entropy_fraction": sel_entropy, "random_entropy_fraction": float(random[:, 0].mean()),
            "random_entropy_fraction_sd": float(random[:, 0].std()),
            "mean_cosine_distance": sel_distance, "random_mean_cosine_distance": float(random[:, 1].mean()),
            "random_mean_cosine_distance_sd": float(random[:, 1].std()), "random_draws": draws}
