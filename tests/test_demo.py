"""The `make demo` pipeline in its quick mode (needs the data package: processors and the synthetic dataset)."""

import json

import pytest
import torch
from conftest import tiny_hbi_config
from datasets import Dataset

from hbi_hf import HBIForRetrieval, HBIForVideoQA
from hbi_hf.demo import HBIDemoArguments, build_task_model, demo_config, question_type_prior_answers
from hbi_hf.task_training import answer_vocabulary_fields


def test_demo_config_is_small_and_matches_the_clip_tokenizer():
    config = demo_config(HBIDemoArguments())
    assert config.text_config.vocab_size == 49408
    assert (config.vision_config.image_size, config.projection_dim, config.num_frames) == (64, 128, 8)


def test_task_model_can_start_from_a_saved_retrieval_models_encoder(tmp_path):
    torch.manual_seed(0)
    retrieval = HBIForRetrieval(tiny_hbi_config())
    retrieval.save_pretrained(tmp_path)
    args = HBIDemoArguments(init_from=str(tmp_path))
    qa = build_task_model(HBIForVideoQA, args, **answer_vocabulary_fields(["red", "blue", "circle"]))
    assert qa.config.num_labels == 3 and qa.config.num_frames == retrieval.config.num_frames
    encoder = retrieval.hbi.state_dict()
    assert all(torch.equal(tensor, encoder[name]) for name, tensor in qa.hbi.state_dict().items())


def test_question_type_prior_answers_the_most_frequent_answer_of_the_questions_opening_words():
    train = Dataset.from_dict(
        {
            "question": ["what shape is the red object?", "what shape is the blue object?", "What shape is it?"]
            + ["what colour is the first object?"] * 4,
            "label": [0, 0, 1, 2, 3, 3, 3],
        }
    )
    test = Dataset.from_dict({"question": ["what shape is the green object?", "which acts first, a or b?"]})
    # "what shape is" -> 0 (2 of 3, case ignored); an opening never seen in training -> the overall majority, 3
    assert question_type_prior_answers(train, test) == [0, 3]


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
