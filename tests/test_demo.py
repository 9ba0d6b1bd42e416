"""The `make demo` pipeline in its quick mode (needs the data package: processors and the synthetic dataset)."""

import json

import pytest

from hbi_hf.demo import HBIDemoArguments, demo_config


def test_demo_config_is_small_and_matches_the_clip_tokenizer():
    config = demo_config(HBIDemoArguments())
    assert config.text_config.vocab_size == 49408
    assert (config.vision_config.image_size, config.projection_dim, config.num_frames) == (64, 128, 8)


@pytest.mark.slow
def test_quick_demo_trains_evaluates_and_saves(tmp_path):
    pytest.importorskip("hbi_hf.data.synthetic")
    from hbi_hf.demo import run_demo

    args = HBIDemoArguments(output_dir=str(tmp_path / "demo"), data_root=str(tmp_path / "data"), quick=True)
    metrics, chance = run_demo(args)
    assert {"test_t2v_R@1", "test_v2t_R@1"} <= set(metrics) and chance["t2v_R@1"] > 0
    results = json.loads((tmp_path / "demo" / "eval_results.json").read_text())
    assert results["model_index"][0]["task"]["type"] == "text-to-video-retrieval"
    assert (tmp_path / "demo" / "model.safetensors").is_file()
