"""Test set-up: CPU only, with 8 simulated host devices so sharded code runs everywhere."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count=8".strip()

from pathlib import Path  # noqa: E402
from typing import ClassVar  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def _quick_train(config, workdir, steps=3) -> dict:
    from lowrank_jax.train.trainer import train_and_evaluate

    config.train.update(
        steps=steps, log_every=1, eval_every=0, eval_batches=1, checkpoint_every=steps
    )
    if config.train.train_eval_batches:
        config.train.train_eval_batches = 1
    config.train.peak_flops = 1e12
    summary = train_and_evaluate(config, workdir)
    assert summary["step_traces"] == 1 and np.isfinite(summary["final_train_loss"])
    return summary


@pytest.fixture
def quick_train():
    """``quick_train(config, workdir, steps=3)``: train a few steps in-process (a CI form)."""
    return _quick_train


def _two_processes(code: str, *args: str, devices: int = 1, timeout: float = 150) -> list[str]:
    import socket
    import subprocess
    import sys
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as file:
        file.write(code)
    with socket.socket() as s:
        s.bind(("localhost", 0))
        address = f"localhost:{s.getsockname()[1]}"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    processes = [
        subprocess.Popen(
            [sys.executable, file.name, address, str(i), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=timeout)[0] for p in processes]
    finally:
        for p in processes:
            p.kill()
        os.unlink(file.name)
    assert [p.returncode for p in processes] == [0, 0], [out[-1500:] for out in outputs]
    return outputs


@pytest.fixture
def two_processes():
    """``two_processes(code, *args, devices=1) -> [stdout, stdout]``: run ``code`` as two
    processes over gloo (argv: coordinator address, process id, *args); both must exit 0."""
    return _two_processes


@pytest.fixture
def tiny_listops(monkeypatch):
    """``listops_small`` replaced by a 64/16/16-example ListOps of 8-64 tokens."""
    from lowrank_jax.data import builders

    class TinyListops(builders.ListopsSmall, skip_registration=True):
        SIZES: ClassVar[dict[str, int]] = {"train": 64, "validation": 16, "test": 16}
        MIN_LENGTH, MAX_LENGTH = 8, 64

    monkeypatch.setitem(builders.BUILDERS, "listops_small", TinyListops)
    return TinyListops


@pytest.fixture
def tiny_fashion_mnist(tmp_path) -> Path:
    """A folder of Fashion-MNIST IDX files (32 train, 16 test images) in Debian's layout."""
    from lowrank_jax.data import fashion_mnist

    rng = np.random.default_rng(0)
    source = tmp_path / "idx"
    source.mkdir()
    for split, n in (("train", 32), ("test", 16)):
        images, labels = fashion_mnist.FILES[split]
        fashion_mnist.write_idx(source / images, rng.integers(0, 256, (n, 28, 28)))
        fashion_mnist.write_idx(source / labels, np.arange(n) % 10)
    return source


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


PEERS = ("torch", "transformers", "peft", "performer_pytorch", "linformer")


def pytest_terminal_summary(terminalreporter):
    """Say how many cross-checks against the PyTorch peers were skipped, and how to run them."""
    skipped = [
        report
        for report in terminalreporter.stats.get("skipped", [])
        if any(f"'{peer}'" in str(report.longrepr) for peer in PEERS)
    ]
    if skipped:
        terminalreporter.write_line(
            f"{len(skipped)} cross-checks against PyTorch (transformers, peft, ...) were skipped: "
            "the reference is not installed; run `make reference`, then `make test`"
        )
