"""The composition layer (``lowrank_jax/build.py``) and the package's structure."""

import ast
import importlib
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lowrank_jax import SHIMS, build, cli
from lowrank_jax.attention import ATTENTION, make_attention
from lowrank_jax.config import ConfigError, load_config
from lowrank_jax.models import build_encoder, capture_intermediates, default_config
from lowrank_jax.train.state import single_device_mesh, train_state, validate

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lowrank_jax"
TINY = f"{ROOT}/configs/tiny.py:runlocal"


def _shapes(module) -> dict:
    state = nnx.state(module, nnx.Param)
    return {str(path): value.shape for path, value in nnx.to_flat_state(state)}


@pytest.mark.parametrize("kind", sorted(ATTENTION))
def test_default_config_and_make_attention_build_the_same_attention(kind):
    cfg = default_config()
    cfg.attention.kind = kind
    encoder = nnx.eval_shape(lambda: build_encoder(cfg, rngs=nnx.Rngs(0)))
    alone = nnx.eval_shape(
        lambda: make_attention(kind, cfg.dim, cfg.heads, max_len=cfg.max_len + 1, rngs=nnx.Rngs(0))
    )
    assert _shapes(encoder.layers[0].attention) == _shapes(alone)
    features = {"performer": ("mixer", "features")}.get(kind)
    if features:  # Performer's features are state, not parameters: compare them too
        assert (
            getattr(encoder.layers[0].attention.mixer, features[1]).shape
            == getattr(alone.mixer, features[1]).shape
        )


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports anywhere (function-local imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found |= {name for name in names if name in modules}
    return found


def _check_acyclic(graph: dict[str, set[str]], what: str) -> None:
    visiting, done = [], set()

    def visit(node):
        if node in visiting:
            cycle = [*visiting[visiting.index(node) :], node]
            raise AssertionError(f"import cycle ({what}): " + " -> ".join(cycle))
        if node in done:
            return
        visiting.append(node)
        for child in sorted(graph.get(node, ())):
            visit(child)
        visiting.pop()
        done.add(node)

    for name in sorted(graph):
        visit(name)


def _part(module: str) -> str:
    """The part of the package a module belongs to: ``lowrank_jax.train.step`` -> ``train``."""
    return module.split(".")[1] if module.count(".") else module


def test_no_import_cycle_inside_the_package():
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    graph = {}
    for name, path in files.items():
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        graph[name] = _imports(path, modules) - ancestors - {name}
    # A package __init__ re-exporting its modules is not a cycle; anything else is.
    _check_acyclic(graph, "modules")
    # Nor between the parts: a subpackage or top-level module and everything inside it.
    parts: dict[str, set[str]] = {}
    for name, imported in graph.items():
        parts.setdefault(_part(name), set()).update(_part(m) for m in imported)
    parts = {part: imported - {part, "lowrank_jax"} for part, imported in parts.items()}
    _check_acyclic(parts, "parts")
    assert "lowrank_jax.build" in graph["lowrank_jax.train.state"]
    assert "train" not in parts["build"]  # build is models only; train builds through it
    for name in ("surgery", "build", "train"):  # models/ stays below all three
        assert name not in parts["models"]


def test_cycle_detector_fails_on_a_cycle(tmp_path, monkeypatch):
    package = tmp_path / "lowrank_jax"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from lowrank_jax import b\n")
    (package / "b.py").write_text("from lowrank_jax.a import f\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    with pytest.raises(
        AssertionError, match=r"cycle \(modules\): lowrank_jax\.a -> lowrank_jax\.b"
    ):
        test_no_import_cycle_inside_the_package()


def test_cycle_detector_fails_on_a_cycle_between_packages(tmp_path, monkeypatch):
    """p.one imports q.two and q.three imports p.four: no module cycle, a package one."""
    package = tmp_path / "lowrank_jax"
    for sub, text in {
        "p": {"one": "q.two", "four": ""},
        "q": {"three": "p.four", "two": ""},
    }.items():
        (package / sub).mkdir(parents=True)
        (package / sub / "__init__.py").write_text("")
        for module, imported in text.items():
            line = f"from lowrank_jax.{imported.replace('.', ' import ')}\n" if imported else ""
            (package / sub / f"{module}.py").write_text(line)
    (package / "__init__.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    with pytest.raises(AssertionError, match=r"import cycle \(parts\): p -> q -> p"):
        test_no_import_cycle_inside_the_package()


def test_no_package_file_over_350_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 350
    }
    assert not long


def _tiny(**train):
    config = load_config(TINY)
    config.train.update(steps=4, log_every=1, eval_every=0, eval_batches=1, peak_flops=1e12)
    config.train.update(train)
    return config


def test_train_state_is_what_the_trainer_and_bench_use(tmp_path):
    config = _tiny()
    run = train_state(config, single_device_mesh())
    assert run.params["trainable"] == run.params["total"] > 0
    batch = {
        "tokens": np.ones((32, 64), np.int32),
        "mask": np.ones((32, 64), bool),
        "label": np.zeros(32, np.int32),
    }
    from lowrank_jax.train import sharding

    placed = sharding.place_batch(batch, run.mesh, 32)
    state, metrics = run.train_step(run.state, placed)
    assert set(metrics) == {"loss", "accuracy", "grad_norm", "learning_rate"}
    assert set(run.eval_step(state, placed)) == {"loss", "accuracy", "count"}


def test_frobenius_decay_is_in_the_gradient_not_in_the_logged_loss():
    """Same batch, same start: the decayed run logs the same loss, its penalty
    beside it, and takes a different step (the penalty's gradient)."""
    from lowrank_jax.train import sharding

    batch = {
        "tokens": np.arange(32 * 64).reshape(32, 64) % 30 + 1,
        "mask": np.ones((32, 64), bool),
        "label": np.arange(32) % 4,
    }
    out = {}
    for decay in (0.0, 10.0):
        config = _tiny(weight_decay=0.0, warmup_steps=0, schedule="constant")
        config.model.dropout = 0.0
        config.model.ffn.dense.update(kind="factorized", rank=8, frobenius_decay=decay)
        run = train_state(config, single_device_mesh())
        placed = sharding.place_batch(batch, run.mesh, 32)
        state, metrics = run.train_step(run.state, placed)
        out[decay] = metrics, np.asarray(run.merge(state).layers[0].ffn.up.a[...])
    (plain, plain_a), (decayed, decayed_a) = out[0.0], out[10.0]
    assert "frobenius_penalty" not in plain and float(decayed["frobenius_penalty"]) > 0
    # the same forward in two compiled programs (bitwise here); fused otherwise, a float32
    # loss of ~1.7 moves by <~ 2·500 terms·u·|h| (3) = 2e-4 -> rel 1e-4 (u = 2^-24); the
    # penalty mixed in would add λ/2·‖AB‖² = O(1)
    assert float(decayed["loss"]) == pytest.approx(float(plain["loss"]), rel=1e-4)
    assert not np.allclose(plain_a, decayed_a)


def test_profile_steps_write_a_trace_and_the_summary_has_the_input_wait(tmp_path):
    from lowrank_jax.train.trainer import train_and_evaluate

    summary = train_and_evaluate(_tiny(profile_steps="2-3"), tmp_path / "run")
    traces = list((tmp_path / "run" / "profile").rglob("*.xplane.pb"))
    assert len(traces) == 1  # one trace, of steps 2 and 3, viewable in TensorBoard / Perfetto
    assert list((tmp_path / "run" / "profile").rglob("perfetto_trace.json.gz"))
    assert 0.0 <= summary["input_wait_fraction"] < 1.0


def test_distillation_from_self_starts_at_zero_and_trains(tmp_path):
    """LoRA's B starts at 0, so the student equals its teacher (itself before surgery)."""
    from lowrank_jax.train.trainer import train_and_evaluate

    config = _tiny(loss="distillation", learning_rate=1e-2, warmup_steps=0)
    config.model.lora.rank = 2
    config.model.dropout = 0.0
    summary = train_and_evaluate(config, tmp_path / "run")
    records = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    first = records[0]
    # B = 0: student and teacher outputs are equal, cos(x, x) = 1 up to its D = 32-term sums
    # and a division, ~(32 + 4)·u = 2e-6; the loss (1 - cos or mse) likewise ~0
    assert "accuracy" not in first and first["cosine"] == pytest.approx(1.0, abs=1e-5)
    assert first["loss"] == pytest.approx(0.0, abs=1e-5)
    assert summary["test_accuracy"] is None and np.isfinite(summary["test_loss"])
    # a run directory as the teacher: the classification run's trained model
    teacher = tmp_path / "teacher"
    train_and_evaluate(_tiny(), teacher)
    config = _tiny(loss="distillation")
    config.train.distillation.teacher = str(teacher)
    config.train.distillation.metric = "mse"
    summary = train_and_evaluate(config, tmp_path / "student")
    assert summary["final_train_loss"] > 0 and np.isfinite(summary["test_loss"])


def test_a_precomputed_teacher_target_gives_the_same_step_without_the_teachers_forward():
    """``batch["target"]`` (the teacher's pooled output, computed once) takes the
    same step as running the teacher inside it, and the compiled step drops the
    teacher's forward (fewer FLOPs)."""
    from lowrank_jax.train import sharding

    config = _tiny(loss="distillation", warmup_steps=0)
    config.train.distillation.metric = "mse"
    config.model.lora.rank = 2
    teacher = build.model(config.model, rngs=build.run_rngs(config.seed), with_surgery=False)
    teacher.eval()
    rng = np.random.default_rng(0)
    batch = {"tokens": rng.integers(1, 30, (32, 16)), "mask": np.ones((32, 16), bool)}
    batch["mask"][:, 12:] = False
    target = np.asarray(teacher.pool(batch["tokens"], batch["mask"]))
    out, flops = {}, {}
    for given in (False, True):
        run = train_state(config, single_device_mesh())
        placed = sharding.place_batch({**batch, "target": target} if given else batch, run.mesh, 32)
        cost = run.train_step.lower(run.state, placed).compile().cost_analysis()
        flops[given] = (cost[0] if isinstance(cost, list) else cost)["flops"]
        state, metrics = run.train_step(run.state, placed)
        lora = run.merge(state).layers[0].attention.query.lora_b[...]  # B starts at 0: A's
        out[given] = float(metrics["loss"]), float(metrics["grad_norm"]), np.asarray(lora)
    # The teacher's pooled output, eager or inside the step (bitwise equal here), may differ
    # by δ <~ 2·500 terms·u·|h| (3) = 1.8e-4 (u = 2^-24); against a student-teacher gap of rms
    # 0.3 (dropout) the mse moves by <= 2·0.3·δ/0.1 = 1.1e-3 relative, the gradient norm by
    # <= δ/0.3 = 6e-4. A target from another function (train mode, other pooling) is O(10%).
    assert out[True][0] == pytest.approx(out[False][0], rel=2e-3) and out[True][0] > 0
    assert out[True][1] == pytest.approx(out[False][1], rel=1e-3) and out[True][1] > 0
    assert np.abs(out[True][2]).max() > 0  # B moved: the step is the loss's
    # Adam's first step is lr·g/(|g| + ε), ε = 1e-8 ≪ |g|: a relative change r of g moves it
    # by lr·r·ε/|g|, nothing at this scale; only a sign flip (|g| at rounding level) would show
    np.testing.assert_allclose(out[True][2], out[False][2], rtol=1e-4, atol=1e-7)
    assert flops[True] < 0.8 * flops[False]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("loss", "ranking", r"^train\.loss: must be one of classification, distillation"),
        ("distillation.metric", "kl", r"^train\.distillation\.metric: must be one of cosine"),
        ("distillation.teacher", "/nowhere", r"^train\.distillation\.teacher: must be 'self'"),
    ],
)
def test_bad_loss_fields_name_the_field(field, value, message):
    config = _tiny(loss="distillation")
    group, _, leaf = field.rpartition(".")
    (config.train[group] if group else config.train)[leaf] = value
    with pytest.raises(ConfigError, match=message):
        validate(config)


def test_a_config_is_checked_once(monkeypatch):
    from lowrank_jax.models import config as model_config

    calls = []
    check = model_config._validate
    monkeypatch.setattr(model_config, "_validate", lambda cfg: calls.append(1) or check(cfg))
    config = _tiny()
    config.model.dim = 24  # a config no other test resolved before
    validate(config)
    train_state(config, single_device_mesh())
    assert len(calls) == 1


def test_callbacks_see_every_step(tmp_path):
    from lowrank_jax.train.trainer import train_and_evaluate

    seen = []
    train_and_evaluate(_tiny(), tmp_path / "run", callbacks=[lambda step, state: seen.append(step)])
    assert seen == [1, 2, 3, 4]


def test_a_bug_is_a_traceback_not_bad_input(tmp_path, monkeypatch):
    """A ``KeyError`` inside the code must not come out as "bad config" (exit 2)."""
    from lowrank_jax import data

    def broken(data_config):
        raise KeyError("a bug")

    monkeypatch.setattr(data, "check", broken)
    argv = ["train", "--config", TINY, "--workdir", str(tmp_path / "run")]
    monkeypatch.setattr(sys, "argv", ["lowrank-jax", *argv])
    with pytest.raises(KeyError, match="a bug"):
        cli.main(argv)


@pytest.mark.parametrize("kind", ["softmax", "linformer"])
def test_captured_attention_weights_are_the_models_own(kind):
    cfg = default_config()
    cfg.update(vocab_size=20, max_len=8, dim=16, heads=2, num_layers=2)
    cfg.attention.kind = kind
    cfg.attention.linformer.proj_len = 4
    model = build_encoder(cfg, rngs=nnx.Rngs(0))
    model.eval()
    tokens = jax.random.randint(jax.random.key(1), (2, 8), 1, 20)
    mask = jnp.arange(8)[None] < jnp.array([[8], [5]])
    plain = model(tokens, mask)
    logits, sown = capture_intermediates(model, tokens, mask)
    # recording changes nothing; it takes the explicit-weights softmax path, so at most the
    # order of the real sums differs: ~130 terms a layer, 2 layers, Σ|terms| <~ 3 (after
    # LayerNorm): 2·260·u·3 -> 9e-5 (u = 2^-24, as for every bound below)
    np.testing.assert_allclose(logits, plain, atol=1e-4)
    layer = sown["layers"][0]
    weights = layer["attention"]["mixer"]["attention_weights"][0]
    assert weights.shape == ((2, 2, 9, 9) if kind == "softmax" else (2, 2, 9, 4))
    # normalised weights: each off by <= w·(c_exp + N + 2)·u (N <= 9), the sum by ~2e-6
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    if kind == "softmax":  # the padded keys of the second row get no weight (CLS is first)
        np.testing.assert_allclose(weights[1, :, :, 6:], 0.0, atol=1e-7)  # exp(-1e30) is 0
        # layer 1's weights are softmax(q kᵀ / √K) of its normed input, layer 0's output
        hidden = layer["hidden_states"][0]  # [B, 9, D]
        block = model.layers[1]
        x = block.attention_norm(hidden)
        q = block.attention.query(x).reshape(2, 9, 2, 8)
        k = block.attention.key(x).reshape(2, 9, 2, 8)
        logits = jnp.einsum("bnhk,bshk->bhns", q, k) / jnp.sqrt(8.0)
        keys = jnp.concatenate([jnp.ones((2, 1), bool), mask], axis=1)[:, None, None, :]
        expected = jax.nn.softmax(jnp.where(keys, logits, -1e30), axis=-1)
        sown_1 = sown["layers"][1]["attention"]["mixer"]["attention_weights"][0]
        # logits off by δ <= 9·u·Σ|q||k|/√K (<~ 5) = 2.7e-6 per side, weights (<= 1) by
        # <= 2δ + (N + 6)·u = 6.3e-6 each -> 1.3e-5
        np.testing.assert_allclose(sown_1, expected, atol=2e-5)
    assert "attention_weights" not in str(nnx.state(model))  # nothing left behind


def test_capture_has_nothing_for_performer():
    cfg = default_config()
    cfg.update(vocab_size=20, max_len=8, dim=16, heads=2, num_layers=1)
    cfg.attention.kind = "performer"
    model = build_encoder(cfg, rngs=nnx.Rngs(0))
    _, sown = capture_intermediates(model.pool, jnp.ones((2, 8), int))
    paths = [".".join(map(str, path)) for path, _ in nnx.to_flat_state(sown)]
    assert paths == ["layers.0.hidden_states"]
    assert sown["layers"][0]["hidden_states"][0].shape == (2, 9, 16)


@pytest.mark.parametrize(
    ("variant", "init"), [("dora", "default"), ("lora", "pissa"), ("dora", "olora")]
)
def test_lora_variant_and_init_from_the_config_keep_the_model_at_init(variant, init):
    config = load_config(TINY).model
    tokens = jnp.asarray(np.random.default_rng(0).integers(1, config.vocab_size, (2, 8)))
    mask = jnp.ones((2, 8), bool)
    plain = build.model(config, rngs=build.run_rngs(0))
    plain.eval()
    config.lora.update(rank=2, alpha=4.0, variant=variant, init=init)
    model = build.model(config, rngs=build.run_rngs(0))
    model.eval()
    # DoRA's m/‖W‖ is 1; PiSSA/OLoRA split W in float64 and store W_res, A, B in float32:
    # ~6·u·|W| per weight, then x·W_res + s·(x·A)·B against x·W (~40 terms, Σ|x||W| <~ 5):
    # ~2·40·u·5 = 2.4e-5 per Q/V layer, 2 layers with gain ~1 -> 5e-5
    np.testing.assert_allclose(model(tokens, mask), plain(tokens, mask), atol=1e-4)
    names = {str(path[-1]) for path, _ in nnx.to_flat_state(nnx.state(model, nnx.LoRAParam))}
    assert ("magnitude" in names) == (variant == "dora")
    config.lora.variant = "vera"
    with pytest.raises(ConfigError, match=r"^model.lora.variant: must be one of lora, dora"):
        build.model(config, rngs=build.run_rngs(0))


def test_lora_rules_from_the_config():
    from lowrank_jax.surgery import ranks

    config = load_config(TINY).model
    config.lora.rules = [[r"layers\.0\.attention\.query", 4, 8.0]]
    model = build.model(config, rngs=build.run_rngs(0))
    assert ranks(model) == {"layers.0.attention.query": 4}
    config.lora.rank = 2  # then the targets are the last rule
    assert set(ranks(build.model(config, rngs=build.run_rngs(0))).values()) == {2, 4}
    config.lora.rules = [[r"layers\.0\.attention\.query", 0, 8.0]]
    with pytest.raises(ConfigError, match=r"^model.lora.rules\[0\].rank: must be an integer"):
        build.model(config, rngs=build.run_rngs(0))
    config.lora.rules = [[r"layers\.9\.attention\.query", 4, None]]
    with pytest.raises(ConfigError, match=r"^model.lora.rules\[0\]: must be a pattern matching"):
        build.model(config, rngs=build.run_rngs(0))


@pytest.mark.parametrize(("old", "new"), SHIMS)
def test_a_moved_module_or_name_warns_naming_its_new_path_and_is_the_new_one(old, new):
    module, _, name = new.partition(":")
    shown = new.replace(":", ".")
    with pytest.warns(DeprecationWarning, match=rf"^{old} is deprecated: import {shown}$"):
        if name:  # a name: build.train_state -> train.state.train_state
            parent, _, attr = old.rpartition(".")
            found = getattr(importlib.import_module(parent), attr)
        else:
            sys.modules.pop(old, None)
            found = importlib.import_module(old)
    expected = importlib.import_module(module)
    assert found is (getattr(expected, name) if name else expected)
