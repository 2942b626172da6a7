"""Intervals over seeds: a sample's mean with its 95% interval, and a difference's."""

from __future__ import annotations

import math

import numpy as np
import scipy.stats


def interval(values: list[float]) -> dict:
    """``{"mean", "std", "n", "ci95"}`` of a sample; std and ci95 are None for n = 1.

    ci95 is the half-width of the 95% confidence interval of the mean (Student t).

    Example:
      >>> {k: round(v, 3) for k, v in interval([1.0, 2.0, 3.0]).items()}
      {'mean': 2.0, 'std': 1.0, 'n': 3, 'ci95': 2.484}
    """
    n = len(values)
    mean = float(np.mean(values))
    if n < 2:
        return {"mean": mean, "std": None, "n": n, "ci95": None}
    std = float(np.std(values, ddof=1))
    return {
        "mean": mean,
        "std": std,
        "n": n,
        "ci95": float(scipy.stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)),
    }


def difference(values: list[float], reference: list[float]) -> dict:
    """``{"mean", "ci95"}`` of mean(values) - mean(reference): Welch's 95% interval.

    The half-width is Student t at the Welch–Satterthwaite degrees of freedom
    times the standard error of the difference (unequal variances, the two
    samples independent); None when either sample has fewer than 2 values.

    Example:
      >>> {k: round(v, 3) for k, v in difference([3.0, 4.0, 5.0], [1.0, 2.0, 3.0]).items()}
      {'mean': 2.0, 'ci95': 2.267}
    """
    mean = float(np.mean(values) - np.mean(reference))
    if len(values) < 2 or len(reference) < 2:
        return {"mean": mean, "ci95": None}
    a, b = (np.var(x, ddof=1) / len(x) for x in (values, reference))
    if a + b == 0:
        return {"mean": mean, "ci95": 0.0}
    dof = (a + b) ** 2 / (a**2 / (len(values) - 1) + b**2 / (len(reference) - 1))
    return {"mean": mean, "ci95": float(scipy.stats.t.ppf(0.975, dof) * math.sqrt(a + b))}
