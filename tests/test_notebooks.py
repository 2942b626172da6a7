"""The notebooks run top to bottom on small settings (each well under a minute) and print
and plot what they are for."""

import ast
import base64
import json
import math
import re
import struct
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ENV = {"QUICKSTART_STEPS": "12", "JAX_PLATFORMS": "cpu"}


def _execute(name: str, monkeypatch, extra: str | None = None, **env) -> nbformat.NotebookNode:
    """The executed notebook; ``extra``: a code cell run after the notebook's own."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    if extra:
        notebook.cells.append(nbformat.v4.new_code_cell(extra))
    NotebookClient(
        notebook, timeout=300, resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    return notebook


def _lines(notebook) -> list[str]:
    """The lines the code cells printed (stdout; the progress bar goes to stderr)."""
    return [
        line
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.get("name") == "stdout"
        for line in output["text"].splitlines()
    ]


def _after(lines: list[str], prefix: str) -> list[str]:
    """What follows ``prefix`` on each printed line that starts with it."""
    return [line.removeprefix(prefix) for line in lines if line.startswith(prefix)]


def _png_sizes(notebook) -> list[tuple[int, int]]:
    """(width, height) of every PNG the cells displayed, from its IHDR chunk."""
    sizes = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if "image/png" in output.get("data", {}):
                png = base64.b64decode(output["data"]["image/png"])
                assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
                sizes.append(struct.unpack(">II", png[16:24]))
    return sizes


def test_quickstart_builds_lora_and_trains(monkeypatch):
    # one more cell prints the records the notebook plotted (``logged``) and whether the
    # trained parameters differ from the ones the run started from
    extra = """
from lowrank_jax import build
from lowrank_jax.train.state import params_sha256
start = build.model(train_config.model, rngs=build.run_rngs(train_config.seed))
print("curve:", json.dumps([[r["step"], r["loss"], r["learning_rate"]] for r in logged]))
print("trained:", summary["params_sha256"] != params_sha256(start))
"""
    notebook = _execute("quickstart.ipynb", monkeypatch, extra, **ENV)
    lines = _lines(notebook)
    # the encoder of the notebook's config: 2 sequences, 4 classes; everything trains
    assert _after(lines, "logits: ") == ["(2, 4)"]
    before, after = map(ast.literal_eval, _after(lines, "parameters: "))
    assert before["trainable"] == before["total"] > 0 and before["lora"] == 0
    # LoRA rank 4 on W_q and W_v of 2 layers of width 32: R (D + D) each, all that trains,
    # and the output unchanged at initialisation (B = 0)
    lora = 2 * 2 * 4 * (32 + 32)
    assert after == {"total": before["total"] + lora, "trainable": lora, "lora": lora}
    assert _after(lines, "max |change| at init: ") == ["0.0"]
    # the trainer's summary: configs/tiny.py:runlocal,lora=4 (width 32) for QUICKSTART_STEPS
    (summary,) = (ast.literal_eval(line) for line in lines if line.startswith("{'test_accuracy'"))
    assert 0 <= summary["test_accuracy"] <= 1 and summary["best_step"] == 12
    assert summary["params_trainable"] == lora < summary["params_total"]
    # the plotted curve: the loss logged every 5 steps and at the end, while the learning
    # rate warms up (its loss falls over 12 steps even at learning rate 0, on these batches:
    # that the run trained shows in its parameters)
    (curve,) = map(json.loads, _after(lines, "curve: "))
    assert [step for step, _, _ in curve] == [5, 10, 12]
    assert all(math.isfinite(loss) and rate > 0 for _, loss, rate in curve)
    assert _after(lines, "trained: ") == ["True"]
    assert _png_sizes(notebook) == [(450, 270)]  # the 5 x 3 in figure at 90 dpi


ROW = re.compile(
    r"(?P<label>.+?) +params +(?P<params>\d+) +test acc (?P<acc>[\d.]+) \(n=(?P<n>\d+)\) "
    r"+step +(?P<ms>[\d.]+) ms"
)


def test_rank_sweep_tabulates_and_finds_the_pareto_front(tmp_path, monkeypatch):
    notebook = _execute(
        "rank_sweep.ipynb",
        monkeypatch,
        LOWRANK_JAX_SWEEP=str(tmp_path / "no-such-sweep"),  # the notebook runs its small sweep
        **ENV,
    )
    lines = _lines(notebook)
    rows = [match.groupdict() for line in lines if (match := ROW.fullmatch(line))]
    # the small sweep's two points, dense and rank 8, one seed each, in the report's order
    assert [row["label"] for row in rows] == ["softmax, dense", "softmax, R=8"]
    dense, low = rows
    for row in rows:
        assert 0 <= float(row["acc"]) <= 1 and row["n"] == "1" and float(row["ms"]) > 0
    # configs/tiny.py:runlocal: 2 layers, FFN 32 -> 64: both denses become 8 x (32 + 64)
    assert int(dense["params"]) - int(low["params"]) == 2 * 2 * (32 * 64 - 8 * (32 + 64))
    # the front: by parameters, each run more accurate than every smaller one
    front, best = [], -1.0
    for row in sorted(rows, key=lambda r: int(r["params"])):
        if float(row["acc"]) > best:
            front.append(row["label"])
            best = float(row["acc"])
    (printed,) = map(ast.literal_eval, _after(lines, "Pareto front: "))
    assert sorted(printed) == sorted(front) and "softmax, R=8" in printed
    assert _png_sizes(notebook) == [(900, 315)]  # accuracy against rank and against params


def test_every_notebook_has_a_test_here():
    assert sorted(path.name for path in NOTEBOOKS.glob("*.ipynb")) == [
        "quickstart.ipynb",
        "rank_sweep.ipynb",
    ]
