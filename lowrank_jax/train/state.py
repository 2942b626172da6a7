"""A run's training state: the whole config checked, the model and optimizer placed on the
mesh with their jitted steps, and a finished run's model loaded back.

    validate(config)               every field checked once; ConfigError names the first bad one
    model_and_optimizer(config)    the run's model (its seeds), trainable filter, nnx.Optimizer
    train_state(config, mesh)      ... placed on the mesh, with the jitted train and eval steps
    load_model(workdir)            a run's selected (or final) model, checked against its summary
    params_sha256(model)           SHA-256 of the parameter bytes: runs compared bitwise

The trainer, ``load_model`` and ``bench.EncoderStep`` (the step the experiments
and benchmarks time) all go through ``train_state``, so what is timed is what
trains. ``nnx.eval_shape(lambda: model_and_optimizer(config))`` gives every
shape without allocating one. The model itself comes from ``lowrank_jax.build``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lowrank_jax import data, surgery
from lowrank_jax.build import model, run_rngs
from lowrank_jax.config import ConfigError, check_known, require, within
from lowrank_jax.layers import macs_per_token
from lowrank_jax.layers.factorized import frobenius_paths
from lowrank_jax.models import pretrained, resolve_config
from lowrank_jax.train import losses, sharding, step
from lowrank_jax.train.checkpoint import Checkpointer, CheckpointError
from lowrank_jax.train.metrics import read_json

TOP_LEVEL = ("seed", "data", "model", "train", "mesh")


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Check every field against the others and the devices; returns the resolved model config.

    Bad input raises ``ConfigError`` (one line naming the field); anything else
    raised here is a bug and keeps its traceback.
    """
    check_known(config.keys(), TOP_LEVEL, "config")
    require(config, TOP_LEVEL, "config")
    data.check(config.data)
    model_config = resolve_config(config.model)
    if model_config.pretrained:
        with within("model"):
            pretrained.model_dir(model_config.pretrained)
    step.validate(config.train)
    sizes = sharding.mesh_shape(config.mesh, jax.device_count())
    parallel = sizes["data"] * sizes["fsdp"]
    if config.train.batch_size % parallel:
        raise ConfigError(
            f"train.batch_size: must be divisible by the data-parallel size {parallel} "
            f"(mesh data={sizes['data']} x fsdp={sizes['fsdp']}), got {config.train.batch_size}"
        )
    for field in ("vocab_size", "num_classes", "max_len"):
        if field in config.data and config.data[field] > model_config[field]:
            raise ConfigError(
                f"model.{field}: must be at least data.{field} = {config.data[field]}, "
                f"got {model_config[field]}"
            )
    with within("train"):
        surgery.trainable_filter(nnx.Module(), config.train.trainable)  # a bad regex fails here
    return model_config


def model_and_optimizer(config: ml_collections.ConfigDict, student: nnx.Module | None = None):
    """``(model, optimizer, wrt)`` of a run as it starts: its seeds, its trainable subset.

    ``student``: a model built elsewhere (e.g. factorized with calibration data)
    to train instead of ``model(config.model)``.
    """
    built = student if student is not None else model(config.model, rngs=run_rngs(config.seed))
    wrt = surgery.trainable_filter(built, config.train.trainable)
    tx = step.make_optimizer(config.train, no_decay=frobenius_paths(built))
    return built, nnx.Optimizer(built, tx, wrt=wrt), wrt


@dataclasses.dataclass
class TrainState:
    """A run's placed state and its jitted steps (``train_state``).

    ``state`` is the NNX state of ``(model, optimizer)``, sharded by
    ``state_sharding``; ``train_step(state, batch) -> (state, metrics)`` and
    ``eval_step(state, batch) -> metrics`` take batches placed by
    ``sharding.place_batch``. ``merge(state)`` gives the model back.
    """

    mesh: Mesh
    graphdef: nnx.GraphDef
    state: nnx.State
    state_sharding: object
    train_step: step.TrainStep | None
    eval_step: object | None
    params: dict  # total / trainable / lora parameter counts, optimizer_state_bytes
    macs_per_token: int

    def merge(self, state=None) -> nnx.Module:
        model, _ = nnx.merge(self.graphdef, self.state if state is None else state)
        return model


def train_state(
    config: ml_collections.ConfigDict,
    mesh: Mesh,
    *,
    student: nnx.Module | None = None,
    steps: bool = True,
) -> TrainState:
    """Model, optimizer, shardings, placed state, the loss and the jitted steps of ``config``.

    ``steps=False``: the placed state alone (no loss, teacher or steps), to restore into.
    """
    built, optimizer, wrt = model_and_optimizer(config, student)
    params = surgery.count_params(built, config.train.trainable)
    params["optimizer_state_bytes"] = step.optimizer_state_bytes(optimizer)
    macs = macs_per_token(built)
    built.eval()
    eval_graphdef, _ = nnx.split((built, optimizer))
    built.train()
    graphdef, state = nnx.split((built, optimizer))
    state_sharding = sharding.state_shardings(state, mesh)
    state = sharding.put_global(state, state_sharding)
    if not steps:
        return TrainState(mesh, graphdef, state, state_sharding, None, None, params, macs)
    replicated = NamedSharding(mesh, PartitionSpec())
    batch_sharding = sharding.batch_sharding(mesh)
    teacher = _teacher(config, mesh) if losses.needs_teacher(config.train) else None
    loss = losses.make_loss(config.train)
    train_step = step.TrainStep(
        graphdef,
        wrt,
        state_sharding,
        batch_sharding,
        replicated,
        loss=loss,
        schedule=step.make_schedule(config.train),
        teacher=teacher,
    )
    eval_step = step.make_eval_step(
        eval_graphdef, state_sharding, batch_sharding, replicated, loss=loss, teacher=teacher
    )
    return TrainState(mesh, graphdef, state, state_sharding, train_step, eval_step, params, macs)


def _teacher(config, mesh: Mesh):
    """(graphdef, placed state, sharding) of the frozen distillation teacher, in eval mode."""
    source = config.train.distillation.teacher
    if source == "self":
        teacher = model(config.model, rngs=run_rngs(config.seed), with_surgery=False)
    else:
        teacher = load_model(source)
    teacher.eval()
    graphdef, state = nnx.split(teacher)
    shardings = sharding.state_shardings(state, mesh)
    return graphdef, sharding.put_global(state, shardings), shardings


def single_device_mesh() -> Mesh:
    """A mesh of this process's first device (every axis of size 1)."""
    auto = (jax.sharding.AxisType.Auto,) * len(sharding.MESH_AXES)
    return jax.make_mesh(
        (1,) * len(sharding.MESH_AXES),
        sharding.MESH_AXES,
        axis_types=auto,
        devices=jax.devices()[:1],
    )


def params_sha256(model: nnx.Module) -> str:
    """SHA-256 of all parameter bytes (gathered from every process), to compare runs bitwise."""
    digest = hashlib.sha256()
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    for path, value in sorted(flat, key=lambda item: str(item[0])):
        array = value.get_value() if isinstance(value, nnx.Variable) else value
        if jax.process_count() > 1:
            array = multihost_utils.process_allgather(array, tiled=True)
        digest.update(str(path).encode())
        digest.update(np.asarray(array).tobytes())
    return digest.hexdigest()


def load_model(workdir: str | Path, which: str = "best") -> nnx.Module:
    """The model of the run in ``workdir``, in eval mode: ``best`` on validation, or ``final``.

    ``best`` is the checkpoint the run selected on its validation split (the one
    its ``test_accuracy`` scores); ``final`` its newest good checkpoint. The
    run's ``config.json`` rebuilds the (model, optimizer) structure, which the
    checkpoint then fills on one device, whatever mesh the run used. A finished
    run's parameters must be the ones its ``summary.json`` describes
    (``best_params_sha256`` / ``params_sha256``): where the checkpoint is damaged
    and only an older one restores, ``CheckpointError`` says so instead of
    returning other parameters (rerunning the run's command heals the final
    checkpoints; a damaged best one stays damaged: use ``which="final"``).

    Example:
      model = load_model("runs/lora-trec/lora.rank=8")   # then model(tokens, mask)
    """
    if which not in ("best", "final"):
        raise ConfigError(f"which: must be one of best, final, got {which!r}")
    workdir = Path(workdir)
    path = workdir / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{workdir}: not a run directory (no config.json)")
    config = ml_collections.ConfigDict(read_json(path))
    placed = train_state(config, single_device_mesh(), steps=False)
    folder = workdir / ("best" if which == "best" else "checkpoints")
    if which == "best" and not folder.is_dir():
        raise FileNotFoundError(f"{workdir}: no best checkpoint (a run of an older version?)")
    checkpointer = Checkpointer(folder, keep=1 << 30)  # deletes nothing
    try:
        restored = checkpointer.restore_latest(placed.state, heal=False)
    finally:
        checkpointer.close()
    # a rerun of the run's command heals its newest checkpoints, not a damaged best one
    heal = "rerun the run's command" if which == "final" else "use which='final'"
    if restored is None:
        raise CheckpointError(f"{folder}: no checkpoint restores; {heal}")
    # plain single-device arrays: the model then runs outside any mesh context
    loaded = placed.merge(jax.tree.map(jnp.asarray, jax.device_get(restored[1])))
    loaded.eval()
    summary = workdir / "summary.json"
    key = "best_params_sha256" if which == "best" else "params_sha256"
    expected = read_json(summary).get(key) if summary.exists() else None
    if expected is not None and params_sha256(loaded) != expected:
        raise CheckpointError(
            f"{folder}: the newest checkpoint that restores (step {restored[0]}) is not the "
            f"{which} model summary.json describes ({key} differs); {heal}"
        )
    return loaded
