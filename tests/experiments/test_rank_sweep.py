from lowrank_jax.report import label


def test_listops_quick_form_sweeps_ffn_and_qkv_ranks(tmp_path, tiny_listops, quick_sweep):
    rows = quick_sweep(
        "rank_sweep.py",
        "dataset=listops,ranks=4,qkv_ranks=16",  # the full sweep's ranks are 4+16 for both
        data={"data_dir": str(tmp_path / "tfds"), "max_len": 64},
        model={"max_len": 64},
    )
    # the report's order: dense first, then by FFN rank, then by Q/K/V rank
    assert [label(r) for r in rows] == ["softmax, dense", "softmax, qkv R=16", "softmax, R=4"]
    dense = next(r for r in rows if label(r) == "softmax, dense")
    for row in rows:
        assert row["train_accuracy"] is not None
        if row is not dense:
            assert row["params_total"] < dense["params_total"]


def test_fashion_mnist_quick_form(tmp_path, tiny_fashion_mnist, quick_sweep):
    rows = quick_sweep(
        "rank_sweep.py",
        "dataset=fashion_mnist,ranks=2,qkv_ranks=2",
        data={"data_dir": str(tmp_path / "tfds"), "source_dir": str(tiny_fashion_mnist)},
    )
    assert sorted(label(r) for r in rows) == ["softmax, R=2", "softmax, dense", "softmax, qkv R=2"]
