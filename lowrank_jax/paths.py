"""Module paths in an NNX model tree: ``("layers", 0, "query")``, written ``layers.0.query``."""

from __future__ import annotations

from collections.abc import Iterator

from flax import nnx

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
