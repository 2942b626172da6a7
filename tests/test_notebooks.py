"""The notebooks run top to bottom on small settings (each well under a minute)."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _execute(name: str, tmp_path, monkeypatch, **env) -> nbformat.NotebookNode:
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        notebook, timeout=300, resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    return notebook


def _outputs(notebook) -> str:
    return "\n".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )


def _images(notebook) -> int:
    return sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )


@pytest.mark.parametrize("name", ["quickstart.ipynb", "rank_sweep.ipynb"])
def test_notebook_runs_and_plots(name, tmp_path, monkeypatch):
    notebook = _execute(
        name,
        tmp_path,
        monkeypatch,
        QUICKSTART_STEPS="12",
        LOWRANK_JAX_SWEEP=str(tmp_path / "no-such-sweep"),
        JAX_PLATFORMS="cpu",
    )
    assert _images(notebook) >= 1
    text = _outputs(notebook)
    if name == "quickstart.ipynb":
        assert "max |change| at init: 0.0" in text  # LoRA starts as the identity update
        assert "test_accuracy" in text
    else:
        assert "Pareto front:" in text and "softmax, R=8" in text
