"""FLOP accounting: multiply-adds per token of the forward pass.

Used for model FLOP utilisation and theory-vs-measured tables. One multiply-add
is two FLOPs; a training step (forward + backward) costs about three forwards.
"""

from __future__ import annotations

from flax import nnx


def macs_per_token(module: nnx.Module) -> int:
    """Multiply-adds per token of ``module``'s forward pass.

    A module that defines ``macs_per_token()`` reports itself; ``nnx.Linear`` costs
    in·out; any other module is the sum of its direct child modules. Costs that
    depend on the sequence length (attention scores) are not per-token constants
    and are reported by the attention modules themselves.

    Example:
      >>> from flax import nnx
      >>> macs_per_token(nnx.Linear(16, 32, rngs=nnx.Rngs(0)))
      512
    """
    own = getattr(module, "macs_per_token", None)
    if callable(own):
        return int(own())
    if isinstance(module, nnx.Linear):
        return module.in_features * module.out_features
    return sum(
        macs_per_token(child)
        for _, child in nnx.iter_children(module)
        if isinstance(child, nnx.Module)
    )
