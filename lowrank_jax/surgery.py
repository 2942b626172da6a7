"""Model surgery: LoRA, adapters and SVD factorization applied to any built NNX model.

In the spirit of Penzai's ``loraify_linears_in_selection``: a function takes a
built model (one from ``build_encoder``, a loaded pretrained one, or any NNX
module tree), replaces the selected layers in place and returns the model.

Layers are selected by a regular expression that must match their whole
attribute path, written with dots: ``r"layers\\.\\d+\\.attention\\.(query|value)"``
selects ``model.layers[3].attention.query``. A pattern that selects nothing
raises ``ValueError`` listing the paths that could have been selected.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lowrank_jax.calibration import input_spectra
from lowrank_jax.calibration import whitening as _whitening
from lowrank_jax.config import ConfigError, fail
from lowrank_jax.layers import Adapter, FactorizedDense, LoRA, WithAdapter
from lowrank_jax.layers.common import check_rank, kernel_axes_of
from lowrank_jax.layers.factorized import singular_values
from lowrank_jax.layers.lora import check_init
from lowrank_jax.paths import Path, dotted
from lowrank_jax.paths import get as _get
from lowrank_jax.paths import modules as _modules
from lowrank_jax.paths import replace as _replace
from lowrank_jax.paths import swap as _swap
from lowrank_jax.ranks import allocate
from lowrank_jax.trainable import count_params as count_params  # re-exported
from lowrank_jax.trainable import trainable_filter as trainable_filter  # re-exported

DENSE_TYPES = (nnx.Linear, FactorizedDense)


def _select(
    model: nnx.Module,
    targets: str,
    eligible: Callable[[nnx.Module], bool],
    what: str,
    wrapper: type[nnx.Module],
    field: str = "targets",
) -> list[tuple[Path, nnx.Module]]:
    """The eligible modules whose dotted path fully matches ``targets``.

    A LoRA's base is never a target of its own. A match that is a ``wrapper``,
    or sits directly inside one, raises (no double wrapping); so does no match.
    """
    try:
        pattern = re.compile(targets)
    except (re.error, TypeError) as e:
        fail(field, f"a valid regular expression ({e})", targets)
    modules = list(_modules(model))
    wrapped = {path for path, m in modules if isinstance(m, wrapper)}
    for path, _ in modules:
        if pattern.fullmatch(dotted(path)) and (path in wrapped or path[:-1] in wrapped):
            at = dotted(path if path in wrapped else path[:-1])
            raise ValueError(f"{at} already has {_WRAPPED_AS[wrapper]}; apply it once per layer")
    lora_bases = {(*path, "base") for path, m in modules if isinstance(m, LoRA)}
    candidates = [(path, m) for path, m in modules if eligible(m) and path not in lora_bases]
    selected = [(path, m) for path, m in candidates if pattern.fullmatch(dotted(path))]
    if not selected:
        paths = [dotted(p) for p, _ in candidates]
        if field != "targets":  # a rule: the nearest paths
            paths = difflib.get_close_matches(targets, paths, n=5, cutoff=0.0)
        listing = ", ".join(paths) or "(none)"
        fail(field, f"a pattern matching some of the {what} here: {listing}", targets)
    return selected


_WRAPPED_AS = {LoRA: "LoRA", WithAdapter: "an adapter"}


def apply_lora(
    model: nnx.Module,
    targets: str | None = None,
    rank: int | None = None,
    *,
    rules: Sequence[tuple[str, int, float | None]] = (),
    alpha: float | None = None,
    dropout: float = 0.0,
    rslora: bool = False,
    variant: str = "lora",
    init: str = "default",
    budget: float | int | None = None,
    allocation: str = "uniform",
    calibration: Iterable | None = None,
    rngs: nnx.Rngs,
) -> nnx.Module:
    """Wrap every selected dense layer (``nnx.Linear``, ``FactorizedDense``) in ``LoRA``.

    ``budget`` (with ``targets``, instead of ``rank``): the LoRA parameters in
    all, a count (an int) or a fraction of the targets' weights, shared by
    ``allocation``: ``"uniform"`` (one R, the largest that fits) or ``"greedy"``
    (``ranks.allocate`` on each layer's input spectrum from ``calibration``
    batches, ``calibration.input_spectra``: ranks go to the directions that
    explain the most input variance per parameter, EVA's rule; A keeps its usual
    random start).

    ``rules``: ``(regex, rank, alpha)`` per-target settings (peft's
    ``rank_pattern`` / ``alpha_pattern``; a rule's alpha None means scale 1, it
    does not inherit ``alpha``): a layer takes the first rule whose
    regex matches its whole path; ``targets`` with ``rank`` and ``alpha``, when
    given, is the last rule. A rule that selects no layer (none matches, or
    earlier rules took them all) raises, naming the rule and the nearest paths.

    The model's outputs are unchanged (B starts at zero; PiSSA / OLoRA move the
    top of W into A·B and leave the base the rest). ``variant="dora"`` adds
    DoRA's magnitude; see ``layers.LoRA``. Applying LoRA twice to a layer raises
    ``ValueError``. Returns ``model``, changed in place.

    Example:
      >>> from flax import nnx
      >>> model = nnx.Sequential(nnx.Linear(8, 8, rngs=nnx.Rngs(0)), nnx.relu,
      ...                        nnx.Linear(8, 2, rngs=nnx.Rngs(1)))
      >>> model = apply_lora(model, r"layers\\.0", rank=2, rngs=nnx.Rngs(2))
      >>> count_params(model)
      {'total': 122, 'trainable': 32, 'lora': 32}
    """
    if budget is not None:
        if rules or targets is None or rank is not None:
            fail("budget", "given with targets alone (no rank, no rules)", budget)
        rules, targets = _budget_rules(model, targets, budget, allocation, calibration, alpha), None
    every = [(f"rules[{i}]", *rule) for i, rule in enumerate(rules)]
    if targets is not None or rank is not None:
        every.append(("targets", targets, rank, alpha))
    if not every:
        fail("rank", "given (with targets) or rules given", None)
    plan: dict = {}
    for field, pattern, r, a in every:
        chosen = _select(model, pattern, _is_dense, "dense layers", LoRA, field=field)
        new = [(path, layer) for path, layer in chosen if path not in plan]
        if not new:
            fail(
                field,
                "a pattern selecting a layer no earlier rule took (first match wins)",
                pattern,
            )
        plan.update({path: (r, a) for path, _ in new})
    selected = [(path, _get(model, path)) for path in plan]
    for path, layer in selected:  # PiSSA / OLoRA write the base: check every layer first
        try:
            check_rank(plan[path][0], layer.in_features, layer.out_features)
            check_init(init, layer)
        except ConfigError as e:
            raise ConfigError(f"{dotted(path)}.{e}") from None

    def wrap(path: Path, layer: nnx.Module) -> LoRA:
        r, a = plan[path]
        return LoRA(
            layer,
            r,
            alpha=a,
            dropout=dropout,
            rslora=rslora,
            variant=variant,
            init=init,
            rngs=rngs,
        )

    return _swap(model, selected, wrap, with_path=True)


def _budget_rules(model, targets, budget, allocation, calibration, alpha) -> list:
    """One ``(path, rank, alpha)`` rule per selected layer, its rank allocated."""
    chosen = _select(model, targets, _is_dense, "dense layers", LoRA, field="targets")
    paths, shapes = [p for p, _ in chosen], [(m.in_features, m.out_features) for _, m in chosen]
    spectra = [np.ones(1)] * len(paths)  # uniform reads no spectrum
    if allocation == "greedy":
        if calibration is None:
            fail("calibration", "batches for allocation 'greedy' (the inputs' spectra)", None)
        found = input_spectra(model, paths, calibration)
        spectra = [found[p][: min(shape)] for p, shape in zip(paths, shapes, strict=True)]
    ranks = allocate(spectra, shapes, budget, allocation)
    return [(re.escape(dotted(p)), r, alpha) for p, r in zip(paths, ranks, strict=True)]


def merge_drift(model: nnx.Module, batch) -> dict[str, float]:
    """How far merging moves the outputs: merge a copy, compare on ``batch``.

    ``batch``: a dict with ``tokens`` and ``mask`` or a tuple of the model's
    arguments. Returns the largest and the mean absolute output change (peft
    users found merged bfloat16 models whose outputs moved: peft issues 2502,
    1388; ``LoRA.merge`` computes in float32 and rounds once).
    """
    args = (batch["tokens"], batch["mask"]) if isinstance(batch, dict) else tuple(batch)
    unmerged, merged = nnx.clone(model), merge_lora(nnx.clone(model))
    unmerged.eval()  # both in eval mode (LoRA dropout off); the model itself is untouched
    merged.eval()
    change = jnp.abs(merged(*args).astype(jnp.float32) - unmerged(*args).astype(jnp.float32))
    return {"max": float(change.max()), "mean": float(change.mean())}


def add_adapters(
    model: nnx.Module,
    targets: str,
    bottleneck: int,
    *,
    activation: Callable[[jax.Array], jax.Array] = nnx.gelu,
    rngs: nnx.Rngs,
) -> nnx.Module:
    """Follow every selected layer by a bottleneck ``Adapter`` on its output.

    A layer is eligible if it reports ``out_features`` (any dense kind, or a
    LoRA-wrapped one). Houlsby et al. place adapters after the attention output
    projection and after the FFN's second dense. Returns ``model``, changed in place.
    """

    def eligible(m: nnx.Module) -> bool:
        return isinstance(getattr(m, "out_features", None), int) and not isinstance(m, WithAdapter)

    def wrap(layer: nnx.Module) -> WithAdapter:
        axis = kernel_axes_of(layer)[1]
        adapter = Adapter(
            layer.out_features, bottleneck, activation=activation, axis=axis, rngs=rngs
        )
        return WithAdapter(layer, adapter)

    selected = _select(model, targets, eligible, "layers with out_features", WithAdapter)
    return _swap(model, selected, wrap)


def factorize(
    model: nnx.Module,
    targets: str,
    *,
    rank: int | None = None,
    energy: float | None = None,
    budget: float | int | None = None,
    allocation: str = "uniform",
    calibration: Iterable | None = None,
    ridge: float = 1e-6,
) -> nnx.Module:
    """Replace every selected ``nnx.Linear`` by an SVD-initialised ``FactorizedDense``.

    Give exactly one of:
    - ``rank``: one R for every layer;
    - ``energy``: each layer its own R, the smallest keeping that fraction of
      its squared singular values (``FactorizedDense.from_dense``);
    - ``budget``: the factors' parameters in all, a fraction in (0, 1] of the
      selected layers' weights or a count (an int), shared by ``allocation``:
      ``"uniform"`` (one R everywhere, the largest that fits) or ``"greedy"``
      (per-layer ranks minimising the selected layers' total truncation error,
      read from each layer's singular values: ``ranks`` explains the objective
      and why greedy solves it). Each layer is factorized once, at its rank.
    Returns ``model``, changed in place; ``ranks(model)`` lists the ranks.

    ``calibration``: batches to run the model on first (activation-aware SVD,
    SVD-LLM): each selected layer's inputs X give XᵀX = S·Sᵀ (Cholesky, with
    ``ridge`` · mean diagonal added), and the layer is truncated to minimise its
    output error on those inputs (with ``budget``, the errors are those output
    errors). A batch is a dict with ``tokens`` and ``mask`` (the data pipeline's
    batches: ``model(tokens, mask)``, padded positions left out), or a tuple of
    the model's positional arguments (every position counts).
    """
    if sum(x is not None for x in (rank, energy, budget)) != 1:
        fail("rank", "given alone: exactly one of rank, energy and budget", (rank, energy, budget))

    def eligible(m: nnx.Module) -> bool:
        return isinstance(m, nnx.Linear)

    selected = _select(model, targets, eligible, "nnx.Linear layers", LoRA)
    whitening = (
        {}
        if calibration is None
        else _whitening(model, [path for path, _ in selected], calibration, ridge)
    )
    chosen = {}
    if budget is not None:
        spectra = [singular_values(m.kernel[...], whitening.get(p)) for p, m in selected]
        shapes = [m.kernel.shape for _, m in selected]
        chosen = dict(
            zip(
                (p for p, _ in selected), allocate(spectra, shapes, budget, allocation), strict=True
            )
        )

    def from_dense(path: Path, layer: nnx.Linear) -> FactorizedDense:
        return FactorizedDense.from_dense(
            layer.kernel[...],
            layer.bias[...] if layer.bias is not None else None,
            rank=chosen.get(path, rank),
            energy=energy,
            whitening=whitening.get(path),
            dtype=layer.dtype,
            kernel_axes=kernel_axes_of(layer),
        )

    return _swap(model, selected, from_dense, with_path=True)


def ranks(model: nnx.Module) -> dict[str, int]:
    """The rank of every factorized and LoRA layer, by dotted path.

    Example:
      >>> from flax import nnx
      >>> model = nnx.Sequential(nnx.Linear(8, 8, rngs=nnx.Rngs(0)))
      >>> ranks(apply_lora(model, r"layers\\.0", rank=2, rngs=nnx.Rngs(1)))
      {'layers.0': 2}
    """
    return {
        dotted(path): int(m.rank)
        for path, m in _modules(model)
        if isinstance(m, FactorizedDense | LoRA)
    }


def merge_lora(model: nnx.Module) -> nnx.Module:
    """Fold every LoRA update into its base and put the base back in its place.

    The model computes the same function, now at the base layers' cost, and has
    no LoRA parameters left. Returns ``model``, changed in place.
    """
    for path, lora in [(p, m) for p, m in _modules(model) if isinstance(m, LoRA)]:
        lora.merge()
        _replace(model, path, lora.base)
    return model


def _is_dense(m: nnx.Module) -> bool:
    return isinstance(m, DENSE_TYPES)
