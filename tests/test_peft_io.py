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
    np.testing.assert_allclose(restored, expected, atol=1e-6)
    assert np.abs(plain - expected).max() > 1e-3  # the adapter does change the embeddings


def test_peft_loads_our_adapter_onto_the_pytorch_model(tmp_path, torch_embed):
    pytest.importorskip("peft")
    model, tokenizer = _trained_lora(seed=1)
    export_peft(model, tmp_path / "adapter")
    surgery.merge_lora(model)
    ours = pretrained.embed(model, tokenizer, SENTENCES)
    theirs = torch_embed(SENTENCES, adapter=tmp_path / "adapter")
    cosine_distance = 1.0 - np.sum(ours * theirs, axis=-1)
    assert cosine_distance.max() < 1e-4, cosine_distance


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
