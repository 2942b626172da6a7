"""Linformer (Wang et al. 2020) Fig. 1 on all-MiniLM-L6-v2 and real text: attention spectra.

For passages of N word pieces (consecutive movie reviews joined, cut to N), every layer's and
head's softmax attention matrix P = softmax(QKᵀ/√K) [N, N] of the pretrained
MiniLM is decomposed; the normalised cumulative singular value at index i is
Σ_{j≤i} σ_j / Σ_j σ_j, averaged over sentences. The paper shows, for RoBERTa
at N = 512, that most of the spectrum sits in the first singular values (the
case for a rank-k projection), and a layers × heads heatmap at index k = 128.

    python experiments/linformer_spectrum/run.py          # N = 128, P = N/4, 100 passages
    python experiments/linformer_spectrum/run.py --quick  # 4 passages (CI)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from lowrank_jax.data import text
from lowrank_jax.models import capture_intermediates, pretrained

HERE = Path(__file__).parent


def attention_matrices(model, tokens: jax.Array) -> list[jax.Array]:
    """Per layer, the softmax attention weights [B, H, N, N] the encoder sows on request."""
    model.eval()
    _, sown = capture_intermediates(model.pool, tokens)
    layers = sown["layers"]
    return [layers[i]["attention"]["mixer"]["attention_weights"][0] for i in range(len(layers))]


def spectra(model, tokenizer, sentences: list[str], length: int) -> np.ndarray:
    """Normalised cumulative singular values [sentences, layers, heads, N]."""
    out = []
    for sentence in sentences:
        ids = np.asarray(tokenizer.encode(sentence).ids[:length], np.int32)[None]
        per_layer = []
        for weights in attention_matrices(model, jnp.asarray(ids)):
            s = np.linalg.svd(np.asarray(weights[0], np.float64), compute_uv=False)  # [H, N]
            per_layer.append(np.cumsum(s, -1) / s.sum(-1, keepdims=True))
        out.append(np.stack(per_layer))
    return np.stack(out)


def passages_of(reviews: list[str], tokenizer, length: int, count: int) -> list[str]:
    """``count`` texts of at least ``length`` word pieces: consecutive reviews joined.

    The movie reviews are a sentence or two each, shorter than N.
    """
    passages, current = [], []
    for review in reviews:
        current.append(review)
        joined = " ".join(current)
        if len(tokenizer.encode(joined).ids) >= length:
            passages.append(joined)
            current = []
            if len(passages) == count:
                return passages
    raise ValueError(f"--sentences: the reviews make only {len(passages)} passages of {length}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--length", type=int, default=128, help="N; reviews shorter are skipped")
    parser.add_argument("--sentences", type=int, default=100)
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    count = 4 if args.quick else args.sentences
    length = args.length
    index = length // 4  # P = N / 4, as the paper's k = 128 at N = 512

    model, tokenizer = pretrained.load("all-MiniLM-L6-v2")
    model.eval()
    passages = passages_of(text.read("reviews")[0], tokenizer, length, count)
    curves = spectra(model, tokenizer, passages, length).mean(0)  # [L, H, N]
    at_index = curves[:, :, index - 1]  # [L, H]
    layers, heads = at_index.shape
    lines = [
        f"MiniLM attention matrices, N = {length}, {count} passages of movie reviews: "
        f"normalised cumulative singular value at index {index} (= N/4), mean over passages.",
        "",
        "| layer | " + " | ".join(f"h{h}" for h in range(heads)) + " | mean |",
        "|---:|" + "---:|" * (heads + 1),
    ]
    for layer in range(layers):
        cells = " | ".join(f"{v:.3f}" for v in at_index[layer])
        lines.append(f"| {layer} | {cells} | {at_index[layer].mean():.3f} |")
    table = "\n".join(lines) + "\n"
    print(table)
    result = {"length": length, "index": index, "sentences": count, "at_index": at_index.tolist()}
    if not args.quick:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "spectrum.md").write_text(table)
        (out / "spectrum.json").write_text(
            json.dumps(result | {"curves": curves.mean(1).tolist()}, indent=1) + "\n"
        )
        fig = Figure(figsize=(11, 4))
        left, right = fig.subplots(1, 2)
        positions = np.arange(1, length + 1)
        for layer in range(layers):
            mean = curves[layer].mean(0)
            left.plot(positions, mean, label=f"layer {layer}")
            left.fill_between(positions, curves[layer].min(0), curves[layer].max(0), alpha=0.15)
        left.axvline(index, color="gray", linestyle=":")
        left.set_xlabel("singular value index")
        left.set_ylabel("normalised cumulative singular value")
        left.legend(fontsize=7)
        image = right.imshow(at_index, vmin=at_index.min(), vmax=1.0, cmap="viridis")
        right.set_xlabel("head")
        right.set_ylabel("layer")
        right.set_title(f"at index {index} (N = {length})")
        fig.colorbar(image, ax=right)
        fig.tight_layout()
        fig.savefig(out / "spectrum.png", dpi=100)
    return result


if __name__ == "__main__":
    main()
