"""LoRA with gradient checkpointing trains (transformers#42489, peft#137: with checkpointed layers whose inputs do not
require gradients, the adapters received none and `lora_B` stayed at zero): through the package's PEFT helper, under
the `Trainer` and `HBITrainer`, with re-entrant and non-re-entrant checkpointing, every adapter of both CLIP towers
moves off zero, and the layers really ran checkpointed."""

import pytest
import torch
import transformers.modeling_utils
from hub_helpers import tiny_hbi_config
from test_peft import TinyPairDataset
from transformers import Trainer, TrainingArguments
from transformers.models.clip.modeling_clip import CLIPEncoderLayer

from hbi_hf import HBIForRetrieval
from hbi_hf.peft_utils import apply_lora
from hbi_hf.training import HBITrainer, HBITrainingArguments

TRAINERS = {"Trainer": (Trainer, TrainingArguments), "HBITrainer": (HBITrainer, HBITrainingArguments)}


@pytest.mark.parametrize("reentrant", [False, True], ids=["non-reentrant", "reentrant"])
@pytest.mark.parametrize("trainer", list(TRAINERS))
def test_lora_adapters_train_under_gradient_checkpointing(trainer, reentrant, tmp_path, monkeypatch):
    checkpointed = []
    checkpoint = transformers.modeling_utils.checkpoint

    def counting_checkpoint(function, *args, **kwargs):
        checkpointed.append(function.args[0])  # transformers checkpoints `partial(forward, layer, ...)`
        return checkpoint(function, *args, **kwargs)

    monkeypatch.setattr(transformers.modeling_utils, "checkpoint", counting_checkpoint)
    torch.manual_seed(0)
    peft_model = apply_lora(HBIForRetrieval(tiny_hbi_config()), r=4, alpha=8, dropout=0.0)
    trainer_class, arguments_class = TRAINERS[trainer]
    arguments = arguments_class(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=3,
        learning_rate=1e-2,
        use_cpu=True,
        report_to="none",
        remove_unused_columns=False,
        save_strategy="no",
        logging_strategy="no",
        gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": reentrant},
    )
    trainer_class(model=peft_model, args=arguments, train_dataset=TinyPairDataset()).train()

    clip = peft_model.get_base_model().hbi.clip
    tower_layers = [*clip.text_model.encoder.layers, *clip.vision_model.encoder.layers]
    assert all(layer.gradient_checkpointing for layer in tower_layers)
    assert {id(layer) for layer in tower_layers} <= {id(module) for module in checkpointed}  # really checkpointed
    assert all(isinstance(module, CLIPEncoderLayer) for module in checkpointed)
    adapters = {
        name: layer.lora_B["default"].weight for name, layer in clip.named_modules() if hasattr(layer, "lora_B")
    }
    assert len(adapters) == 16  # q, k, v, out of 2 layers in each tower
    assert not [name for name, weight in adapters.items() if not weight.detach().abs().sum() > 0]
