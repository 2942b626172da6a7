"""Ranks under a parameter budget: which rank where.

Every selected layer l is a matrix W_l of shape [in_l, out_l] (or, with
calibration inputs X, its whitened form Sᵀ·W_l with S·Sᵀ = XᵀX) with singular
values s_l,1 ≥ s_l,2 ≥ ... . Truncated to rank r (Eckart–Young) it loses

    E_l(r) = Σ_{i > r} s_l,i²

(the squared Frobenius error of the weights; whitened, of the layer's outputs on
the calibration inputs), and its factors A [in_l, r], B [r, out_l] cost
c_l · r parameters, c_l = in_l + out_l. The allocation problem is

    minimise Σ_l E_l(r_l)   subject to   Σ_l c_l · r_l ≤ budget,  1 ≤ r_l ≤ min(in_l, out_l).

``greedy`` starts every layer at rank 1 and raises, one rank at a time, the
layer whose next singular value removes the most error per parameter
(s_l,r+1² / c_l), skipping a step that no longer fits, until nothing fits.
Why that is right: the singular values are sorted, so each layer's gains only
fall as its rank grows (E_l is convex), and raising a rank is always taking
that layer's best remaining step. When every layer costs the same per rank
(equal c_l, e.g. all the up and down matrices of a Transformer's FFNs) the
problem is choosing the largest gains under a count, and greedy is exactly
optimal. With unequal c_l it is a knapsack: greedy can leave budget unused
where a different mix would have filled it, so it is optimal up to that
remainder (within one step per layer of the fractional optimum), and
``allocate`` returns uniform's ranks instead whenever those have the smaller
total error (never worse than uniform). The tests check it against brute force.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import numpy as np

from lowrank_jax.config import fail

ALLOCATIONS = ("uniform", "greedy")


def truncation_error(spectrum: np.ndarray, rank: int) -> float:
    """E(r): the sum of the squared singular values a rank-``rank`` truncation drops."""
    return float(np.sum(np.asarray(spectrum, np.float64)[rank:] ** 2))


def total_error(spectra: Sequence[np.ndarray], ranks: Sequence[int]) -> float:
    return sum(truncation_error(s, r) for s, r in zip(spectra, ranks, strict=True))


def budget_parameters(budget: float | int, dense: Sequence[int]) -> int:
    """A budget as a parameter count: a fraction in (0, 1] of the dense layers' weights
    (``dense``: in · out of each), or an absolute count (an int)."""
    if isinstance(budget, bool) or not isinstance(budget, int | float):
        fail("budget", "a fraction in (0, 1] or a parameter count (an int)", budget)
    if isinstance(budget, int):
        if budget < 1:
            fail("budget", "a positive parameter count", budget)
        return budget
    if not 0.0 < budget <= 1.0:
        fail("budget", "a fraction in (0, 1] of the selected layers' parameters", budget)
    return int(budget * sum(dense))


def uniform(costs: Sequence[int], limits: Sequence[int], budget: int) -> list[int]:
    """One rank R for every layer: the largest with Σ c_l · min(R, limit_l) ≤ budget."""
    rank = 1
    while rank < max(limits) and _cost(costs, limits, rank + 1) <= budget:
        rank += 1
    return [min(rank, limit) for limit in limits]


def _cost(costs: Sequence[int], limits: Sequence[int], rank: int) -> int:
    return sum(c * min(rank, limit) for c, limit in zip(costs, limits, strict=True))


def greedy(spectra: Sequence[np.ndarray], costs: Sequence[int], budget: int) -> list[int]:
    """Raise the rank with the best error removed per parameter while it fits (see above)."""
    ranks = [1] * len(spectra)
    spent = sum(costs)
    power = [np.asarray(s, np.float64) ** 2 for s in spectra]
    # max-heap of (-gain per parameter, layer): each layer's next step
    steps = [
        (-p[1] / c, i) for i, (p, c) in enumerate(zip(power, costs, strict=True)) if len(p) > 1
    ]
    heapq.heapify(steps)
    while steps:
        _, i = heapq.heappop(steps)
        if spent + costs[i] > budget:
            continue  # this layer's steps no longer fit; cheaper layers' may
        ranks[i] += 1
        spent += costs[i]
        if ranks[i] < len(power[i]):
            heapq.heappush(steps, (-power[i][ranks[i]] / costs[i], i))
    return ranks


def allocate(
    spectra: Sequence[np.ndarray],
    shapes: Sequence[tuple[int, int]],
    budget: float | int,
    allocation: str = "greedy",
) -> list[int]:
    """Per-layer ranks for layers of ``shapes`` [in, out] with singular values ``spectra``.

    Example: the first layer's second and third directions matter, the second's do not.
      >>> steep, flat = np.array([4.0, 3, 2, 0.1, 0.1, 0.1, 0.1, 0.1]), np.ones(8)
      >>> allocate([steep, flat], [(8, 8), (8, 8)], budget=64, allocation="greedy")
      [3, 1]
      >>> allocate([steep, flat], [(8, 8), (8, 8)], budget=64, allocation="uniform")
      [2, 2]
    """
    if allocation not in ALLOCATIONS:
        fail("allocation", f"one of {', '.join(ALLOCATIONS)}", allocation)
    costs = [i + o for i, o in shapes]
    limits = [min(i, o) for i, o in shapes]
    count = budget_parameters(budget, [i * o for i, o in shapes])
    if count < sum(costs):
        fail(
            "budget",
            f"at least {sum(costs):,} parameters (rank 1 in each of the {len(shapes)} layers)",
            count,
        )
    even = uniform(costs, limits, count)
    if allocation == "uniform":
        return even
    ranks = greedy(spectra, costs, count)
    return ranks if total_error(spectra, ranks) <= total_error(spectra, even) else even
