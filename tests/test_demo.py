"""The `make demo` pipeline in its quick mode (needs the data package: processors and the synthetic dataset)."""

import json

import pytest
import torch
from conftest import tiny_hbi_config
from datasets import Dataset

from hbi_hf import HBIForRetrieval, HBIForVideoQA
from hbi_hf.demo import (
    HBIDemoArguments,
    HBIRetrievalDemoArguments,
    build_retrieval_model,
    build_task_model,
    demo_config,
    demo_training_arguments,
    question_type_prior_answers,
)
from hbi_hf.task_training import answer_vocabulary_fields


def test_demo_config_is_small_and_matches_the_clip_tokenizer():
    config = demo_config(HBIDemoArguments())
    assert config.text_config.vocab_size == 49408
    assert (config.vision_config.image_size, config.projection_dim, config.num_frames) == (64, 128, 8)


def test_retrieval_demo_takes_the_papers_schedule_with_pretrained_towers_and_the_measured_one_from_scratch():
    assert HBIRetrievalDemoArguments().towers == "scratch"
    pretrained = HBIRetrievalDemoArguments(towers="pretrained")
    training = demo_training_arguments(pretrained)
    # tau = 0.01; new modules at 1e-3, CLIP at coef_lr = 1e-3 times that; no alpha warm-up
    assert (pretrained.temperature, training.learning_rate, training.coef_lr) == (0.01, 1e-3, 1e-3)
    assert training.banzhaf_loss_warmup_steps == 0.0
    scratch = HBIRetrievalDemoArguments()
    training = demo_training_arguments(scratch)
    assert (scratch.temperature, training.learning_rate, training.coef_lr, training.num_train_epochs) == (
        0.05,
        5e-4,
        1.0,
        10.0,
    )
    assert training.banzhaf_loss_warmup_steps == 0.2
    assert HBIRetrievalDemoArguments(temperature=0.02, coef_lr=0.1).coef_lr == 0.1
    with pytest.raises(ValueError, match="--towers"):
        HBIRetrievalDemoArguments(towers="random")


def test_retrieval_demo_fine_tunes_the_pretrained_towers_loaded_like_a_real_clip(tmp_path):
    from transformers import CLIPModel

    args = HBIRetrievalDemoArguments(
        towers="pretrained",
        pretrained_dir=str(tmp_path / "clip"),
        hidden_size=32,
        num_layers=1,
        image_size=32,
        num_frames=4,
        max_words=16,
        pretraining_steps=2,
        pretraining_scenes=6,
    )
    torch.manual_seed(0)
    model = build_retrieval_model(args)
    clip = CLIPModel.from_pretrained(tmp_path / "clip").state_dict()
    towers = model.hbi.clip.state_dict()
    assert all(torch.equal(tensor, towers[name]) for name, tensor in clip.items())
    assert model.config.temperature == 0.01 and model.config.clip_name_or_path == str(tmp_path / "clip")
    scratch = build_retrieval_model(HBIRetrievalDemoArguments(towers="scratch", quick=True))
    assert scratch.config.temperature == 0.05 and scratch.config.clip_name_or_path is None


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

    args = HBIRetrievalDemoArguments(
        output_dir=str(tmp_path / "demo"),
        data_root=str(tmp_path / "data"),
        towers="pretrained",
        pretrained_dir=str(tmp_path / "clip"),
        quick=True,
    )
    metrics, chance = run_demo(args)
    assert (tmp_path / "clip" / "model.safetensors").is_file()
    assert {"test_t2v_R@1", "test_v2t_R@1"} <= set(metrics) and chance["t2v_R@1"] > 0
    results = json.loads((tmp_path / "demo" / "eval_results.json").read_text())
    assert results["model_index"][0]["task"]["type"] == "text-to-video-retrieval"
    assert (tmp_path / "demo" / "model.safetensors").is_file()
