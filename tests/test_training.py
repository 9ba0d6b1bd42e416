"""Fine-tuning with HBITrainer on a tiny model and stand-in data (no video decoding)."""

import pytest
import torch
from retrieval_standins import StandInCollator, StandInProcessor, retrieval_rows, tiny_config

from hbi_hf import HBIForRetrieval
from hbi_hf.training import (
    HBIModelArguments,
    HBITrainer,
    HBITrainingArguments,
    clip_parameter_names,
    freeze_clip_towers,
)


def make_trainer(tmp_path, model=None, **overrides) -> HBITrainer:
    settings = dict(
        output_dir=str(tmp_path / "run"),
        use_cpu=True,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        learning_rate=1e-3,
        coef_lr=0.5,
        max_steps=4,
        logging_steps=2,
        save_strategy="no",
        report_to="none",
        dataloader_num_workers=0,
        seed=0,
    )
    settings.update(overrides)
    torch.manual_seed(0)
    processor = StandInProcessor()
    return HBITrainer(
        model=model or HBIForRetrieval(tiny_config()),
        args=HBITrainingArguments(**settings),
        data_collator=StandInCollator(processor),
        train_dataset=retrieval_rows(8),
        eval_dataset=retrieval_rows(4, captions_per_video=2),
        processing_class=processor,
    )


def batch_loss(model, rows) -> float:
    batch = StandInCollator(StandInProcessor())(list(rows))
    model.eval()
    with torch.no_grad():
        return float(model(**batch, return_loss=True).loss)


def test_training_arguments_default_to_the_official_recipe():
    args = HBITrainingArguments(output_dir="unused", use_cpu=True)
    assert (args.learning_rate, args.coef_lr, args.weight_decay) == (1e-4, 1e-3, 0.2)
    assert (args.adam_beta2, args.adam_epsilon, args.max_grad_norm) == (0.98, 1e-6, 1.0)
    assert args.lr_scheduler_type == "cosine" and args.warmup_steps == 0.1
    assert not (args.bf16 or args.fp16)  # no mixed precision on a CPU


def test_parameter_groups_scale_clip_learning_rate_and_skip_decay_on_biases_and_norms(tmp_path):
    trainer = make_trainer(tmp_path, weight_decay=0.2)
    optimizer = trainer.create_optimizer()
    groups = {group["name"]: group for group in optimizer.param_groups}
    assert set(groups) == {"clip_decay", "clip_no_decay", "new_decay", "new_no_decay"}
    assert groups["clip_decay"]["lr"] == groups["clip_no_decay"]["lr"] == pytest.approx(5e-4)
    assert groups["new_decay"]["lr"] == groups["new_no_decay"]["lr"] == pytest.approx(1e-3)
    assert groups["clip_decay"]["weight_decay"] == groups["new_decay"]["weight_decay"] == 0.2
    assert groups["clip_no_decay"]["weight_decay"] == groups["new_no_decay"]["weight_decay"] == 0.0

    names = {id(p): n for n, p in trainer.model.named_parameters()}
    clip_names = clip_parameter_names(trainer.model)
    for name, group in groups.items():
        group_names = [names[id(p)] for p in group["params"]]
        assert all((n in clip_names) == name.startswith("clip") for n in group_names)
        if name.endswith("no_decay"):
            assert all(n.endswith("bias") or "norm" in n or "layer_norm" in n for n in group_names)
        else:
            assert not any(n.endswith("bias") or "layer_norm" in n for n in group_names)
    assert "hbi.clip.text_model.final_layer_norm.weight" in [names[id(p)] for p in groups["clip_no_decay"]["params"]]
    assert "hbi.temporal.layers.0.self_attn.q_proj.weight" in [names[id(p)] for p in groups["new_decay"]["params"]]
    assert not any(n.startswith("alignment.banzhaf_teacher") for n in names.values() if n in group_names)


def test_schedule_warms_up_then_decays_both_learning_rates_in_proportion(tmp_path):
    trainer = make_trainer(tmp_path, warmup_steps=2)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    rates = []
    for _ in range(10):
        rates.append({g["name"]: g["lr"] for g in trainer.optimizer.param_groups})
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    new = [r["new_decay"] for r in rates]
    assert new[0] == 0.0 and new[1] < new[2] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(new[2:], new[3:], strict=False)) and new[-1] < 1e-4
    assert all(r["clip_decay"] == pytest.approx(0.5 * r["new_decay"]) for r in rates)


def test_a_few_trainer_steps_decrease_the_loss_and_log_its_parts(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=8, warmup_steps=0, logging_steps=4, coef_lr=1.0)
    before = batch_loss(trainer.model, trainer.train_dataset)
    trainer.train()
    after = batch_loss(trainer.model, trainer.train_dataset)
    assert after < 0.8 * before
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logged and all({"contrastive_loss", "banzhaf_loss", "distillation_loss"} <= set(e) for e in logged)


def test_every_parameter_group_logs_its_learning_rate_under_its_own_name(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=4, logging_steps=1, warmup_steps=2, coef_lr=0.5)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 4
    for entry in logged:  # learning_rate itself is --learning_rate's group (the new modules), not CLIP's
        assert entry["learning_rate/clip"] == pytest.approx(0.5 * entry["learning_rate/new"])
        assert entry["learning_rate"] == entry["learning_rate/new"]
    assert max(entry["learning_rate/new"] for entry in logged) == pytest.approx(1e-3)


def test_resume_from_checkpoint_continues_to_the_same_weights(tmp_path):
    uninterrupted = make_trainer(tmp_path / "uninterrupted", max_steps=4, save_strategy="steps", save_steps=2)
    uninterrupted.train()
    checkpoint = tmp_path / "uninterrupted" / "run" / "checkpoint-2"
    assert (checkpoint / "model.safetensors").is_file() and (checkpoint / "standin_processor.json").is_file()

    resumed = make_trainer(tmp_path / "resumed", max_steps=4)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 4
    expected_weights = uninterrupted.model.state_dict()
    for name, actual in resumed.model.state_dict().items():
        torch.testing.assert_close(actual, expected_weights[name], msg=name)


def test_freeze_option_keeps_clip_towers_fixed_and_trains_the_rest(tmp_path):
    model = HBIForRetrieval(tiny_config())
    frozen = freeze_clip_towers(model)
    assert frozen == len(clip_parameter_names(model)) > 0
    trainer = make_trainer(tmp_path, model=model, max_steps=2, warmup_steps=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    assert {g["name"] for g in trainer.optimizer.param_groups} == {"new_decay", "new_no_decay"}
    clip_names = clip_parameter_names(model)
    after = dict(model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in clip_names)
    assert not torch.equal(
        before["hbi.temporal.layers.0.mlp.fc1.weight"], after["hbi.temporal.layers.0.mlp.fc1.weight"]
    )


def test_evaluate_reports_retrieval_metrics_of_the_whole_gallery(tmp_path):
    trainer = make_trainer(tmp_path, dataloader_num_workers=0)
    metrics = trainer.evaluate()
    assert {"eval_t2v_R@1", "eval_t2v_MdR", "eval_v2t_R@10", "eval_v2t_MnR", "eval_loss"} <= set(metrics)
    assert 1.0 <= metrics["eval_t2v_MnR"] <= 4.0  # 4 videos in the gallery


def test_model_arguments_pass_only_given_overrides_to_the_config():
    args = HBIModelArguments(num_frames=8, representation_reconstruction=False, video_cluster_counts=[4, 2])
    assert args.config_overrides() == {
        "num_frames": 8,
        "representation_reconstruction": False,
        "video_cluster_counts": [4, 2],
    }
