"""Fine-tuning HBI for text-video retrieval with the transformers `Trainer`.

What differs from a plain `Trainer` run, and where it lives:

* two learning rates: CLIP parameters at `learning_rate * coef_lr`, everything new at `learning_rate`, PEFT adapters at
  `adapter_learning_rate` (default `learning_rate`) ([`hbi_parameter_groups`], used by
  [`HBITrainer.create_optimizer`]), each logged as `learning_rate/<tower>`; no weight decay on biases and norms;
* the loss parts (contrastive, Banzhaf, distillation, and the QA / captioning task loss where the model has one) are
  logged next to the loss ([`HBITrainer.log`]);
* evaluation of a retrieval model is retrieval (R@K, median / mean rank on the full text x video matrix) next to the
  loss; every model's evaluation loss is taken batch by batch without gathering across processes, so it does not
  depend on the number of processes ([`HBITrainer.evaluate`], [`HBITrainer.evaluation_loss`]);
* `HBITrainingArguments` defaults reproduce the official recipe (lr 1e-4, coef_lr 1e-3, warm-up 10 % then cosine,
  weight decay 0.2, Adam betas (0.9, 0.98), eps 1e-6, gradient clipping 1.0, 5 epochs) and turn on mixed precision
  where the hardware has it.

The multi-process contrastive loss needs nothing here: [`HBIForRetrieval`] gathers features from every process
(`gather_with_local_grad`); [`HBITrainer`] refuses a process group that the `Trainer` does not train as one.
"""

import errno
import json
import math
import os
import re
import shutil
import struct
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
from datasets import Dataset
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors import SafetensorError
from torch import nn
from transformers import CLIPModel, Trainer, TrainingArguments, set_seed
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, unwrap_peft_model
from transformers.utils import logging

from .estimator_training import fit_estimator_for_training
from .model_card import write_eval_results
from .modeling_hbi import DEFAULT_SCORING_CHUNK_SIZE, HBIAlignmentLoss, HBIForRetrieval, gather_world_size
from .retrieval_data import (
    bad_input_report_callback,
    build_retrieval_collator,
    build_retrieval_processor,
    load_retrieval_dataset,
    resolve_dataset_name,
    select_split,
)
from .retrieval_evaluation import evaluate_retrieval

logger = logging.get_logger(__name__)

LOSS_PARTS = ("contrastive_loss", "banzhaf_loss", "distillation_loss", "task_loss")
"""Output fields logged next to the loss, where the model's output has them (`task_loss`: QA and captioning)."""


@dataclass
class HBIModelArguments:
    """Which model to fine-tune, and [`HBIConfig`] overrides (unset fields keep the checkpoint's / paper's values)."""

    clip_name_or_path: str = field(
        default="openai/clip-vit-base-patch32",
        metadata={"help": "CLIP checkpoint (Hub id or local folder) to build a new HBI model from."},
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A saved HBI checkpoint to start from instead of CLIP."}
    )
    num_frames: int | None = field(default=None, metadata={"help": "Frames per video (paper: 12 / 64 / 32)."})
    max_words: int | None = field(default=None, metadata={"help": "Tokens per caption (paper: 32 / 64 / 64)."})
    representation_reconstruction: bool | None = field(
        default=None, metadata={"help": "True: HBI V2 (TPAMI 2024); False: HBI (CVPR 2023)."}
    )
    objective: Literal["official", "sharpened"] | None = field(
        default=None,
        metadata={
            "help": "How L_I and L_D are reduced: 'official' (default; the official code's objective, its defects "
            "fixed) or 'sharpened' (hbi-hf's former, much stronger one); see docs/training.md."
        },
    )
    banzhaf_loss_weight: float | None = field(
        default=None, metadata={"help": "alpha of Eq. 14, the official --skl (default 1, the official runs')."}
    )
    distillation_loss_weight: float | None = field(
        default=None, metadata={"help": "beta of Eq. 16, the official --kl (default 2, the official runs')."}
    )
    cluster_mode: str | None = field(default=None, metadata={"help": "'count' (paper) or 'ratio' (official code)."})
    video_cluster_counts: list[int] | None = field(default=None, metadata={"help": "Clips and segments per video."})
    text_cluster_counts: list[int] | None = field(default=None, metadata={"help": "Phrases and paragraphs per text."})
    temporal_num_layers: int | None = field(default=None, metadata={"help": "Layers of the temporal transformer."})
    temporal_num_attention_heads: int | None = field(
        default=None, metadata={"help": "Heads of the temporal transformer (default: as the CLIP text layers)."}
    )
    temporal_intermediate_size: int | None = field(
        default=None,
        metadata={"help": "Feed-forward width of the temporal transformer (default: as the CLIP text layers)."},
    )
    merge_num_attention_heads: int | None = field(
        default=None, metadata={"help": "Heads of the token merges' attention (Eq. 11); must divide the CLIP width."}
    )
    estimator_name_or_path: str | None = field(
        default=None, metadata={"help": "A trained HBIBanzhafEstimator, the frozen teacher of Eq. 8."}
    )
    banzhaf_teacher: Literal["exact", "monte_carlo", "estimator", "none"] | None = field(
        default=None, metadata={"help": "Teacher of Eq. 8 (default: the config's, 'exact')."}
    )
    banzhaf_num_samples: int | None = field(
        default=None, metadata={"help": "Monte-Carlo coalitions per pair of the online teacher (default 200)."}
    )
    banzhaf_game_scale: float | None = field(
        default=None, metadata={"help": "Similarity scale of the Banzhaf game (official 1000): teacher sharpness."}
    )
    temperature: float | None = field(default=None, metadata={"help": "Fixed temperature tau (paper: 0.01)."})
    learnable_temperature: bool | None = field(default=None, metadata={"help": "Use CLIP's learnable logit scale."})
    similarity_level_weights: list[float] | None = field(
        default=None, metadata={"help": "Entity, action and event weights of the inference score."}
    )

    def config_overrides(self) -> dict:
        """The [`HBIConfig`] fields set on the command line."""
        skip = {"clip_name_or_path", "model_name_or_path"}
        return {name: value for name, value in asdict(self).items() if name not in skip and value is not None}


@dataclass
class HBIDataArguments:
    """Which retrieval data to train and evaluate on."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "synthetic, msrvtt, msvd, activitynet, didemo or folder. Unset: the embedded dataset in the cache, "
            "or the synthetic dataset already generated in --data_root; any other --data_root needs a name."
        },
    )
    data_root: str | None = field(
        default=None,
        metadata={
            "help": "Folder of the annotations (and, unless video_root is given, the videos); for dataset_name=folder, the captions file (CSV or JSON Lines)."
        },
    )
    video_root: str | None = field(default=None, metadata={"help": "Folder of the video files, if separate."})
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    test_split: str = field(default="test", metadata={"help": "Split to evaluate on after training."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training rows."})
    max_test_samples: int | None = field(default=None, metadata={"help": "Keep only the first N test rows."})
    strict_data: bool = field(
        default=False, metadata={"help": "Raise on an unreadable video / empty caption instead of skipping it."}
    )
    eval_chunk_size: int = field(
        default=DEFAULT_SCORING_CHUNK_SIZE, metadata={"help": "Texts x videos per scoring block."}
    )
    dual_softmax: bool = field(
        default=False, metadata={"help": "Also report dual-softmax re-ranked metrics (separately, under dsl_*)."}
    )

    def __post_init__(self):
        self.dataset_name = resolve_dataset_name(self.dataset_name, self.data_root)


@dataclass
class HBITrainingArguments(TrainingArguments):
    """`TrainingArguments` with the official HBI recipe as defaults, plus the CLIP learning-rate factor, the CLIP
    freeze option and automatic mixed precision."""

    learning_rate: float = field(default=1e-4, metadata={"help": "Learning rate of the new (non-CLIP) modules."})
    coef_lr: float = field(
        default=1e-3, metadata={"help": "CLIP parameters train at learning_rate * coef_lr (official: 1e-3)."}
    )
    adapter_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Learning rate of PEFT adapters (LoRA inside the CLIP towers); defaults to learning_rate."},
    )
    freeze_clip: bool = field(
        default=False,
        metadata={"help": "Freeze the CLIP text and image towers (PEFT adapters in them stay trainable)."},
    )
    auto_mixed_precision: bool = field(
        default=True,
        metadata={"help": "On a GPU with neither --bf16 nor --fp16 given: bf16 where supported, else fp16."},
    )
    num_train_epochs: float = field(default=5.0, metadata={"help": "Epochs (paper: 5)."})
    weight_decay: float = field(default=0.2, metadata={"help": "Weight decay, never on biases and norms."})
    adam_beta2: float = field(default=0.98, metadata={"help": "Adam beta2 (official: 0.98)."})
    adam_epsilon: float = field(default=1e-6, metadata={"help": "Adam epsilon (official: 1e-6)."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Schedule after the warm-up."})
    warmup_steps: float = field(default=0.1, metadata={"help": "Warm-up steps, or a fraction of all steps if < 1."})
    banzhaf_loss_warmup_steps: float = field(
        default=0.0,
        metadata={
            "help": "Ramp the Banzhaf loss weight alpha linearly from 0 over these optimizer steps (a fraction of all "
            "steps if < 1; 0: alpha from the start). For towers trained from scratch, whose early similarities carry "
            "no structure (docs/banzhaf.md)."
        },
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep the dataset columns: the collator needs the paths and captions."}
    )
    fit_estimator: bool = field(
        default=False,
        metadata={
            "help": "Before training, fit a Banzhaf estimator to this model's own matched-pair matrices (every level, "
            "Monte-Carlo labels; the paper's recipe), save it to output_dir/banzhaf_estimator, log its held-out "
            "agreement and use it as the teacher; re-measured at every evaluation."
        },
    )
    estimator_fit_pairs: int = field(default=1024, metadata={"help": "Training rows that --fit_estimator uses."})
    estimator_refit_below: float | None = field(
        default=None,
        metadata={"help": "Re-fit the estimator when its held-out Pearson at some level falls below this value."},
    )

    def __post_init__(self):
        if self.coef_lr < 0:
            raise ValueError(f"coef_lr must be >= 0; got {self.coef_lr}")
        if self.banzhaf_loss_warmup_steps < 0:
            raise ValueError(f"banzhaf_loss_warmup_steps must be >= 0; got {self.banzhaf_loss_warmup_steps}")
        if not torch.accelerator.is_available():
            # pinned host memory only speeds up copies to an accelerator: without one, torch's DataLoader ignores it
            # and warns on every run (the Trainer turns it off only under --use_cpu)
            self.dataloader_pin_memory = False
        wants_gpu = not self.use_cpu and torch.cuda.is_available()
        if self.auto_mixed_precision and wants_gpu and not (self.bf16 or self.fp16):
            if torch.cuda.is_bf16_supported():
                self.bf16 = True
            else:
                self.fp16 = True
        super().__post_init__()


def adapter_parameter_names(model: nn.Module) -> set[str]:
    """Names (as `model.named_parameters()` gives them) of the PEFT adapter parameters of `model` (LoRA's `lora_A` /
    `lora_B` and the like: those of every PEFT tuner layer's `adapter_layer_names`); empty for a model without
    adapters."""
    names = set()
    for module_name, module in model.named_modules():
        if isinstance(module, BaseTunerLayer):
            for attribute in module.adapter_layer_names:
                prefix = f"{module_name}.{attribute}." if module_name else f"{attribute}."
                names.update(prefix + name for name, _ in getattr(module, attribute).named_parameters())
    return names


def clip_parameter_names(model: nn.Module) -> set[str]:
    """Names (as `model.named_parameters()` gives them) of every parameter of a CLIP tower of `model`: those inside a
    `CLIPModel`, except PEFT adapters injected there ([`adapter_parameter_names`])."""
    prefixes = [name + "." for name, module in model.named_modules() if isinstance(module, CLIPModel)]
    inside = {name for name, _ in model.named_parameters() if any(name.startswith(prefix) for prefix in prefixes)}
    return inside - adapter_parameter_names(model)


def hbi_parameter_groups(
    model: nn.Module,
    learning_rate: float,
    coef_lr: float,
    weight_decay: float,
    decay_parameter_names: set[str],
    adapter_learning_rate: float | None = None,
) -> list[dict]:
    """
    Optimizer parameter groups, one per part (`"tower"`) of the model and weight-decay choice: CLIP parameters
    (`"clip"`) at `learning_rate * coef_lr`, PEFT adapters (`"adapter"`, e.g. LoRA inside the CLIP towers) at
    `adapter_learning_rate` (defaults to `learning_rate`), all others (`"new"`: the temporal transformer, the HBI
    modules, task heads) at `learning_rate`; weight decay only on the parameters in `decay_parameter_names` (the
    Trainer's choice: not biases, not norms). Frozen parameters and empty groups are left out. Each group carries a
    `"name"` (`"<tower>_decay"` / `"<tower>_no_decay"`) and its `"tower"`.
    """
    clip_names = clip_parameter_names(model)
    adapter_names = adapter_parameter_names(model)
    rates = {
        "clip": learning_rate * coef_lr,
        "adapter": learning_rate if adapter_learning_rate is None else adapter_learning_rate,
        "new": learning_rate,
    }
    groups: dict[str, dict] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        tower = "clip" if name in clip_names else "adapter" if name in adapter_names else "new"
        decay = name in decay_parameter_names
        key = f"{tower}_{'decay' if decay else 'no_decay'}"
        group = groups.setdefault(
            key,
            {
                "name": key,
                "tower": tower,
                "params": [],
                "lr": rates[tower],
                "weight_decay": weight_decay if decay else 0.0,
            },
        )
        group["params"].append(parameter)
    return list(groups.values())


def freeze_clip_towers(model: nn.Module) -> int:
    """Stop gradients into every CLIP tower parameter of `model` (the temporal transformer and HBI modules stay
    trainable). Returns the number of frozen parameter tensors."""
    names = clip_parameter_names(model)
    for name, parameter in model.named_parameters():
        if name in names:
            parameter.requires_grad_(False)
    return len(names)


def accelerate_launched_one_of_several_processes() -> bool:
    """Whether `accelerate launch` was asked for several processes but started this one alone: its single-process
    launcher (what it uses on a machine without GPUs unless given an MPI host file) sets `MASTER_ADDR` when
    `--num_processes` is above 1, and no launcher of several processes (torchrun, mpirun) has set a world size."""
    launchers = ("WORLD_SIZE", "LOCAL_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
    return (
        "ACCELERATE_USE_CPU" in os.environ
        and "MASTER_ADDR" in os.environ
        and not any(name in os.environ for name in launchers)
    )


class HBITrainer(Trainer):
    """
    `Trainer` for HBI models: the learning rates of [`hbi_parameter_groups`] (each logged as `learning_rate/<tower>`)
    and the loss parts in the logs for [`HBIForRetrieval`], [`HBIForVideoQA`] and [`HBIForCaptioning`], also wrapped
    by PEFT; retrieval metrics and the loss as the evaluation of [`HBIForRetrieval`].

    Args:
        dual_softmax (`bool`, *optional*, defaults to `False`): evaluation also reports dual-softmax figures.
        eval_chunk_size (`int`, *optional*, defaults to 64): texts x videos per scoring block in evaluation.
        All other arguments are `Trainer`'s; `processing_class` must be the processor (it encodes the evaluation
        gallery and is saved with every checkpoint).

    Raises:
        `RuntimeError`: the script runs under a `torch.distributed` process group of several processes that the
            `Trainer` does not train as one (no DDP; `torchrun` on a machine without GPUs without `--use_cpu`), see
            [`~hbi_hf.modeling_hbi.gather_world_size`].
    """

    def __init__(self, *args, dual_softmax: bool = False, eval_chunk_size: int = DEFAULT_SCORING_CHUNK_SIZE, **kwargs):
        super().__init__(*args, **kwargs)
        gather_world_size()
        if accelerate_launched_one_of_several_processes():
            logger.warning(
                "accelerate launch was asked for several processes but started only this one (on a machine without "
                "GPUs it starts several only through mpirun): this run trains as a single process. For N CPU "
                "processes use `torchrun --nproc_per_node N script.py --use_cpu ...` (docs/training.md)"
            )
        self.dual_softmax = dual_softmax
        self.eval_chunk_size = eval_chunk_size
        self._loss_part_sums: dict[str, torch.Tensor] = {}
        self._loss_part_count = 0

    def _save_checkpoint(self, model, trial) -> None:
        """The Trainer's checkpoint save; a failure names its real cause (see [`diagnose_save_error`])."""
        folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        try:
            super()._save_checkpoint(model, trial)
        except (OSError, RuntimeError, SafetensorError) as error:
            diagnosed = diagnose_save_error(error, folder)
            if diagnosed is error:
                raise
            raise diagnosed from error

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """The Trainer's `save_model`; a failure names its real cause (see [`diagnose_save_error`])."""
        try:
            super().save_model(output_dir, _internal_call)
        except (OSError, RuntimeError, SafetensorError) as error:
            diagnosed = diagnose_save_error(error, Path(output_dir or self.args.output_dir))
            if diagnosed is error:
                raise
            raise diagnosed from error

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        """The Trainer's optimizer over [`hbi_parameter_groups`]."""
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        coef_lr = getattr(self.args, "coef_lr", 1.0)
        groups = hbi_parameter_groups(
            opt_model,
            self.args.learning_rate,
            coef_lr,
            self.args.weight_decay,
            set(self.get_decay_parameter_names(opt_model)),
            getattr(self.args, "adapter_learning_rate", None),
        )
        towers = {group["tower"]: group for group in groups}
        if "adapter" in towers and "clip" in towers:
            logger.warning(
                "%d CLIP parameter tensors train next to the PEFT adapters, at learning_rate x coef_lr = %g (e.g. LoRA "
                "with bias='all', or modules_to_save inside the CLIP towers); the adapters train at %g",
                sum(len(g["params"]) for g in groups if g["tower"] == "clip"),
                towers["clip"]["lr"],
                towers["adapter"]["lr"],
            )
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def banzhaf_loss_factor(self) -> float:
        """The factor on alpha at the current optimizer step: `global_step / banzhaf_loss_warmup_steps` (that a
        fraction of `max_steps` if < 1), at most 1; 1 without warm-up."""
        warmup = getattr(self.args, "banzhaf_loss_warmup_steps", 0.0)
        if 0 < warmup < 1:
            warmup = math.ceil(warmup * self.state.max_steps)
        return 1.0 if warmup <= 0 else min(1.0, self.state.global_step / warmup)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The model's loss of Eq. 16 (also in evaluation mode); training steps accumulate its parts for logging and
        set alpha's warm-up factor ([`banzhaf_loss_factor`]) on the model's alignment loss."""
        if model.training:
            factor = self.banzhaf_loss_factor()
            for module in model.modules():
                if isinstance(module, HBIAlignmentLoss):
                    module.banzhaf_loss_factor = factor
        loss, outputs = super().compute_loss(
            model, {**inputs, "return_loss": True}, return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        if model.training:
            for name in LOSS_PARTS:
                if outputs.get(name) is not None:
                    part = outputs[name].detach().float().cpu()
                    self._loss_part_sums[name] = self._loss_part_sums.get(name, 0.0) + part
            self._loss_part_count += 1
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """The `Trainer`'s step; when only the loss is asked for, the model's loss whatever label fields the batch
        carries (HBI models derive their targets: retrieval from the pairing, captioning from `input_ids`)."""
        if not prediction_loss_only:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach().mean(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds to training logs the mean loss parts since the last log (averaged over processes) and the learning
        rate of every parameter group as `learning_rate/<tower>` (`clip`, `adapter`, `new`; see
        [`hbi_parameter_groups`]); `learning_rate` itself is that of the new modules (`--learning_rate`)."""
        if "learning_rate" in logs and self.optimizer is not None:
            rates = {}
            for group in self.optimizer.param_groups:
                rates.setdefault(f"learning_rate/{group.get('tower', group.get('name'))}", group["lr"])
            logs.update(rates)
            logs["learning_rate"] = rates.get("learning_rate/new", logs["learning_rate"])
        if "loss" in logs and self._loss_part_sums:
            names = list(self._loss_part_sums)
            means = torch.stack([self._loss_part_sums[name] for name in names]) / self._loss_part_count
            means = self.accelerator.reduce(means.to(self.args.device), reduction="mean").cpu()
            logs.update({name: float(value) for name, value in zip(names, means, strict=True)})
            self._loss_part_sums.clear()
            self._loss_part_count = 0
        super().log(logs, start_time)

    @torch.no_grad()
    def evaluation_loss(self, dataset: Dataset, metric_key_prefix: str = "eval") -> dict[str, float]:
        """
        `<prefix>_loss`: the model's loss of Eq. 16 averaged over the rows of `dataset`, taken in order as batches
        of `per_device_eval_batch_size` matched pairs (the last one shorter), each batch's loss being that of its own
        pairs (in evaluation mode the contrastive negatives are the batch's, not every process's). The batches are
        shared out over the processes and the sums reduced, so the figure is the same for any number of processes.
        It is not comparable with the training loss, whose negatives are the whole global batch (per-device batch x
        processes), and it grows with `per_device_eval_batch_size` (more negatives per batch). Rows the collator
        leaves out do not count. Also `<prefix>_runtime`.
        """
        start_time = time.time()
        batch_size = self.args.per_device_eval_batch_size
        starts = range(0, len(dataset), batch_size)[self.args.process_index :: self.args.world_size]
        model = self.model
        was_training = model.training
        model.eval()
        totals = torch.zeros(2, dtype=torch.float64, device=self.args.device)  # loss x rows, rows
        try:
            for start in starts:
                inputs = self.data_collator(
                    [dataset[row] for row in range(start, min(start + batch_size, len(dataset)))]
                )
                if not inputs:
                    continue
                inputs = self._prepare_inputs(inputs)
                with self.compute_loss_context_manager():
                    loss = self.compute_loss(model, inputs)
                rows = inputs["pixel_values"].shape[0]
                totals += torch.stack([loss.detach().double() * rows, totals.new_tensor(rows)])
        finally:
            model.train(was_training)
        if self.args.world_size > 1:
            totals = self.accelerator.reduce(totals, reduction="sum")
        loss_sum, rows = totals.tolist()
        return {
            f"{metric_key_prefix}_loss": loss_sum / rows if rows else float("nan"),
            f"{metric_key_prefix}_runtime": round(time.time() - start_time, 4),
        }

    def evaluate(
        self,
        eval_dataset: Dataset | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> dict[str, float]:
        """The loss of Eq. 16 on the rows of `eval_dataset` taken as matched pairs in batches ([`evaluation_loss`]:
        `<prefix>_loss`, the same for any number of processes), and for [`HBIForRetrieval`] the retrieval metrics,
        every caption against every video; logged and returned with `metric_key_prefix`. A model wrapped by PEFT is
        evaluated with its adapters."""
        model = unwrap_peft_model(self.accelerator.unwrap_model(self.model))
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        if dataset is None:
            raise ValueError("HBITrainer.evaluate needs an eval_dataset")
        metrics = self.evaluation_loss(dataset, metric_key_prefix)
        if isinstance(model, HBIForRetrieval):
            if self.processing_class is None:
                raise ValueError("HBITrainer.evaluate needs processing_class: the processor that encodes the gallery")
            with self.autocast_smart_context_manager():
                retrieval = evaluate_retrieval(
                    model,
                    dataset,
                    self.processing_class,
                    batch_size=self.args.per_device_eval_batch_size,
                    chunk_size=self.eval_chunk_size,
                    dual_softmax=self.dual_softmax,
                    state=self.accelerator.state,
                    strict=getattr(self.data_collator, "strict", False),
                )
            metrics.update({f"{metric_key_prefix}_{name}": value for name, value in retrieval.items()})
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


LOW_DISK_SPACE_BYTES = 16 * 2**20
"""Free space under which a failed save is attributed to a full disk."""


def diagnose_save_error(error: BaseException, folder: str | os.PathLike) -> BaseException:
    """
    The error to raise for a save into `folder` that failed with `error`: an `OSError` naming `folder` with the
    errno of the first `OSError` in `error`'s chain (or of safetensors' "os error N"), or `OSError(ENOSPC)` when the
    file system holding `folder` has (almost) no free space left, since torch reports a full disk only as
    "basic_ios::clear: iostream error" or "unexpected pos"; otherwise `error` itself.
    """
    folder = Path(folder)
    if isinstance(error, OSError) and str(folder) in str(error):
        return error  # already diagnosed (a checkpoint's save_model inside _save_checkpoint)
    cause, seen = error, set()
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, OSError) and cause.errno is not None:
            return OSError(cause.errno, f"{os.strerror(cause.errno)} while saving into {folder} ({error})")
        code = re.search(r"os error (\d+)", str(cause))  # safetensors' Rust I/O errors
        if code is not None:
            number = int(code.group(1))
            return OSError(number, f"{os.strerror(number)} while saving into {folder} ({error})")
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    existing = next((path for path in (folder, *folder.parents) if path.exists()), None)
    if existing is not None and shutil.disk_usage(existing).free < LOW_DISK_SPACE_BYTES:
        free = shutil.disk_usage(existing).free
        return OSError(
            errno.ENOSPC,
            f"No space left on device while saving into {folder} ({free} bytes free; the save reported: {error}). "
            "The incomplete checkpoint is kept, and `--resume_from_checkpoint last` skips it",
        )
    return error


def checkpoint_problem(checkpoint: str | os.PathLike) -> str | None:
    """
    What makes a Trainer checkpoint folder unusable for resuming, or None when it is complete: `trainer_state.json`
    (written last) missing or unreadable, no model weights, a truncated or malformed safetensors file, a missing
    shard, or a truncated torch file (optimizer, scheduler, RNG state).
    """
    checkpoint = Path(checkpoint)
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return f"trainer_state.json is missing or unreadable ({type(error).__name__}), so the save did not finish"
    weights = sorted(checkpoint.glob("*.safetensors"))
    for index_file in checkpoint.glob("*.safetensors.index.json"):
        try:
            shards = set(json.loads(index_file.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError):
            return f"{index_file.name} is unreadable"
        missing = sorted(shard for shard in shards if not (checkpoint / shard).is_file())
        if missing:
            return f"{index_file.name} lists missing weight files {missing}"
    if not weights:
        return "it holds no model weights (*.safetensors)"
    for path in weights:
        problem = _safetensors_problem(path)
        if problem is not None:
            return f"{path.name} {problem}"
    for path in sorted([*checkpoint.glob("*.pt"), *checkpoint.glob("*.pth"), *checkpoint.glob("*.bin")]):
        if not zipfile.is_zipfile(path):
            return f"{path.name} is truncated or not a torch file"
    return None


def _safetensors_problem(path: Path) -> str | None:
    """Why `path` is not a whole safetensors file (its header must parse and its tensors end at the file's end)."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return f"is truncated ({size} bytes)"
        (header_size,) = struct.unpack("<Q", head)
        if header_size > size - 8:
            return f"is truncated (header of {header_size} bytes, file of {size})"
        try:
            header = json.loads(handle.read(header_size))
        except ValueError:
            return "has an unreadable header"
    ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    expected = 8 + header_size + max(ends, default=0)
    if size != expected:
        return f"is truncated ({size} bytes, its header describes {expected})"
    return None


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """
    The newest `checkpoint-<step>` folder of `output_dir` that is complete (see [`checkpoint_problem`]); each newer,
    incomplete one (a save that was killed, or ran out of disk) is skipped with a warning naming what is wrong.
    None when there is no complete checkpoint.
    """
    folder = Path(output_dir)
    checkpoints = [
        path
        for path in (folder.iterdir() if folder.is_dir() else [])
        if path.is_dir() and path.name.startswith(f"{PREFIX_CHECKPOINT_DIR}-") and path.name.split("-")[-1].isdigit()
    ]
    for checkpoint in sorted(checkpoints, key=lambda path: int(path.name.split("-")[-1]), reverse=True):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return str(checkpoint)
        logger.warning(f"skipping incomplete checkpoint {checkpoint}: {problem}")
    return None


def build_retrieval_model(model_args: HBIModelArguments) -> HBIForRetrieval:
    """An [`HBIForRetrieval`] from a saved HBI checkpoint, or built around a CLIP checkpoint, with the overrides."""
    overrides = model_args.config_overrides()
    if model_args.model_name_or_path is not None:
        estimator = overrides.pop("estimator_name_or_path", None)
        model = HBIForRetrieval.from_pretrained(model_args.model_name_or_path, **overrides)
        if estimator is not None:
            model.load_banzhaf_teacher(estimator)
        return model
    return HBIForRetrieval.from_clip(model_args.clip_name_or_path, **overrides)


def estimator_fitting_callback(model, train_dataset, eval_dataset, collator, training_args: HBITrainingArguments):
    """`--fit_estimator`: fit the teacher to `model` before training ([`fit_estimator_for_training`]); held out on
    `eval_dataset`, or on the training rows past `estimator_fit_pairs` without one. Returns the callback that
    re-measures it at every evaluation."""
    held_out = eval_dataset
    if held_out is None:
        held_out = train_dataset.select(
            range(min(training_args.estimator_fit_pairs, len(train_dataset) - 1), len(train_dataset))
        )
    return fit_estimator_for_training(
        model,
        train_dataset,
        held_out,
        collator,
        training_args.output_dir,
        num_pairs=training_args.estimator_fit_pairs,
        batch_size=training_args.per_device_eval_batch_size,
        refit_below=training_args.estimator_refit_below,
    )


def train_retrieval(
    model_args: HBIModelArguments, data_args: HBIDataArguments, training_args: HBITrainingArguments
) -> dict[str, float]:
    """
    The whole fine-tuning run of `scripts/train_retrieval.py`: build the model, the processor and the data, train
    (resuming from `--resume_from_checkpoint`, or from the last checkpoint in `output_dir` with
    `--resume_from_checkpoint last`), save model and processor, evaluate on the test split and write
    `eval_results.json`. Returns the test metrics (empty without `--do_eval`).
    """
    set_seed(training_args.seed)
    splits = load_retrieval_dataset(data_args)
    train_dataset = None
    if training_args.do_train:
        train_split = select_split(splits, data_args.train_split, "--train_split")
        train_dataset = _first_rows(train_split, data_args.max_train_samples)
    test_dataset = None
    if training_args.do_eval:
        test_split = select_split(splits, data_args.test_split, "--test_split")
        test_dataset = _first_rows(test_split, data_args.max_test_samples)
    model = build_retrieval_model(model_args)
    if training_args.freeze_clip:
        logger.info("Froze %d CLIP parameter tensors", freeze_clip_towers(model))
    processor = build_retrieval_processor(model.config, model_args.model_name_or_path)
    collator = build_retrieval_collator(processor, strict=data_args.strict_data)
    callbacks = [bad_input_report_callback(collator)]
    if training_args.fit_estimator and train_dataset is not None:
        callbacks.append(estimator_fitting_callback(model, train_dataset, test_dataset, collator, training_args))
    trainer = HBITrainer(
        model=model,
        args=training_args,
        data_collator=collator,
        train_dataset=train_dataset,
        eval_dataset=test_dataset,
        processing_class=processor,
        dual_softmax=data_args.dual_softmax,
        eval_chunk_size=data_args.eval_chunk_size,
        callbacks=callbacks,
    )
    if training_args.do_train:
        resume = training_args.resume_from_checkpoint
        if resume == "last":
            resume = last_complete_checkpoint(training_args.output_dir)
        result = trainer.train(resume_from_checkpoint=resume)
        trainer.save_model()
        trainer.save_state()
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
    metrics: dict[str, float] = {}
    if training_args.do_eval:
        metrics = trainer.evaluate(test_dataset, metric_key_prefix="test")
        if trainer.is_world_process_zero():
            trainer.log_metrics("test", metrics)
            write_eval_results(training_args.output_dir, metrics, data_args.dataset_name, data_args.test_split)
    return metrics


def _first_rows(dataset: Dataset, limit: int | None) -> Dataset:
    return dataset if limit is None else dataset.select(range(min(limit, len(dataset))))


__all__ = [
    "HBIDataArguments",
    "HBIModelArguments",
    "HBITrainer",
    "HBITrainingArguments",
    "adapter_parameter_names",
    "build_retrieval_model",
    "checkpoint_problem",
    "clip_parameter_names",
    "diagnose_save_error",
    "freeze_clip_towers",
    "hbi_parameter_groups",
    "last_complete_checkpoint",
    "train_retrieval",
    "write_eval_results",
]
