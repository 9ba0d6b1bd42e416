"""The warm-up of the Banzhaf loss weight alpha (`HBITrainingArguments.banzhaf_loss_warmup_steps`): alpha ramps
linearly from 0 over the first optimizer steps, then stays at `HBIConfig.banzhaf_loss_weight`."""

import pytest
import torch
from retrieval_standins import StandInCollator, StandInProcessor, retrieval_rows, tiny_config
from transformers import TrainerCallback

from hbi_hf import HBIForRetrieval
from hbi_hf.training import HBITrainer, HBITrainingArguments


def make_trainer(tmp_path, callbacks=(), **overrides) -> HBITrainer:
    settings = dict(
        output_dir=str(tmp_path / "run"),
        use_cpu=True,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        max_steps=4,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        dataloader_num_workers=0,
        seed=0,
    )
    settings.update(overrides)
    torch.manual_seed(0)
    processor = StandInProcessor()
    return HBITrainer(
        model=HBIForRetrieval(tiny_config(banzhaf_loss_weight=2.0)),
        args=HBITrainingArguments(**settings),
        data_collator=StandInCollator(processor),
        train_dataset=retrieval_rows(8),
        processing_class=processor,
        callbacks=list(callbacks),
    )


class FactorRecorder(TrainerCallback):
    def __init__(self):
        self.factors = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.factors.append(model.alignment.banzhaf_loss_factor)


@pytest.mark.parametrize(
    ("warmup", "expected"),
    [
        (0, [1.0, 1.0, 1.0, 1.0]),
        (2, [0.0, 0.5, 1.0, 1.0]),
        (0.5, [0.0, 0.5, 1.0, 1.0]),
        (8, [0.0, 0.125, 0.25, 0.375]),
    ],
)
def test_alpha_ramps_from_zero_over_the_warm_up_steps(tmp_path, warmup, expected):
    """Step k (from 0) of training uses alpha x min(1, k / warm-up steps); a warm-up below 1 is a fraction of all
    steps (0.5 of 4 steps = 2 steps); 0 means no warm-up."""
    recorder = FactorRecorder()
    make_trainer(tmp_path, callbacks=[recorder], banzhaf_loss_warmup_steps=warmup).train()
    assert recorder.factors == pytest.approx(expected)


def test_the_factor_multiplies_alpha_in_the_loss():
    torch.manual_seed(0)
    model = HBIForRetrieval(tiny_config(banzhaf_loss_weight=2.0)).train()
    batch = StandInCollator(StandInProcessor())(list(retrieval_rows(4)))
    losses = {}
    for factor in (1.0, 0.25, 0.0):
        model.alignment.banzhaf_loss_factor = factor
        torch.manual_seed(1)  # the same Monte-Carlo coalitions each time
        losses[factor] = model(**batch, return_loss=True)
    for factor, output in losses.items():
        expected = (
            output.contrastive_loss
            + 2.0 * factor * output.banzhaf_loss
            + model.config.distillation_loss_weight * output.distillation_loss
        )
        torch.testing.assert_close(output.loss, expected)
    assert losses[1.0].banzhaf_loss > 0
    torch.testing.assert_close(losses[0.25].banzhaf_loss, losses[1.0].banzhaf_loss)


def test_a_negative_warm_up_is_refused(tmp_path):
    with pytest.raises(ValueError, match="banzhaf_loss_warmup_steps"):
        HBITrainingArguments(output_dir=str(tmp_path), use_cpu=True, banzhaf_loss_warmup_steps=-1)


def test_the_demo_passes_its_banzhaf_settings_to_the_model_and_the_trainer(tmp_path):
    """`scripts/demo.py --banzhaf_head_input_scale S --banzhaf_loss_warmup_steps W` reach HBIConfig and
    HBITrainingArguments (the defaults, the paper's 1 and a warm-up over 20 % of the steps, are the setting measured
    best of three in docs/banzhaf.md)."""
    from hbi_hf.demo import HBIDemoArguments, demo_config, demo_training_arguments

    args = HBIDemoArguments(output_dir=str(tmp_path), quick=True, banzhaf_head_input_scale=7.0)
    args.banzhaf_loss_warmup_steps = 3
    assert demo_config(args).banzhaf_head_input_scale == 7.0
    assert demo_training_arguments(args).banzhaf_loss_warmup_steps == 3
    defaults = HBIDemoArguments(output_dir=str(tmp_path))
    assert (defaults.banzhaf_head_input_scale, defaults.banzhaf_loss_warmup_steps) == (1.0, 0.2)
