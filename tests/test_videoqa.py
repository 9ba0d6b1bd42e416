"""Specification of HBIForVideoQA: answer logits per level and fused, Eq. 16 loss, out-of-vocabulary answers,
accuracy, save/load, and training on the embedded dataset's QA pairs."""

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_TEXT_CLIP_VOCABULARY, tiny_batch, tiny_hbi_config

from hbi_hf import AutoModelForVideoQuestionAnswering, HBIForVideoQA
from hbi_hf.data import build_answer_vocabulary
from hbi_hf.task_training import add_answer_labels, answer_vocabulary_fields, videoqa_accuracy

ANSWERS = ["red", "blue", "green", "circle", "square"]


def qa_config(**overrides):
    settings = dict(qa_projection_dim=16, qa_hidden_size=24, qa_dropout=0.0, **answer_vocabulary_fields(ANSWERS))
    settings.update(overrides)
    return tiny_hbi_config(**settings)


def seeded_qa_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return HBIForVideoQA(qa_config(**overrides)).eval()


def test_answer_logits_have_one_row_per_question_at_every_level(batch):
    model = seeded_qa_model()
    with torch.no_grad():
        output = model(**batch)
    assert output.logits.shape == (4, len(ANSWERS))
    assert [logits.shape for logits in output.logits_per_level] == [(4, len(ANSWERS))] * 3
    assert output.loss is None and model.config.num_labels == len(ANSWERS)


def test_fused_logits_weight_entity_action_event_by_0_4_0_4_0_2(batch):
    model = seeded_qa_model()
    assert model.config.qa_level_weights == [0.4, 0.4, 0.2]
    with torch.no_grad():
        output = model(**batch)
    entity, action, event = output.logits_per_level
    torch.testing.assert_close(output.logits, 0.4 * entity + 0.4 * action + 0.2 * event)


def test_loss_is_alignment_plus_lambda_times_the_summed_level_cross_entropies(batch):
    model = seeded_qa_model(banzhaf_loss_weight=2.0)
    labels = torch.tensor([0, 1, 2, 3])
    output = model(**batch, labels=labels, return_loss=True)
    expected_task = sum(F.cross_entropy(logits, labels) for logits in output.logits_per_level)
    torch.testing.assert_close(output.task_loss, expected_task)
    beta = model.config.distillation_loss_weight
    alignment = output.contrastive_loss + 2.0 * output.banzhaf_loss + beta * output.distillation_loss
    torch.testing.assert_close(output.alignment_loss, alignment)
    torch.testing.assert_close(output.loss, alignment + 2.5 * expected_task)


def test_out_of_vocabulary_labels_are_ignored_by_the_loss(batch):
    model = seeded_qa_model()
    with_unknown = model(**batch, labels=torch.tensor([0, -1, 2, -1]), return_loss=True)
    known = torch.tensor([0, 2])
    expected = sum(F.cross_entropy(logits[[0, 2]], known) for logits in with_unknown.logits_per_level)
    torch.testing.assert_close(with_unknown.task_loss, expected)
    all_unknown = model(**batch, labels=torch.full((4,), -1), return_loss=True)
    assert all_unknown.task_loss.item() == 0.0 and torch.isfinite(all_unknown.loss)


def test_out_of_vocabulary_questions_count_as_wrong_in_accuracy():
    metrics = videoqa_accuracy(predictions=[0, 1, 2, 3], labels=[0, 1, -1, -1])
    assert metrics == {"accuracy": 0.5, "num_questions": 4, "num_out_of_vocabulary": 2}


def test_answer_vocabulary_keeps_the_most_frequent_answers_and_labels_the_rest_minus_one():
    from datasets import Dataset

    vocabulary = build_answer_vocabulary(["b", "a", "c", "a", "b", "d", "a"], top_k=2)
    assert vocabulary == ["a", "b"]
    fields = answer_vocabulary_fields(vocabulary)
    assert fields == {"label2id": {"a": 0, "b": 1}, "id2label": {0: "a", 1: "b"}}
    rows = Dataset.from_list([{"answer": "b", "label": 7}, {"answer": "c", "label": 7}, {"answer": "a", "label": 7}])
    assert add_answer_labels(rows, fields["label2id"])["label"] == [1, -1, 0]


def test_answer_labels_refuse_numeric_answers_instead_of_counting_them_outside_the_vocabulary():
    from datasets import Dataset

    label2id = answer_vocabulary_fields(["1", "2"])["label2id"]
    with pytest.raises(ValueError, match=r"row 0: field 'answer' is 2; expected the answer's text"):
        add_answer_labels(Dataset.from_list([{"answer": 2}, {"answer": 1}]), label2id)
    assert add_answer_labels(Dataset.from_list([{"answer": "2"}, {"answer": "1"}]), label2id)["label"] == [1, 0]


def test_training_steps_lower_the_loss_on_a_fixed_batch(batch):
    model = seeded_qa_model()
    labels = torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        before = model(**batch, labels=labels, return_loss=True).loss.item()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    for _ in range(5):
        optimizer.zero_grad()
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        after = model(**batch, labels=labels, return_loss=True).loss.item()
    assert after < before


def test_save_and_auto_load_give_identical_answers(tmp_path, batch):
    model = seeded_qa_model()
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForVideoQuestionAnswering.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, HBIForVideoQA)
    assert reloaded.config.id2label == model.config.id2label
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, model(**batch).logits, rtol=0, atol=0)


def test_rejects_labels_of_the_wrong_shape():
    model = seeded_qa_model()
    batch = tiny_batch(batch_size=2)
    with pytest.raises(ValueError, match="labels must be"):
        model(**batch, labels=torch.zeros(2, 1, dtype=torch.long), return_loss=True)


def test_hbi_trainer_trains_and_loss_evaluates_on_the_embedded_qa_pairs_with_two_learning_rates(
    tmp_path, tiny_synthetic_root
):
    from hbi_hf.data import HBIVideoQACollator, load_synthetic_qa
    from hbi_hf.retrieval_data import build_retrieval_processor
    from hbi_hf.task_training import predict_answers, train_task_model
    from hbi_hf.training import HBITrainingArguments

    dataset = load_synthetic_qa(tiny_synthetic_root)
    vocabulary = dataset["train"].features["label"].names
    config = qa_config(text_config=dict(TINY_TEXT_CLIP_VOCABULARY), **answer_vocabulary_fields(vocabulary))
    torch.manual_seed(0)
    model = HBIForVideoQA(config)
    processor = build_retrieval_processor(config)
    args = HBITrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        coef_lr=1e-4,
        warmup_steps=0,
        lr_scheduler_type="constant",
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
    )
    trainer = train_task_model(model, dataset["train"], HBIVideoQACollator(processor), args)
    assert trainer.state.global_step == 2
    clip_ids = {id(p) for p in model.hbi.clip.parameters()}
    for group in trainer.optimizer.param_groups:
        in_clip = {id(p) in clip_ids for p in group["params"]}
        assert len(in_clip) == 1 and group["lr"] == pytest.approx(1e-7 if in_clip.pop() else 1e-3)
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logged and all({"task_loss", "contrastive_loss", "banzhaf_loss"} <= set(entry) for entry in logged)

    evaluation = trainer.evaluate(dataset["test"])
    assert evaluation["eval_loss"] > 0 and not any(name.startswith("eval_t2v") for name in evaluation)
    predictions, labels = predict_answers(model, dataset["test"], processor, batch_size=8)
    assert len(predictions) == len(labels) == len(dataset["test"])
    assert all(0 <= p < len(vocabulary) for p in predictions)
    assert labels == [label if label >= 0 else -100 for label in dataset["test"]["label"]]
