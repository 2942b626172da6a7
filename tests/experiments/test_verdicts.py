"""Flip tests: every verdict a generated table states changes when its numbers cross it.

Each test copies the committed experiments (results and paper.json), moves the
numbers behind one verdict to each side of it, and checks that the generated text
follows. A verdict that cannot flip would be typed, not computed.
"""

import json
import shutil
from pathlib import Path

import pytest

from lowrank_jax.config import load_module
from lowrank_jax.tables import load_note, read_csv

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def folder(tmp_path) -> Path:
    """A copy of experiments/ to change results in."""
    shutil.copytree(ROOT / "experiments", tmp_path / "experiments")
    return tmp_path / "experiments"


def _tables(folder: Path, name: str = ""):
    return load_module(folder / name / "tables.py" if name else folder / "tables.py")


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _flat(text: str) -> str:
    return " ".join(text.split())


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    import csv

    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


# svd_compression ---------------------------------------------------------------------------


def _seeds(folder: Path, cosines: list[float]) -> None:
    def change(record):
        template = record["seeds"][0]
        record["seeds"] = [dict(template, seed=i, mean_cosine=c) for i, c in enumerate(cosines)]

    _edit_json(folder / "svd_compression" / "results" / "recovery.json", change)


@pytest.mark.parametrize(
    "cosines, verdict",
    [
        ([0.96, 0.961, 0.962], "reached"),  # the interval's lower end above 0.95
        ([0.942, 0.943, 0.941], "not reached"),  # its upper end below
        ([0.93, 0.97, 0.95], "undecided"),  # the interval straddles the goal
        ([0.99], "undecided (n = 1)"),  # no interval from one seed
    ],
)
def test_the_recovery_goal_follows_the_interval_of_the_mean(folder, cosines, verdict):
    _seeds(folder, cosines)
    answer = _flat(_tables(folder, "svd_compression").recovery_answer(folder / "svd_compression"))
    assert f"the goal of 0.95 is **{verdict}**" in answer
    row = _tables(folder).svd_compression(folder)
    assert f"on the mean over seeds: {verdict})" in row


def test_the_probe_intervals_count_each_tasks_test_examples(folder):
    """trec's test split has 500 questions: a probe of 1,000 scores all 500, not 1,000."""
    answer = _flat(_tables(folder, "svd_compression").recovery_answer(folder / "svd_compression"))
    # the original's 0.774 on trec: 1.96 × sqrt(0.774 × 0.226 / 500) = 0.037 (0.026 at 1,000)
    assert "trec 0.771 against the original's 0.774 ± 0.037 over 500 test examples" in answer
    assert "over 1,000 test examples" in answer  # reviews: 1,000 of its 2,000


def test_the_budget_reading_follows_which_allocation_wins(folder):
    tables = _tables(folder, "svd_compression")
    here = folder / "svd_compression"
    assert "that total is a poor proxy" in _flat(tables.budget_answer(here))

    def greedy_wins(records):
        for r in records:
            if r["method"] == "greedy whitened":
                r["mean_cosine"] = 0.99

    _edit_json(here / "results" / "budget.json", greedy_wins)
    answer = _flat(tables.budget_answer(here))
    assert "poor proxy" not in answer and "ranks the allocations as the embedding does" in answer
    assert "Greedy whitened beats uniform whitened at 6 of the 6 budgets" in answer


def test_the_spectrum_reading_follows_the_ranks(folder):
    tables = _tables(folder, "svd_compression")
    here = folder / "svd_compression"
    assert "Real FFN weights are not low rank" in _flat(tables.spectrum(here))

    def low_rank(record):
        for layer in record["layers"].values():
            layer["rank_at_0.9"] = 20

    _edit_json(here / "results" / "spectrum.json", low_rank)
    text = _flat(tables.spectrum(here))
    assert "12 of the 12 FFN kernels are low rank" in text and "not low rank" not in text


# listops -----------------------------------------------------------------------------------


def test_the_lra_performer_reading_follows_the_intervals(folder):
    tables = _tables(folder, "listops")
    here = folder / "listops"
    assert (
        _tables(folder)
        .listops(folder)
        .endswith(
            "is the features, not the method: "
            "with M = 2 the Performer falls below its "
            "own M = 64 run, whose interval reaches "
            "the exact Transformer's"
        )
    )
    path = here / tables.LRA_RESULTS
    rows = read_csv(path)
    for row in rows:  # M = 2 as good as M = 64: the features are not the cause
        if row["name"] == tables.LRA_PERFORMER:
            row["test_accuracy"] = next(
                r["test_accuracy"] for r in rows if r["name"] == tables.OUR_PERFORMER
            )
    _write_csv(path, rows)
    row = _tables(folder).listops(folder)
    assert "not the method" not in row
    assert tables.lra_verdict(tables.lra_runs(here)) in row


# rank_sweep --------------------------------------------------------------------------------


def test_the_rank_sweep_reading_follows_the_dense_models_gap(folder):
    row = _tables(folder).rank_sweep(folder)
    assert "no dense model overfits" in row
    path = folder / "rank_sweep" / "results" / "listops" / "results.csv"
    rows = read_csv(path)
    for r in rows:
        if not r["ffn_rank"] and not r["qkv_rank"]:
            r["train_accuracy"] = "0.9"  # far above its eval accuracy (about 0.32)
    _write_csv(path, rows)
    row = _tables(folder).rank_sweep(folder)
    assert "the dense model overfits on ListOps" in row and "no dense model" not in row


# lora_minilm -------------------------------------------------------------------------------


def _table_json(folder: Path, trec: dict[str, list[float]]) -> None:
    """Every method on both tasks with these per-seed test accuracies (the same per task)."""

    def change(table):
        for task in table:
            for label, row in table[task].items():
                row.pop("accuracy", None)
                row["test_accuracies"] = trec.get(label, trec["other"])
                row["test_examples"] = 500

    _edit_json(folder / "lora_minilm" / "results" / "table.json", change)


def test_lora_against_full_follows_the_margin(folder):
    tables = _tables(folder, "lora_minilm")
    here = folder / "lora_minilm"
    row = _tables(folder).lora_minilm(folder)
    assert "one seed per method, so no method is compared" in row  # the one-seed table
    assert "not compared (n = 1)" in tables.ours_answer(here)

    full = [0.90, 0.902, 0.898]
    _table_json(folder, {"full fine-tuning": full, "other": [0.901, 0.899, 0.900]})
    answer = _flat(tables.ours_answer(here))
    assert "LoRA R=1 (W_q, W_v): reviews matches (difference" in answer
    row = _tables(folder).lora_minilm(folder)
    assert "3 seeds; matching full fine-tuning on every task within ±1.0 points: LoRA R=1" in row
    assert "below it on every task: none" in row

    _table_json(folder, {"full fine-tuning": full, "other": [0.85, 0.852, 0.848]})
    answer = _flat(tables.ours_answer(here))
    assert "LoRA R=1 (W_q, W_v): reviews lower (difference" in answer
    assert "matches" not in answer
    row = _tables(folder).lora_minilm(folder)
    assert "within ±1.0 points: none; below it on every task: LoRA R=1" in row

    _table_json(folder, {"full fine-tuning": full, "other": [0.85, 0.95, 0.90]})
    assert "no difference detected (difference" in tables.ours_answer(here)


def test_the_table_says_seeds_or_one_standard_error(folder):
    tables = _tables(folder, "lora_minilm")
    here = folder / "lora_minilm"
    assert "± one binomial standard error (one seed per method)" in _flat(tables.ours(here))
    _table_json(folder, {"full fine-tuning": [0.9, 0.91, 0.92], "other": [0.8, 0.8, 0.83]})
    text = _flat(tables.ours(here))
    assert "mean ± the half-width of the 95% interval over seeds" in text
    assert "500 reviews and 500 trec test examples" in text
    # mean 0.91, std 0.01, t(2) = 4.303: ± 0.025
    assert "| full fine-tuning | 22,565,378 | 0.910 ± 0.025 (n = 3) |" in text


# timings: the machine's load is printed, not claimed ---------------------------------------


def test_timing_notes_print_the_recorded_load(folder):
    tables = _tables(folder, "lora_minilm")
    here = folder / "lora_minilm"
    assert "load not recorded" in _flat(tables.peer_steps(here, "trec"))
    _edit_json(
        here / "results" / "peer_trec_steps.json",
        lambda r: r.update(load={"before": [0.05, 0.1, 0.1], "after": [2.5, 1.0, 0.5]}),
    )
    text = _flat(tables.peer_steps(here, "trec"))
    assert "0.05 / 0.10 / 0.10 before, 2.50 / 1.00 / 0.50 after: nothing else running" in text
    _edit_json(
        here / "results" / "peer_trec_steps.json",
        lambda r: r.update(load={"before": [1.5, 1.1, 1.0], "after": [2.5, 1.0, 0.5]}),
    )
    text = _flat(tables.peer_steps(here, "trec"))
    assert "other work running (1-minute load 1.50" in text and "nothing else" not in text
    assert load_note(None) == "load not recorded"


# the top-level README's other rows -----------------------------------------------------------


def test_speed_rows_say_faster_only_when_faster(folder):
    assert "(faster / faster)" in _tables(folder).lra_speed_memory(folder)

    def slower(results):
        for row in results["rows"]:
            if row["model"] != "softmax":
                row["speedup"] = 0.8

    _edit_json(folder / "lra_speed_memory" / "results" / "results.json", slower)
    row = _tables(folder).lra_speed_memory(folder)
    assert "0.8× / 0.8× the steps per second" in row and "(not faster / not faster)" in row


def test_seed_claims_row_counts_its_seeds(folder):
    assert "(CPU scale, 3 seeds, Welch 95%)" in _tables(folder).seed_claims(folder)
    path = folder / "seed_claims" / "results" / "regularisation" / "runs.csv"
    rows = read_csv(path)
    _write_csv(path, [r for r in rows if r["seed"] != "2"])
    assert "(CPU scale, 2 seeds, Welch 95%)" in _tables(folder).seed_claims(folder)


def test_lora_params_match_is_counted(folder):
    assert _tables(folder).lora_params(folder) == "exact match"

    def misprint(paper):
        paper["rows"][0]["trainable"] = "9.9M"

    _edit_json(folder / "lora_params" / "paper.json", misprint)
    assert _tables(folder).lora_params(folder).startswith("matches in ")


def _demo_results(folder: Path, means: dict, improving: dict) -> None:
    """results.csv and runs.csv of a demo of 3 seeds per rank: test accuracy ``means[R]``
    (std 0.01), and ``improving[R]`` of the 3 runs best at their last evaluation (300)."""
    rows, runs = [], []
    for rank, mean in means.items():
        k = improving.get(rank, 0)
        rows.append({"lora_rank": rank, "params_trainable": 1000 * rank, "n": 3,
                     "test_accuracy": mean, "test_accuracy_std": 0.01,
                     "test_accuracy_ci95": 0.025, "val_accuracy": mean, "val_accuracy_ci95": "",
                     "train_accuracy": mean, "train_accuracy_ci95": "",
                     "best_at_last_eval": f"{k} of 3", "still_improving": 2 * k > 3,
                     "name": f"lora.rank={rank}"})  # fmt: skip
        for seed in range(3):
            best = 300 if seed < k else 250
            runs.append({"name": f"lora.rank={rank},seed={seed}", "best_step": best,
                         "last_eval_step": 300})  # fmt: skip
    results = folder / "demo" / "results"
    _write_csv(results / "results.csv", rows)
    _write_csv(results / "runs.csv", runs)


def test_demo_reading_follows_the_differences_and_the_convergence(folder):
    demo = _tables(folder).demo
    _demo_results(folder, {1: 0.80, 4: 0.85, 32: 0.90}, {})
    text = _flat(demo(folder))
    assert "Every point converged by the report's rule" in text
    assert "R = 1: 250, 250, 250; R = 4: 250" in text and "(step 300)" in text
    assert "R = 32 scores 10.0 points above R = 1" in text
    assert "R = 4 scores 5.0 points above R = 1" in text
    _demo_results(folder, {1: 0.80, 4: 0.805, 32: 0.77}, {1: 2})
    text = _flat(demo(folder))
    assert "R = 1: 2 of 3 runs were still improving" in text and "Every point" not in text
    assert "no difference detected between R = 4 and R = 1" in text
    assert "R = 32 scores 3.5 points below R = 4" in text


def test_performer_reading_follows_the_errors(folder):
    tables = _tables(folder, "performer_approximation")
    here = folder / "performer_approximation"
    text = _flat(tables.reading(here))
    assert "the error does not fall with M up to M =" in text  # at the higher scale
    assert "Trigonometric features have catastrophic outliers" in text

    def scale_as_one_over_m(results):
        for kinds in results["mse"].values():
            for by_m in kinds.values():
                for m, values in by_m.items():  # error = 1/M exactly, the same every seed
                    by_m[m] = [1.0 / int(m)] * len(values)

    _edit_json(here / "results" / "mse.json", scale_as_one_over_m)
    text = _flat(tables.reading(here))
    assert "does not fall" not in text and "A possible reason" not in text
    assert "the error falls with M, as fast as 1/M or faster" in text
    assert "is not seen here" in text and "catastrophic outliers" not in text


def test_sweep_convergence_note_counts_the_points_best_at_their_last_evaluation(folder):
    tables = _tables(folder, "rank_sweep")
    path = folder / "rank_sweep" / "results" / "listops" / "results.csv"
    rows = read_csv(path)
    for row in rows:  # every best evaluation before the last: nothing flagged
        row["best_eval_accuracy"] = str(float(row["eval_accuracy"]) + 0.01)
    _write_csv(path, rows)
    text = _flat(tables.TABLES["listops"](folder / "rank_sweep"))
    assert "all had plateaued" in text and "may still be improving" not in text
    rows[0]["best_eval_accuracy"] = rows[0]["eval_accuracy"]  # the dense point: best = last
    _write_csv(path, rows)
    text = _flat(tables.TABLES["listops"](folder / "rank_sweep"))
    assert f"1 of {len(rows)} points had their best evaluation at their last" in text
    assert "(dense (reference))" in text
