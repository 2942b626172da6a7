from lowrank_jax.report import label


def test_listops_quick_form_sweeps_qkv_ranks(tmp_path, tiny_listops, quick_sweep):
    rows = quick_sweep(
        "rank_sweep.py",
        "dataset=listops,ranks=none,qkv_ranks=16",  # FFN ranks: test_listops.py
        data={"data_dir": str(tmp_path / "tfds"), "max_len": 64},
        model={"max_len": 64},
    )
    assert [label(r) for r in rows] == ["softmax, dense", "softmax, qkv R=16"]
    dense = next(r for r in rows if label(r) == "softmax, dense")
    for row in rows:
        assert row["train_accuracy"] is not None
        if row is not dense:
            assert row["params_total"] < dense["params_total"]


def test_fashion_mnist_quick_form(tmp_path, tiny_fashion_mnist, quick_sweep):
    rows = quick_sweep(
        "rank_sweep.py",
        "dataset=fashion_mnist,ranks=2,qkv_ranks=none",
        data={"data_dir": str(tmp_path / "tfds"), "source_dir": str(tiny_fashion_mnist)},
    )
    assert [label(r) for r in rows] == ["softmax, dense", "softmax, R=2"]
