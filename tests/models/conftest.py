"""The PyTorch reference side of the pretrained-model tests (skipped without torch)."""

import numpy as np
import pytest


@pytest.fixture
def torch_embed():
    """``torch_embed(sentences, adapter=None) -> [S, 384]``: transformers' MiniLM, mean-pooled.

    sentence-transformers' recipe by hand: BertModel's last hidden state, the mean
    over the attention mask, L2-normalised; ``adapter`` is a peft folder loaded on top.
    """
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from lowrank_jax.models import pretrained

    folder = str(pretrained.model_dir("all-MiniLM-L6-v2"))

    def embed(sentences, adapter=None) -> np.ndarray:
        model = transformers.AutoModel.from_pretrained(folder).eval()
        if adapter is not None:
            peft = pytest.importorskip("peft")
            model = peft.PeftModel.from_pretrained(model, str(adapter)).eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        batch = tokenizer(
            sentences, padding=True, truncation=True, max_length=256, return_tensors="pt"
        )
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        weights = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * weights).sum(1) / weights.sum(1)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy()

    return embed
