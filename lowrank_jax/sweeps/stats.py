"""Intervals over seeds (a sample's mean, a difference's) and the verdicts read from them."""

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
    return welch(interval(values), interval(reference))


def welch(sample: dict, reference: dict) -> dict:
    """``difference`` from two samples' summaries (``interval``'s mean, std and n), for
    results files that keep the summary of each side instead of its values."""
    mean = sample["mean"] - reference["mean"]
    if sample["n"] < 2 or reference["n"] < 2:
        return {"mean": mean, "ci95": None}
    a, b = (x["std"] ** 2 / x["n"] for x in (sample, reference))
    if a + b == 0:
        return {"mean": mean, "ci95": 0.0}
    dof = (a + b) ** 2 / (a**2 / (sample["n"] - 1) + b**2 / (reference["n"] - 1))
    return {"mean": mean, "ci95": float(scipy.stats.t.ppf(0.975, dof) * math.sqrt(a + b))}


def goal_verdict(values: list[float], goal: float) -> str:
    """Whether a goal on the mean is met: the one rule every generated table uses.

    ``"reached"`` when the lower end of the 95% interval of the mean is at or above
    ``goal``; ``"not reached"`` when its upper end is below it; otherwise
    ``"undecided"``. One value has no interval: ``"undecided (n = 1)"``.

    Example:
      >>> goal_verdict([0.97, 0.971, 0.972], 0.95), goal_verdict([0.94, 0.942, 0.943], 0.95)
      ('reached', 'not reached')
      >>> goal_verdict([0.90, 0.99], 0.95), goal_verdict([0.99], 0.95)
      ('undecided', 'undecided (n = 1)')
    """
    stats = interval(values)
    if stats["ci95"] is None:
        return "undecided (n = 1)"
    if stats["mean"] - stats["ci95"] >= goal:
        return "reached"
    return "not reached" if stats["mean"] + stats["ci95"] < goal else "undecided"


def equivalence(sample: dict, reference: dict, margin: float) -> dict:
    """How a sample compares with a reference (two ``interval`` summaries over seeds).

    Returns ``{"verdict", "low", "high"}``: the ends of Welch's 95% interval of the
    difference of the means (``welch``; None without one) and the verdict:
    ``"matches"`` when that interval lies inside ``[-margin, margin]`` (an
    equivalence margin chosen before the runs); else ``"lower"`` / ``"higher"``
    when it excludes 0; else ``"no difference detected"``. A sample of one value
    has no interval and is never called a match: ``"n = 1"``.

    Example:
      >>> full = interval([0.90, 0.91, 0.92])
      >>> equivalence(interval([0.909, 0.911, 0.91]), interval([0.91, 0.909, 0.911]),
      ...             0.01)["verdict"]
      'matches'
      >>> [equivalence(interval(v), full, 0.01)["verdict"]
      ...  for v in ([0.80, 0.81, 0.82], [0.85, 0.95, 0.90], [0.9])]
      ['lower', 'no difference detected', 'n = 1']
    """
    diff = welch(sample, reference)
    if diff["ci95"] is None:
        return {"verdict": "n = 1", "low": None, "high": None}
    low, high = diff["mean"] - diff["ci95"], diff["mean"] + diff["ci95"]
    if -margin <= low and high <= margin:
        verdict = "matches"
    elif high < 0 or low > 0:
        verdict = "lower" if high < 0 else "higher"
    else:
        verdict = "no difference detected"
    return {"verdict": verdict, "low": low, "high": high}


def equivalence_text(result: dict, margin: float, scale: float = 100, unit: str = "points") -> str:
    """``equivalence``'s result as a phrase: the verdict, the interval, the margin.

    Example:
      >>> equivalence_text({"verdict": "no difference detected", "low": -0.033, "high": 0.045},
      ...                  0.01)
      'no difference detected (difference -3.3 to +4.5 points)'
      >>> equivalence_text({"verdict": "matches", "low": -0.004, "high": 0.006}, 0.01)
      'matches (difference -0.4 to +0.6 points, inside the margin of ±1.0)'
    """
    if result["low"] is None:
        return "not compared (n = 1)"
    span = f"difference {result['low'] * scale:+.1f} to {result['high'] * scale:+.1f} {unit}"
    if result["verdict"] == "matches":
        return f"matches ({span}, inside the margin of ±{margin * scale:.1f})"
    return f"{result['verdict']} ({span})"


def convergence(curve: list[tuple[int, float]], best_step: int | None, window: int = 3) -> dict:
    """Whether one run may still be improving, from its validation curve ``[(step, value)]``
    and the step its model selection kept.

    Returns ``{"last_step", "best_is_last", "recent_change"}``: ``best_is_last`` is True when
    the selection kept the last evaluation (nothing after it was worse, so the run may still
    be improving; None without an evaluation or a kept step); ``recent_change`` is the value
    at the last evaluation minus the one ``window`` evaluations earlier (None with fewer).

    Example:
      >>> convergence([(10, 0.5), (20, 0.7), (30, 0.8), (40, 0.9)], best_step=40)
      {'last_step': 40, 'best_is_last': True, 'recent_change': 0.4}
      >>> convergence([(10, 0.5), (20, 0.8), (30, 0.8), (40, 0.79)], best_step=20)
      {'last_step': 40, 'best_is_last': False, 'recent_change': 0.29}
    """
    if not curve:
        return {"last_step": None, "best_is_last": None, "recent_change": None}
    steps, values = zip(*sorted(curve), strict=True)
    change = None if len(values) <= window else round(values[-1] - values[-1 - window], 12)
    return {
        "last_step": steps[-1],
        "best_is_last": None if best_step is None else best_step == steps[-1],
        "recent_change": change,
    }


def still_improving(best_is_last: list[bool | None]) -> tuple[int, int, bool]:
    """``(k, n, flagged)`` over a point's runs: k of the n runs that could be judged kept their
    last evaluation, and the point is flagged when most of them did (k > n / 2).

    Example:
      >>> still_improving([True, True, False]), still_improving([True, False, None])
      ((2, 3, True), (1, 2, False))
    """
    judged = [flag for flag in best_is_last if flag is not None]
    k = sum(judged)
    return k, len(judged), 2 * k > len(judged)


def improving_warning(point: str, k: int, n: int) -> str:
    """The one line ``lowrank-jax report`` prints for a flagged point (scripts look for the
    words "still improving")."""
    return (
        f"{point}: {k} of {n} runs were still improving at their last evaluation; "
        "train longer before reading this point"
    )
