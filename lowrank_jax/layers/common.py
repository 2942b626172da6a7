"""Helpers shared by the layer modules: rank checks and axis-annotated variables."""

from __future__ import annotations

import jax
from flax import nnx

from lowrank_jax.axes import AxisName, KernelAxes
from lowrank_jax.config import check_int


def check_rank(rank: int, in_features: int, out_features: int, *, name: str = "rank") -> int:
    """Return ``rank`` if it is an int in ``[1, min(in, out)]``, else raise ``ConfigError``."""
    return check_int(
        rank,
        name,
        high=min(in_features, out_features),
        why=f"min(in_features, out_features) for a {in_features}x{out_features} layer",
    )


def annotated(
    variable_type: type[nnx.Variable], value: jax.Array, axes: tuple[AxisName, ...]
) -> nnx.Variable:
    """A variable carrying logical axis names as metadata, without sharding it now.

    The names are read by ``nnx.get_partition_spec`` when the trainer places the
    state on a mesh; creating a layer never needs a mesh.
    """
    return variable_type(value, **axes_metadata(axes))


def axes_metadata(axes: tuple[AxisName, ...]) -> dict:
    """Variable metadata naming logical axes (``None``: an axis that is never sharded)."""
    return {"out_sharding": tuple(axes), "eager_sharding": False}


def kernel_axes_of(layer: nnx.Module) -> KernelAxes:
    """The logical (in, out) axis names of a dense layer's kernel, ``(None, None)`` if absent."""
    if hasattr(layer, "kernel_axes"):
        return tuple(layer.kernel_axes)  # type: ignore[return-value]
    kernel = getattr(layer, "kernel", None)
    axes = kernel.get_metadata().get("out_sharding") if isinstance(kernel, nnx.Variable) else None
    return tuple(axes) if axes else (None, None)  # type: ignore[return-value]
