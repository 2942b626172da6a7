"""Module paths in an NNX model tree: ``("layers", 0, "query")``, written ``layers.0.query``."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from flax import nnx

from lowrank_jax.config import ConfigError

Path = tuple[str | int, ...]


def dotted(path: Path) -> str:
    """``("layers", 0, "query") -> "layers.0.query"``."""
    return ".".join(str(key) for key in path)


def modules(model: nnx.Module) -> Iterator[tuple[Path, nnx.Module]]:
    for path, module in nnx.iter_modules(model):
        if path:
            yield tuple(path), module


def get(model: nnx.Module, path: Path) -> nnx.Module:
    node = model
    for key in path:
        node = node[key] if isinstance(key, int) else getattr(node, key)
    return node


def replace(model: nnx.Module, path: Path, new: nnx.Module) -> None:
    parent = model
    for key in path[:-1]:
        parent = parent[key] if isinstance(key, int) else getattr(parent, key)
    if isinstance(path[-1], int):
        parent[path[-1]] = new
    else:
        setattr(parent, path[-1], new)


def swap(
    model: nnx.Module,
    selected: list[tuple[Path, nnx.Module]],
    make: Callable[..., nnx.Module],
    *,
    with_path: bool = False,
) -> nnx.Module:
    """Build every replacement first (errors name the layer), then put them in place.

    A bad argument thus leaves the model untouched instead of half changed.
    ``make(layer)``, or ``make(path, layer)`` with ``with_path``.
    """
    replacements = []
    for path, layer in selected:
        try:
            replacements.append((path, make(path, layer) if with_path else make(layer)))
        except ConfigError as e:  # the layer's own check, e.g. "rank: must be ..."
            raise ConfigError(f"{dotted(path)}.{e}") from None
    for path, new in replacements:
        replace(model, path, new)
    return model
