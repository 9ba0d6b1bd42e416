"""LoRA on HBI models: the default targets, what trains under the Trainer and under HBITrainer (learning rates,\nevaluation of every task), adapter save/load, merge."""

import logging
import math
import re

import pytest
import torch
from hub_helpers import tiny_batch, tiny_hbi_config
from peft import PeftModel
from retrieval_standins import StandInCollator, StandInProcessor, retrieval_rows, tiny_config
from torch import nn
from transformers import Trainer, TrainingArguments

from hbi_hf import HBIForCaptioning, HBIForRetrieval, HBIForVideoQA, HBIModel, HBIPreTrainedModel
from hbi_hf.peft_utils import DEFAULT_LORA_TARGET_MODULES, apply_lora, hbi_modules_to_save, merge_lora
from hbi_hf.task_training import answer_vocabulary_fields
from hbi_hf.training import HBITrainer, HBITrainingArguments, adapter_parameter_names, freeze_clip_towers

RETRIEVAL_MODULES_TO_SAVE = {
    "hbi.temporal",
    "hbi.text_merges.0",
    "hbi.text_merges.1",
    "hbi.video_merges.0",
    "hbi.video_merges.1",
    "hbi.levels.0",
    "hbi.levels.1",
    "hbi.levels.2",
    "alignment.banzhaf_heads.0",
    "alignment.banzhaf_heads.1",
    "alignment.banzhaf_heads.2",
}


class TinyPairDataset(torch.utils.data.Dataset):
    def __init__(self, size: int = 6):
        self.batch = tiny_batch(batch_size=size, seed=4)

    def __len__(self) -> int:
        return self.batch["input_ids"].shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {name: tensor[index] for name, tensor in self.batch.items()}


class ToyAnswerModel(HBIPreTrainedModel):
    """Stands in for a task head added later (VideoQA / captioning): HBI plus a head of its own."""

    def __init__(self, config):
        super().__init__(config)
        self.hbi = HBIModel(config)
        self.answer_head = nn.Linear(config.projection_dim, 5)
        self.post_init()


@pytest.fixture
def model():
    torch.manual_seed(0)
    return HBIForRetrieval(tiny_hbi_config(representation_reconstruction=False))


def _lora_module_names(peft_model) -> list[str]:
    return [name for name, module in peft_model.named_modules() if hasattr(module, "lora_A")]


def test_default_targets_are_the_clip_attention_projections_only(model):
    peft_model = apply_lora(model, r=4, alpha=8, dropout=0.0)
    names = _lora_module_names(peft_model)
    assert len(names) == 2 * 2 * 4  # towers x layers x (q, k, v, out)
    assert all(
        re.search(r"\.clip\.(text|vision)_model\.encoder\.layers\.\d\.self_attn\.[qkvout]+_proj$", n) for n in names
    )
    assert not any(".temporal." in n for n in names)
    assert re.fullmatch(DEFAULT_LORA_TARGET_MODULES, "hbi.temporal.layers.0.self_attn.q_proj") is None


def test_modules_to_save_are_the_hbi_modules_but_not_the_teacher(model):
    assert set(hbi_modules_to_save(model)) == RETRIEVAL_MODULES_TO_SAVE


def test_modules_to_save_find_a_task_head_of_a_subclass():
    toy = ToyAnswerModel(tiny_hbi_config(representation_reconstruction=False))
    assert "answer_head" in hbi_modules_to_save(toy)
    peft_model = apply_lora(toy)
    assert any("answer_head.modules_to_save" in n for n, p in peft_model.named_parameters() if p.requires_grad)


def test_only_adapters_and_hbi_modules_are_trainable(model):
    peft_model = apply_lora(model)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable
    assert all("lora_" in n or ".modules_to_save." in n for n in trainable)
    assert not any("banzhaf_teacher" in n for n in trainable)
    assert any(".clip." in n and "lora_A" in n for n in trainable)


def test_trainer_steps_change_only_adapters_and_saved_modules(model, tmp_path):
    clip_before = {k: v.clone() for k, v in model.hbi.clip.state_dict().items()}
    teacher_before = {k: v.clone() for k, v in model.alignment.banzhaf_teacher.state_dict().items()}
    temporal_before = {k: v.clone() for k, v in model.hbi.temporal.state_dict().items()}
    peft_model = apply_lora(model, r=4, alpha=8, dropout=0.0)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=3,
        learning_rate=1e-2,
        use_cpu=True,
        report_to="none",
        remove_unused_columns=False,
        save_strategy="no",
        logging_strategy="no",
    )
    Trainer(model=peft_model, args=args, train_dataset=TinyPairDataset()).train()

    base = peft_model.get_base_model()
    for name, layer in base.hbi.clip.named_modules():
        if hasattr(layer, "lora_B"):
            assert layer.lora_B["default"].weight.abs().sum() > 0, f"{name} adapter did not train"
    clip_after = {k.replace(".base_layer", ""): v for k, v in base.hbi.clip.state_dict().items() if "lora_" not in k}
    assert clip_after.keys() == clip_before.keys()
    for key, value in clip_before.items():
        torch.testing.assert_close(clip_after[key], value, rtol=0, atol=0, msg=f"frozen CLIP weight {key} changed")
    for key, value in base.alignment.banzhaf_teacher.state_dict().items():
        torch.testing.assert_close(value, teacher_before[key], rtol=0, atol=0)
    trained_temporal = base.hbi.temporal.modules_to_save["default"].state_dict()
    assert any(not torch.equal(trained_temporal[k], v) for k, v in temporal_before.items())
    original_temporal = base.hbi.temporal.original_module.state_dict()
    assert all(torch.equal(original_temporal[k], v) for k, v in temporal_before.items())


def _perturb_adapters(peft_model) -> None:
    """Give the adapters and the saved modules non-trivial values, as after training."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name or ".modules_to_save." in name:
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch, return_loss=False).logits_per_text


def test_adapter_saves_loads_and_merges_to_the_same_outputs(model, tmp_path):
    model.save_pretrained(tmp_path / "base")
    peft_model = apply_lora(model, r=4, alpha=8, dropout=0.0)
    _perturb_adapters(peft_model)
    peft_model.eval()
    batch = tiny_batch(seed=9)
    expected = _logits(peft_model, batch)
    assert not torch.allclose(expected, _logits(HBIForRetrieval.from_pretrained(tmp_path / "base").eval(), batch))

    peft_model.save_pretrained(tmp_path / "adapter")
    saved = (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size
    assert saved < sum(p.numel() * 4 for p in model.parameters())
    reloaded = PeftModel.from_pretrained(HBIForRetrieval.from_pretrained(tmp_path / "base"), tmp_path / "adapter")
    torch.testing.assert_close(_logits(reloaded.eval(), batch), expected, rtol=1e-5, atol=1e-5)

    merged = merge_lora(peft_model)
    assert isinstance(merged, HBIForRetrieval)
    assert not any("lora_" in n or "modules_to_save" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(_logits(merged.eval(), batch), expected, rtol=1e-4, atol=1e-4)
    merged.save_pretrained(tmp_path / "merged")
    torch.testing.assert_close(
        _logits(HBIForRetrieval.from_pretrained(tmp_path / "merged").eval(), batch), expected, rtol=1e-4, atol=1e-4
    )


# ----- LoRA under the package's own trainer --------------------------------------------------------------------------

DETERMINISTIC_TEACHER = dict(banzhaf_teacher="estimator", estimator_config=dict(hidden_size=8, is_trained=True))
"""A fixed (random, flagged trained) estimator as the teacher of Eq. 8, so that the loss is a function of the inputs
(the default Monte-Carlo teacher draws coalitions)."""


class TinyLabelledDataset(TinyPairDataset):
    """`TinyPairDataset` with one answer label per pair (VideoQA)."""

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {**super().__getitem__(index), "labels": torch.tensor(index % 5)}


def hbi_arguments(tmp_path, **overrides) -> HBITrainingArguments:
    settings = dict(
        output_dir=str(tmp_path / "run"),
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        per_device_train_batch_size=3,
        per_device_eval_batch_size=3,
        max_steps=2,
        logging_steps=1,
        warmup_steps=0,
        learning_rate=1e-3,
        coef_lr=1e-3,
        seed=0,
    )
    settings.update(overrides)
    return HBITrainingArguments(**settings)


def _group_names(trainer) -> dict[str, set[str]]:
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    towers: dict[str, set[str]] = {}
    for group in trainer.create_optimizer().param_groups:
        towers.setdefault(group["tower"], set()).update(names[id(p)] for p in group["params"])
    return towers


def test_hbi_trainer_trains_lora_adapters_at_the_new_module_rate_not_the_clip_rate(model, tmp_path):
    peft_model = apply_lora(model, r=4, alpha=8, dropout=0.0)
    trainer = HBITrainer(model=peft_model, args=hbi_arguments(tmp_path), train_dataset=TinyPairDataset())
    towers = _group_names(trainer)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert towers["adapter"] == adapter_parameter_names(peft_model) == {n for n in trainable if "lora_" in n}
    assert towers["new"] == {n for n in trainable if ".modules_to_save." in n} and "clip" not in towers
    rates = {group["tower"]: group["lr"] for group in trainer.optimizer.param_groups}
    assert rates == {"adapter": pytest.approx(1e-3), "new": pytest.approx(1e-3)}  # not 1e-3 x coef_lr = 1e-6

    trainer.train()
    base = peft_model.get_base_model()
    assert all(layer.lora_B["default"].weight.abs().sum() > 0 for layer in base.modules() if hasattr(layer, "lora_B"))
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logged and all({"learning_rate/adapter", "learning_rate/new"} <= set(entry) for entry in logged)


def test_adapter_learning_rate_is_its_own_option_and_freezing_clip_keeps_the_adapters(model, tmp_path):
    peft_model = apply_lora(model, r=4, alpha=8, dropout=0.0)
    assert freeze_clip_towers(peft_model) > 0
    assert all(p.requires_grad for n, p in peft_model.named_parameters() if "lora_" in n)
    args = hbi_arguments(tmp_path, adapter_learning_rate=5e-4)
    trainer = HBITrainer(model=peft_model, args=args, train_dataset=TinyPairDataset())
    rates = {group["tower"]: group["lr"] for group in trainer.create_optimizer().param_groups}
    assert rates == {"adapter": pytest.approx(5e-4), "new": pytest.approx(1e-3)}


def test_trainable_clip_weights_next_to_adapters_are_warned_about(model, tmp_path, caplog):
    peft_model = apply_lora(model, r=4, alpha=8, dropout=0.0)
    peft_model.get_base_model().hbi.clip.text_model.final_layer_norm.weight.requires_grad_(True)
    trainer = HBITrainer(model=peft_model, args=hbi_arguments(tmp_path), train_dataset=TinyPairDataset())
    with caplog.at_level(logging.WARNING, logger="hbi_hf.training"):
        trainer.create_optimizer()
    assert "1 CLIP parameter tensors train next to the PEFT adapters" in caplog.text


def _task_model(task: str):
    torch.manual_seed(0)
    if task == "retrieval":
        return HBIForRetrieval(tiny_config(representation_reconstruction=False, **DETERMINISTIC_TEACHER))
    settings = dict(representation_reconstruction=False, **DETERMINISTIC_TEACHER)
    if task == "qa":
        answers = answer_vocabulary_fields(["a", "b", "c", "d", "e"])
        return HBIForVideoQA(
            tiny_hbi_config(qa_projection_dim=16, qa_hidden_size=24, qa_dropout=0.0, **answers, **settings)
        )
    return HBIForCaptioning(
        tiny_hbi_config(
            caption_decoder_num_attention_heads=4,
            caption_decoder_intermediate_size=64,
            caption_dropout=0.0,
            **settings,
        )
    )


def _evaluation_trainer(task: str, model, tmp_path) -> HBITrainer:
    if task == "retrieval":
        processor = StandInProcessor()
        return HBITrainer(
            model=model,
            args=hbi_arguments(tmp_path, per_device_eval_batch_size=8),
            data_collator=StandInCollator(processor),
            eval_dataset=retrieval_rows(4, captions_per_video=2),
            processing_class=processor,
        )
    dataset = TinyLabelledDataset() if task == "qa" else TinyPairDataset()  # the captioning collator gives no labels
    return HBITrainer(model=model, args=hbi_arguments(tmp_path), eval_dataset=dataset)


@pytest.mark.parametrize("task", ["retrieval", "qa", "captioning"])
def test_hbi_trainer_evaluates_a_lora_wrapped_model_of_every_task_as_the_merged_model(task, tmp_path):
    peft_model = apply_lora(_task_model(task), r=4, alpha=8, dropout=0.0)
    _perturb_adapters(peft_model)
    metrics = _evaluation_trainer(task, peft_model, tmp_path / "peft").evaluate()
    expected = _evaluation_trainer(task, merge_lora(peft_model), tmp_path / "merged").evaluate()

    assert "eval_loss" in metrics and math.isfinite(metrics["eval_loss"])
    assert metrics["eval_loss"] == pytest.approx(expected["eval_loss"], rel=1e-4)
    if task == "retrieval":
        retrieval = {k for k in expected if k.startswith(("eval_t2v_", "eval_v2t_"))}
        assert {"eval_t2v_R@1", "eval_v2t_R@5", "eval_t2v_MdR"} <= retrieval
        assert {k: metrics[k] for k in retrieval} == {k: expected[k] for k in retrieval}
