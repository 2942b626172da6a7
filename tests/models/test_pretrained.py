"""all-MiniLM-L6-v2 in our encoder: the PyTorch reference, errors, and what loading builds."""

import json

import numpy as np
import pytest

from lowrank_jax.models import pretrained

# the weights ship as a package (make setup); a machine without it skips these
pytest.importorskip(pretrained.KNOWN["all-MiniLM-L6-v2"])

SENTENCES = [
    "A man is playing a guitar.",
    "ok",
    "The quick brown fox jumps over the lazy dog near the riverbank at dawn.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "これは日本語の文です。",
    "Emoji and punctuation!!! 🙂 -- (really?)",
    " ".join(["a long sentence that is cut at 256 word pieces"] * 40),
]


@pytest.fixture(scope="module")
def minilm():
    return pretrained.load("all-MiniLM-L6-v2")


def test_embeddings_match_transformers_in_pytorch(minilm, torch_embed):
    theirs = torch_embed(SENTENCES)
    model, tokenizer = minilm
    ours = pretrained.embed(model, tokenizer, SENTENCES, batch_size=3)  # several pad lengths

    assert ours.shape == (len(SENTENCES), 384) and ours.dtype == np.float32
    # x/‖x‖ then ‖·‖ again: two 384-term float32 sums of squares, <= 384·u/2 each (u = 2^-24)
    # -> 2.3e-5
    np.testing.assert_allclose(np.linalg.norm(ours, axis=-1), 1.0, atol=5e-5)
    # float32 on both sides, other kernels: ~10 sums of n <= 1536 terms per layer, 6 layers,
    # each rounding ~√n·u at random -> √120·√1536·u ≈ 3e-5 of these unit
    # vectors; 1e-4. A tanh GELU for erf's moves them by 1.1e-3 to 1.8e-3, which 1 - cos < 1e-4
    # (quadratic: ‖Δ‖ up to 1.4e-2) let pass.
    distance = np.linalg.norm(ours - theirs, axis=-1)
    assert distance.max() < 1e-4, distance
    # truncation at 256 word pieces, as sentence-transformers does
    assert len(tokenizer.encode(SENTENCES[-1]).ids) == 256


def test_loaded_encoder_is_a_post_ln_bert_of_the_checkpoint_sizes(minilm):
    model, _ = minilm
    assert len(model.layers) == 6 and model.embed.embedding.shape == (30522, 384)
    assert model.layers[0].ffn.up.kernel.shape == (384, 1536)
    assert model.embed_norm is not None and model.final_norm is None  # post-LN
    assert model.layers[0].attention.query.kernel.shape == (384, 384)


def _checkpoint(tmp_path, mutate):
    """A copy of the MiniLM folder whose state dict was changed by ``mutate``."""
    from safetensors.numpy import load_file, save_file

    folder = pretrained.model_dir("all-MiniLM-L6-v2")
    tensors = load_file(str(folder / "model.safetensors"))
    mutate(tensors)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    for name in ("config.json", "tokenizer.json"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    return tmp_path


def test_missing_tensor_is_named(tmp_path):
    folder = _checkpoint(tmp_path, lambda t: t.pop("encoder.layer.3.output.dense.weight"))
    with pytest.raises(ValueError, match=r"encoder\.layer\.3\.output\.dense\.weight: missing"):
        pretrained.load(folder)


def test_tensor_of_the_wrong_shape_is_named(tmp_path):
    def shrink(tensors):
        key = "encoder.layer.1.attention.self.value.weight"
        tensors[key] = tensors[key][:100]

    with pytest.raises(ValueError, match=r"attention\.self\.value\.weight: shape \(384, 100\)"):
        pretrained.load(_checkpoint(tmp_path, shrink))


def test_unknown_name_and_unsupported_config(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"^pretrained: must be a folder or a known model \(known: all-MiniLM-L6-v2\)",
    ):
        pretrained.load("no-such-model")
    folder = pretrained.model_dir("all-MiniLM-L6-v2")
    config = json.loads((folder / "config.json").read_text())
    with pytest.raises(ValueError, match="model_type 'roberta' is not supported"):
        pretrained.config_from_hf({**config, "model_type": "roberta"})
