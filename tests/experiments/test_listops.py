from lowrank_jax.report import label


def test_quick_form_trains_every_point_and_reports(tmp_path, tiny_listops, quick_sweep):
    rows = quick_sweep(
        "listops.py",
        "runlocal",
        data={"data_dir": str(tmp_path / "tfds"), "max_len": 64},
        model={"max_len": 64},
    )
    assert [r["status"] for r in rows] == ["done"] * 6
    assert {label(r) for r in rows} == {
        f"{kind}, {variant}"
        for kind in ("softmax", "linformer", "performer")
        for variant in ("dense", "R=16")
    }
    # the train/eval gap comes from an evaluation of the final model on training batches
    assert all(r["train_accuracy"] is not None and r["train_eval_gap"] is not None for r in rows)
