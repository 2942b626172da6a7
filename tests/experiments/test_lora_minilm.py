import importlib.util
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "lora_minilm.py"


def _module():
    spec = importlib.util.spec_from_file_location("lora_minilm_config", CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sweep_rows_are_the_lora_papers_table_2_methods():
    points = _module().get_sweep()
    assert [p.get("model.lora.rank") for p in points] == [0, 1, 2, 4, 8, 16, 64, 8, 0]
    assert points[0]["train.trainable"] == "all" and points[-1]["model.adapters.bottleneck"] == 16


def test_quick_form_fine_tunes_pretrained_minilm_with_lora(tmp_path, quick_train):
    config = _module().get_config("task=trec,method=lora,rank=8,runlocal")
    config.data.data_dir = str(tmp_path / "tfds")
    summary = quick_train(config, tmp_path / "run", steps=2)
    # LoRA on W_q, W_v: 6 layers x 2 x R (384 + 384), plus the new 6-class head 384 x 6 + 6
    assert summary["params_lora"] == 6 * 2 * 8 * (384 + 384) == 73_728
    assert summary["params_trainable"] == 73_728 + 384 * 6 + 6
