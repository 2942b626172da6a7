"""Meshes, logical-axis rules and data placement; multi-host start-up.

The only place where logical axis names (``axes.py``) meet mesh axes. The mesh
has three axes: ``data`` (batch), ``fsdp`` (batch, and parameters sharded along
``embed``), ``tensor`` (``mlp``, ``heads``, ``vocab``). A parameter dimension
whose size the mesh axis does not divide stays replicated.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lowrank_jax import axes
from lowrank_jax.config import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")
RULES: dict[str, str | None] = {
    axes.EMBED: "fsdp",
    axes.MLP: "tensor",
    axes.HEADS: "tensor",
    axes.VOCAB: "tensor",
    axes.KV: None,
    axes.RANK: None,
    axes.LENGTH: None,
}


def mesh_shape(mesh_config, device_count: int) -> dict[str, int]:
    """Sizes of the mesh axes, -1 filled; ``ConfigError`` if it does not fit the devices."""
    sizes = {name: int(mesh_config[name]) for name in MESH_AXES}
    unknown = set(mesh_config.keys()) - set(MESH_AXES)
    if unknown:
        raise ConfigError(f"mesh.{sorted(unknown)[0]}: unknown axis; valid: {', '.join(MESH_AXES)}")
    fill = [name for name, size in sizes.items() if size == -1]
    if len(fill) > 1 or any(size == 0 or size < -1 for size in sizes.values()):
        raise ConfigError(f"mesh: sizes must be positive, at most one -1 (fill); got {sizes}")
    fixed = int(np.prod([size for size in sizes.values() if size != -1]))
    if fill:
        if device_count % fixed:
            raise ConfigError(
                f"mesh: {sizes} cannot fill {device_count} devices ({device_count} % {fixed} != 0)"
            )
        sizes[fill[0]] = device_count // fixed
    if int(np.prod(list(sizes.values()))) != device_count:
        shape = " x ".join(f"{name}={size}" for name, size in sizes.items())
        raise ConfigError(f"mesh: {shape} does not fit the {device_count} devices")
    return sizes


def make_mesh(mesh_config) -> Mesh:
    """A ``Mesh`` over all devices (of all processes) with axes data, fsdp, tensor."""
    sizes = mesh_shape(mesh_config, jax.device_count())
    # Auto axes: XLA propagates shardings from the annotated parameters and batches.
    auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    return jax.make_mesh(tuple(sizes.values()), MESH_AXES, axis_types=auto)


def logical_to_spec(names, shape, mesh: Mesh) -> PartitionSpec:
    """Map logical axis names to a ``PartitionSpec`` (divisibility-checked, no axis twice)."""
    used, spec = set(), []
    for name, size in zip(names, shape, strict=True):
        axis = RULES.get(name) if name is not None else None
        if axis is None or axis in used or size % mesh.shape[axis]:
            spec.append(None)
        else:
            spec.append(axis)
            used.add(axis)
    return PartitionSpec(*spec)


def state_shardings(state: nnx.State, mesh: Mesh):
    """``NamedSharding`` for every variable of an NNX state, from its logical names."""

    def one(variable):
        names = (
            variable.get_metadata().get("out_sharding")
            if isinstance(variable, nnx.Variable)
            else None
        )
        value = variable.get_value() if isinstance(variable, nnx.Variable) else variable
        shape = getattr(value, "shape", ())
        spec = logical_to_spec(names, shape, mesh) if names else PartitionSpec()
        return NamedSharding(mesh, spec)

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def put_global(tree, shardings):
    """Place values that every process holds identically as global arrays.

    ``jax.device_put`` cannot target devices of other processes; each process
    here fills its own shards from its copy.
    """

    def one(x, sharding):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):  # typed keys: place their data
            placed = one(jax.random.key_data(x), sharding)
            return jax.random.wrap_key_data(placed, impl=jax.random.key_impl(x))
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    leaves, treedef = jax.tree.flatten(tree)
    placements = jax.tree.leaves(shardings)  # a prefix tree: one sharding per variable
    return jax.tree.unflatten(treedef, [one(x, s) for x, s in zip(leaves, placements, strict=True)])


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batches: leading axis over data x fsdp."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def local_rows(mesh: Mesh, global_batch: int) -> np.ndarray:
    """Indices of the global batch rows that this process's devices hold."""
    index_map = batch_sharding(mesh).addressable_devices_indices_map((global_batch,))
    rows = sorted(
        {i for index in index_map.values() for i in range(*index[0].indices(global_batch))}
    )
    return np.asarray(rows)


def place_batch(
    local: dict[str, np.ndarray], mesh: Mesh, global_batch: int
) -> dict[str, jax.Array]:
    """This process's rows -> global arrays sharded over the batch axes."""
    sharding = batch_sharding(mesh)
    return {
        key: jax.make_array_from_process_local_data(
            sharding, value, (global_batch, *value.shape[1:])
        )
        for key, value in local.items()
    }


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Start JAX's multi-controller runtime when several processes are asked for.

    Arguments come from the CLI flags or, failing those, the environment
    (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``), or,
    failing those, a SLURM job step of several tasks (``srun``: JAX reads
    ``SLURM_NTASKS``, ``SLURM_PROCID`` and the first node of the step as the
    coordinator). On CPU the processes exchange data over gloo.
    """
    env = os.environ
    coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
    num_processes = num_processes or int(env.get("JAX_NUM_PROCESSES", "1"))
    if process_id is None and "JAX_PROCESS_ID" in env:
        process_id = int(env["JAX_PROCESS_ID"])
    if num_processes <= 1 and int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_STEP_ID" in env:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize()  # JAX's SlurmCluster: the step's tasks, one process each
        return
    if num_processes <= 1:
        return
    if not coordinator_address or process_id is None:
        raise ConfigError(
            "several processes need --coordinator_address and --process_id "
            "(or JAX_COORDINATOR_ADDRESS and JAX_PROCESS_ID)"
        )
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
