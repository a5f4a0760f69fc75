"""Length-controlled win rate, the idea of alpaca_eval 2 (Dubois et al., 2024): judges prefer longer answers, so
regress the judged preference on the length difference and report the preference the fit gives at equal length.

The model, per judged item i (a question's turn): p_i = σ(θ + φ · tanh(Δ_i / s)), where Δ_i is the focus answer's
length minus the other's (characters) and s the standard deviation of Δ; the preference is 1 for a win, ½ for a
tie, 0 for a loss (alpaca_eval's soft labels). The length-controlled rate is σ(θ), the raw rate the mean preference.
alpaca_eval's GLM also has an instruction-difficulty term, fitted across the many models of its leaderboard; with
the few systems of one evaluation there is nothing to fit it on, so it is left out. Written here because
alpaca_eval's fit works on its own annotation files; the fit itself is two parameters for scipy.
"""

from __future__ import annotations

import math
import random
import statistics

PREFERENCE = {"win": 1.0, "tie": 0.5, "loss": 0.0}
L2 = 1e-2  # a light penalty, so that a preference that length separates perfectly still has a finite fit


def _fit(prefs: list[float], x: list[float]) -> tuple[float, float]:
    """(θ, φ) maximising the soft-label log-likelihood (minus a light L2 penalty)."""
    import numpy as np
    from scipy.optimize import minimize

    y, xs = np.asarray(prefs, float), np.asarray(x, float)

    def loss(w):
        z = w[0] + w[1] * xs
        # log σ(z) and log σ(-z), stable for large |z|
        return float(np.sum(y * np.logaddexp(0, -z) + (1 - y) * np.logaddexp(0, z)) + L2 * (w @ w))

    def grad(w):
        p = 1 / (1 + np.exp(-(w[0] + w[1] * xs)))
        g = p - y
        return np.array([g.sum(), (g * xs).sum()]) + 2 * L2 * w

    result = minimize(loss, np.zeros(2), jac=grad, method="L-BFGS-B")
    return float(result.x[0]), float(result.x[1])


def _features(length_diffs: list[float]) -> list[float]:
    s = statistics.pstdev(length_diffs) if len(length_diffs) > 1 else 0.0
    return [math.tanh(d / s) if s > 0 else 0.0 for d in length_diffs]


def length_controlled(verdicts: list[str], length_diffs: list[float], resamples: int = 500, seed: int = 0) -> dict:
    """Raw and length-controlled preference rates of the focus system over judged items (verdict win/tie/loss,
    Δ length), each with a 95% bootstrap interval over items; rates are None when nothing was judged."""
    items = [(PREFERENCE[v], d) for v, d in zip(verdicts, length_diffs, strict=True) if v in PREFERENCE]
    if not items:
        return {"n": 0, "win_rate": None, "win_rate_ci": None, "lc_win_rate": None, "lc_win_rate_ci": None,
                "length_coef": None, "mean_length_diff": None}

    def rates(sample):
        prefs, diffs = [p for p, _ in sample], [d for _, d in sample]
        theta, phi = _fit(prefs, _features(diffs))
        return statistics.fmean(prefs), 1 / (1 + math.exp(-theta)), phi

    raw, lc, phi = rates(items)
    rng = random.Random(seed)
    boots = [rates([items[rng.randrange(len(items))] for _ in items]) for _ in range(resamples)]

    def ci(values):
        values = sorted(values)
        return [round(values[int(0.025 * (len(values) - 1))], 4), round(values[int(0.975 * (len(values) - 1))], 4)]

    return {"n": len(items), "win_rate": round(raw, 4), "win_rate_ci": ci([b[0] for b in boots]),
            "lc_win_rate": round(lc, 4), "lc_win_rate_ci": ci([b[1] for b in boots]), "length_coef": round(phi, 4),
            "mean_length_diff": round(statistics.fmean(d for _, d in items), 1)}
