"""Collection for the whole repository: the shim modules (``lowrank_jax.SHIMS``) only warn and
hand out their new module, whose doctests run under its own path."""

from lowrank_jax import SHIMS

collect_ignore = [f"{old.replace('.', '/')}.py" for old, new in SHIMS if ":" not in new]
