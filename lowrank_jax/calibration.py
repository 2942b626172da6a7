"""Calibration: the second moment of each selected layer's inputs, for whitened SVD.

``whitening(model, paths, calibration)`` runs the model on calibration batches
with a recorder in front of each layer at ``paths`` and returns, per path, the
Cholesky factor S of XᵀX (its inputs' second moment, a small ridge added), the
whitening of activation-aware SVD (SVD-LLM, arXiv 2403.07378; used by
``surgery.factorize``). ``input_spectra`` gives each layer's explained-variance
spectrum of its inputs, the signal EVA allocates LoRA ranks by (used by
``surgery.apply_lora(budget=...)``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flax import nnx

from lowrank_jax.paths import Path, get, replace


class _Recorder(nnx.Module):
    """Passes ``x`` to its layer and adds the (masked) second moment xᵀx to ``moments``."""

    def __init__(self, layer: nnx.Module, key: Path, moments: dict, context: dict):
        self.layer, self.key = layer, key
        self.moments, self.context = nnx.data(moments), nnx.data(context)

    def __call__(self, x):
        rows = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
        mask = self.context.get("mask")
        if mask is not None and x.ndim == 3:
            if x.shape[1] == mask.shape[1] + 1:  # a CLS position in front
                mask = np.concatenate([np.ones((mask.shape[0], 1), bool), mask], axis=1)
            rows = rows[mask.reshape(-1)]
        moment = rows.T @ rows
        self.moments[self.key] = self.moments.get(self.key, 0.0) + moment
        return self.layer(x)


def whitening(model, paths: list[Path], calibration: Iterable, ridge: float) -> dict:
    """Per path, the Cholesky factor S of XᵀX over the calibration inputs (eager, on host)."""
    moments: dict = {}
    context: dict = {}
    originals = {path: get(model, path) for path in paths}
    for path, layer in originals.items():
        replace(model, path, _Recorder(layer, path, moments, context))
    try:
        batches = 0
        for batch in calibration:
            if isinstance(batch, dict):
                context["mask"] = np.asarray(batch["mask"], bool)
                model(batch["tokens"], batch["mask"])
            else:
                context.pop("mask", None)
                model(*(batch if isinstance(batch, tuple) else (batch,)))
            batches += 1
    finally:
        for path, layer in originals.items():
            replace(model, path, layer)
    if not batches:
        raise ValueError("calibration: no batches")
    factors = {}
    for path, moment in moments.items():
        moment = moment + ridge * np.mean(np.diag(moment)) * np.eye(len(moment))
        factors[path] = np.linalg.cholesky(moment)
    return factors


def input_spectra(model, paths: list[Path], calibration: Iterable) -> dict:
    """Per path, the singular values of the layer's inputs X, scaled to Σ s² = 1.

    s_i² is the fraction of the inputs' variance (second moment) along their i-th
    principal direction, the explained-variance ratio that EVA (Paischer et al.
    2024, arXiv 2410.07170) ranks every layer's directions by to hand out LoRA ranks.
    """
    spectra = {}
    for path, factor in whitening(model, paths, calibration, ridge=1e-6).items():
        values = np.linalg.svd(factor, compute_uv=False)  # S·Sᵀ = XᵀX: σ(S) = σ(X)
        spectra[path] = values / np.sqrt(np.sum(values**2))
    return spectra
