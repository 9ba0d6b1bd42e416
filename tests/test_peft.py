"""LoRA on HBI models: the default targets, what trains under the Trainer, adapter save/load, merge."""

import re

import pytest
import torch
from hub_helpers import tiny_batch, tiny_hbi_config
from peft import PeftModel
from torch import nn
from transformers import Trainer, TrainingArguments

from hbi_hf import HBIForRetrieval, HBIModel, HBIPreTrainedModel
from hbi_hf.peft_utils import DEFAULT_LORA_TARGET_MODULES, apply_lora, hbi_modules_to_save, merge_lora

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
