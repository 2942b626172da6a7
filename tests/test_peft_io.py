"""LoRA adapters exchanged with Hugging Face peft (the PyTorch side runs where peft imports)."""

import numpy as np
import pytest
from flax import nnx

from lowrank_jax import surgery
from lowrank_jax.models import pretrained
from lowrank_jax.peft_io import bert_name, export_peft, import_peft, our_path

# the weights ship as a package (make setup); a machine without it skips these
pytest.importorskip(pretrained.KNOWN["all-MiniLM-L6-v2"])

SENTENCES = ["A man is playing a guitar.", "Un homme joue de la guitare.", "short"]
TARGETS = r"layers\.\d+\.attention\.(query|value)"


def _trained_lora(seed=0):
    """MiniLM with rank-4 LoRA on W_q, W_v whose B is no longer zero (as after training)."""
    model, tokenizer = pretrained.load("all-MiniLM-L6-v2")
    surgery.apply_lora(model, TARGETS, 4, alpha=8.0, rngs=nnx.Rngs(seed))
    rng = np.random.default_rng(seed)
    for _, module in nnx.iter_modules(model):
        if hasattr(module, "lora_b"):
            module.lora_b[...] = rng.normal(0, 0.05, module.lora_b.shape).astype(np.float32)
    return model, tokenizer


def test_names_round_trip():
    assert bert_name("layers.3.attention.query") == "encoder.layer.3.attention.self.query"
    assert our_path("encoder.layer.5.output.dense") == "layers.5.ffn.down"
    with pytest.raises(ValueError, match="no BERT module name"):
        bert_name("head")


def test_export_then_import_restores_the_same_embeddings(tmp_path):
    model, tokenizer = _trained_lora()
    expected = pretrained.embed(model, tokenizer, SENTENCES)
    export_peft(model, tmp_path / "adapter")
    with pytest.raises(FileExistsError):
        export_peft(model, tmp_path / "adapter")  # never overwritten silently

    fresh, _ = pretrained.load("all-MiniLM-L6-v2")
    plain = pretrained.embed(fresh, tokenizer, SENTENCES)
    import_peft(fresh, tmp_path / "adapter")
    restored = pretrained.embed(fresh, tokenizer, SENTENCES)
    # float32 tensors restored bitwise and the same program: equal up to reordering the
    # last unit-norm sum (384 terms, ~√384·u = 1.2e-6 typical); a lost pair moves them ~1e-3
    np.testing.assert_allclose(restored, expected, atol=1e-6)
    assert np.abs(plain - expected).max() > 1e-3  # the adapter does change the embeddings


def test_peft_loads_our_adapter_onto_the_pytorch_model(tmp_path, torch_embed):
    pytest.importorskip("peft")
    model, tokenizer = _trained_lora(seed=1)
    export_peft(model, tmp_path / "adapter")
    surgery.merge_lora(model)
    ours = pretrained.embed(model, tokenizer, SENTENCES)
    theirs = torch_embed(SENTENCES, adapter=tmp_path / "adapter")
    # as test_pretrained's PyTorch check (~3e-5 of these unit vectors), the merge adding a
    # rounding per weight; the adapter itself moves them by ~0.1
    distance = np.linalg.norm(ours - theirs, axis=-1)
    assert distance.max() < 1e-4, distance


def test_import_names_the_missing_half_of_a_pair(tmp_path):
    import json

    from safetensors.numpy import save_file

    from lowrank_jax.models import build_encoder, default_config

    config = default_config()
    config.update(vocab_size=16, max_len=8, dim=16, heads=2, num_layers=1)
    model = build_encoder(config, rngs=nnx.Rngs(0))
    key = "base_model.model.encoder.layer.0.attention.self.query.lora_B.weight"
    save_file({key: np.zeros((16, 2), np.float32)}, str(tmp_path / "adapter_model.safetensors"))
    (tmp_path / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 2})
    )
    with pytest.raises(ValueError, match=r"encoder\.layer\.0\.attention\.self\.query lacks lora_A"):
        import_peft(model, tmp_path)


def _tiny_adapter(folder, config: dict, layers=(0,), fill=0.1, ranks=None):
    """A peft folder with rank-2 LoRA (or ``ranks[layer]``) on W_q of the given layers
    of a 16-wide encoder."""
    import json

    from safetensors.numpy import save_file

    tensors = {}
    for layer in layers:
        name = f"base_model.model.encoder.layer.{layer}.attention.self.query"
        r = (ranks or {}).get(layer, 2)
        tensors[f"{name}.lora_A.weight"] = np.full((r, 16), fill, np.float32)
        tensors[f"{name}.lora_B.weight"] = np.full((16, r), fill, np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", **config}))
    return folder


def _tiny_model(num_layers=2):
    from lowrank_jax.models import build_encoder, default_config

    config = default_config()
    config.update(vocab_size=16, max_len=8, dim=16, heads=2, num_layers=num_layers)
    return build_encoder(config, rngs=nnx.Rngs(0))


@pytest.mark.parametrize(
    ("config", "kwargs", "message"),
    [
        (
            {"r": 2, "lora_alpha": 4, "rank_pattern": {"query": 4}},
            {},
            r"has A \(16, 2\), B \(2, 16\); the layer needs \(16, 4\)",
        ),
        ({"r": 2, "lora_alpha": 4}, {"layers": (0, 9)}, r"layer\.9\.attention\.self\.query has no"),
        ({"r": 2, "lora_alpha": 4}, {"fill": np.nan}, "has NaN or infinite weights"),
        ({"r": 4, "lora_alpha": 4}, {}, r"has A \(16, 2\), B \(2, 16\); the layer needs"),
    ],
)
def test_a_bad_adapter_leaves_the_model_untouched(tmp_path, config, kwargs, message):
    model = _tiny_model()
    before = nnx.graphdef(model)
    folder = _tiny_adapter(tmp_path / "adapter", config, **kwargs)
    with pytest.raises(ValueError, match=message):
        import_peft(model, folder)
    assert not surgery.count_params(model)["lora"]  # no LoRA inserted before the failure
    assert nnx.graphdef(model) == before  # the same structure: nothing swapped in


def test_rank_and_alpha_patterns_are_honoured_as_peft_matches_them(tmp_path):
    model = _tiny_model()
    config = {
        "r": 2,
        "lora_alpha": 4,
        "rank_pattern": {"layer.1.attention.self.query": 3},
        "alpha_pattern": {"nothing": 1, r"self\.query": 12},  # the first key that matches wins
    }
    folder = _tiny_adapter(tmp_path / "adapter", config, layers=(0, 1), ranks={1: 3})
    import_peft(model, folder)
    first, second = (model.layers[i].attention.query for i in (0, 1))
    assert (first.rank, second.rank) == (2, 3)
    assert first.scale == pytest.approx(12 / 2) and second.scale == pytest.approx(12 / 3)


def test_a_missing_lora_alpha_is_peft_default_8_and_said(tmp_path):
    model = _tiny_model()
    folder = _tiny_adapter(tmp_path / "adapter", {"r": 2})
    with pytest.warns(UserWarning, match="has no lora_alpha; using peft's default, 8"):
        import_peft(model, folder)
    lora = model.layers[0].attention.query
    assert lora.rank == 2 and lora.scale == pytest.approx(8 / 2)
    np.testing.assert_allclose(np.asarray(lora.lora_a[...]), 0.1)  # float32(0.1): 1.5e-9 off


def test_dora_with_pissa_and_mixed_settings_do_not_export(tmp_path):
    model = _tiny_model()
    surgery.apply_lora(
        model, r"layers\.0\.attention\.query", rank=2, variant="dora", rngs=nnx.Rngs(1)
    )
    surgery.apply_lora(model, r"layers\.1\.attention\.query", rank=2, rngs=nnx.Rngs(1))
    with pytest.raises(ValueError, match=r"^peft export: LoRA layers differ in \(rank, scale"):
        export_peft(model, tmp_path / "adapter")
    model = _tiny_model()
    surgery.apply_lora(
        model, r"layers\.0\.attention\.query", 2, variant="dora", init="pissa", rngs=nnx.Rngs(1)
    )
    with pytest.raises(ValueError, match=r"^peft export: DoRA with init 'pissa' has no peft"):
        export_peft(model, tmp_path / "adapter")
    assert not (tmp_path / "adapter").exists()


def _trained(variant="lora", init="default", seed=0):
    """MiniLM with rank-4 LoRA of ``variant`` / ``init`` on W_q, W_v, moved off its start
    (B, A and DoRA's magnitude perturbed, as after training)."""
    model, tokenizer = pretrained.load("all-MiniLM-L6-v2")
    surgery.apply_lora(
        model, TARGETS, 4, alpha=8.0, variant=variant, init=init, rngs=nnx.Rngs(seed)
    )
    rng = np.random.default_rng(seed)
    for _, module in nnx.iter_modules(model):
        if hasattr(module, "lora_b"):
            for v in (module.lora_a, module.lora_b):
                v[...] = v[...] + rng.normal(0, 0.05, v.shape).astype(np.float32)
            if variant == "dora":
                m = module.magnitude
                m[...] = m[...] * (1 + rng.normal(0, 0.1, m.shape)).astype(np.float32)
    return model, tokenizer


@pytest.mark.parametrize(("variant", "init"), [("dora", "default"), ("lora", "pissa")])
def test_dora_and_pissa_export_then_import_restores_the_embeddings(tmp_path, variant, init):
    model, tokenizer = _trained(variant, init)
    expected = pretrained.embed(model, tokenizer, SENTENCES)
    export_peft(model, tmp_path / "adapter")
    fresh, _ = pretrained.load("all-MiniLM-L6-v2")  # the original W: PiSSA's conversion
    import_peft(fresh, tmp_path / "adapter")
    # the same function from re-rounded weights (PiSSA: W + s·A·B - s·A₀·B₀ for W_res + s·A·B),
    # ~10·u per weight, through 6 layers: ~1e-6 of these unit vectors; 1e-5 leaves margin
    np.testing.assert_allclose(pretrained.embed(fresh, tokenizer, SENTENCES), expected, atol=1e-5)
    lora = fresh.layers[0].attention.query
    assert (lora.variant, lora.rank) == (variant, 4 if init == "default" else 8)


@pytest.mark.parametrize(("variant", "init"), [("dora", "default"), ("lora", "pissa")])
def test_peft_loads_our_dora_and_pissa_adapters(tmp_path, torch_embed, variant, init):
    pytest.importorskip("peft")
    model, tokenizer = _trained(variant, init, seed=2)
    export_peft(model, tmp_path / "adapter")
    ours = pretrained.embed(model, tokenizer, SENTENCES)
    theirs = torch_embed(SENTENCES, adapter=tmp_path / "adapter")
    distance = np.linalg.norm(ours - theirs, axis=-1)  # as test_peft_loads_our_adapter_...
    assert distance.max() < 1e-4, distance


def test_an_adapter_whose_base_was_changed_is_refused(tmp_path):
    folder = _tiny_adapter(
        tmp_path / "adapter", {"r": 2, "lora_alpha": 2, "init_lora_weights": "pissa"}
    )
    with pytest.raises(ValueError, match=r"init_lora_weights 'pissa': the adapter needs the base"):
        import_peft(_tiny_model(), folder)
    dora = _tiny_adapter(tmp_path / "dora", {"r": 2, "lora_alpha": 2, "use_dora": True})
    with pytest.raises(ValueError, match=r"query lacks lora_magnitude_vector"):
        import_peft(_tiny_model(), dora)
