"""The paper's ablation in miniature (`make ablation`, scripts/ablation.py): five variants of the demo's model trained on
the embedded synthetic dataset with several training seeds each, evaluated on its test split, summarised as mean and
standard deviation of the retrieval metrics (docs/banzhaf.md, "Ablation in miniature").

The variants (`ABLATION_VARIANTS`):
- `full`: HBI as the demo trains it (Eq. 16: every level's contrastive loss, alpha * L_I with the config's default
  Monte-Carlo teacher, beta * self-distillation);
- `no_banzhaf`: alpha = 0 (`banzhaf_loss_weight=0`; no teacher runs, the same loss as `banzhaf_teacher="none"`);
- `no_distillation`: beta = 0 (`distillation_loss_weight=0`);
- `entity_only`: only the entity level is trained (its contrastive loss and its L_I; no action / event level losses,
  hence no self-distillation), [`HBIEntityLevelForRetrieval`];
- `mean_pooled`: a CLIP4Clip-style baseline on the same towers, [`HBIMeanPooledForRetrieval`].

Every HBI variant ranks with the entity level at inference (`similarity_level_weights=[1, 0, 0]`, the official
retrieval default), so the variants differ in what they are trained with only; the baseline ranks with its own score.
"""

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from datasets import Dataset, DatasetDict
from transformers.utils import logging

from .configuration_hbi import HBIConfig
from .demo import HBIDemoArguments, _first_rows, demo_config, demo_training_arguments
from .modeling_hbi import (
    HBIAlignmentLoss,
    HBIAlignmentLossOutput,
    HBIForRetrieval,
    HBIRetrievalOutput,
    contrastive_loss,
    gather_with_local_grad,
)
from .retrieval_data import build_retrieval_collator, build_retrieval_processor, synthetic_retrieval_splits
from .training import HBITrainer

logger = logging.get_logger(__name__)

ABLATION_VARIANTS = ("full", "no_banzhaf", "no_distillation", "entity_only", "mean_pooled")
"""The variants of the ablation, in the order of its table."""

VARIANT_CONFIG_FIELDS: dict[str, dict] = {
    "full": {},
    "no_banzhaf": {"banzhaf_loss_weight": 0.0},
    "no_distillation": {"distillation_loss_weight": 0.0},
    "entity_only": {},
    "mean_pooled": {},
}
"""[`HBIConfig`] fields each variant sets on top of the demo's config."""

REPORTED_METRICS = ("t2v_R@1", "t2v_R@5", "t2v_R@10", "v2t_R@1", "v2t_R@5", "v2t_R@10", "Rsum")
"""Metrics kept per run; `Rsum` is R@1 + R@5 + R@10 of both directions (text->video and video->text), in %."""


class HBIEntityLevelAlignmentLoss(HBIAlignmentLoss):
    """[`HBIAlignmentLoss`] at the entity level only: its contrastive loss (Eq. 13) plus alpha times its L_I (Eq. 8);
    no action / event level losses, hence no self-distillation (Eq. 15). Same parameters as the full loss."""

    def forward(self, model, text_features, video_features) -> HBIAlignmentLossOutput:
        """Texts and videos are matched pairs: text i describes video i."""
        if len(text_features) != len(video_features):
            raise ValueError(
                f"the alignment loss needs matched pairs; got {len(text_features)} texts and "
                f"{len(video_features)} videos"
            )
        global_text = text_features.map(lambda t: gather_with_local_grad(t)[0])
        global_video = video_features.map(lambda t: gather_with_local_grad(t)[0])
        offset = gather_with_local_grad(text_features.global_embeddings[:, :1])[1]
        entity = model.similarity_per_level(global_text, global_video, levels=(0,))[0]
        contrastive = contrastive_loss(model.logit_scale() * entity)
        if self.uses_banzhaf_term():
            banzhaf = self._banzhaf_loss(model, text_features, video_features, 0)
        else:
            banzhaf = contrastive.new_zeros(())
        local = slice(offset, offset + len(text_features))
        return HBIAlignmentLossOutput(
            loss=contrastive + self.banzhaf_weight() * banzhaf,
            contrastive_loss=contrastive,
            banzhaf_loss=banzhaf,
            distillation_loss=contrastive.new_zeros(()),
            similarity_per_level=(entity[local, local], None, None),
        )


class HBIEntityLevelForRetrieval(HBIForRetrieval):
    """[`HBIForRetrieval`] trained at the entity level only ([`HBIEntityLevelAlignmentLoss`]); it ranks with the entity
    level, so `config.similarity_level_weights` must weight only that level.

    Raises:
        `ValueError`: `similarity_level_weights` gives the action or event level a non-zero weight.
    """

    def __init__(self, config: HBIConfig):
        if any(config.similarity_level_weights[1:]):
            raise ValueError(
                "HBIEntityLevelForRetrieval trains and ranks with the entity level only; similarity_level_weights "
                f"must be [w, 0, 0], got {config.similarity_level_weights}"
            )
        super().__init__(config)
        # the same parameters, initialised as HBIForRetrieval's: only the objective differs
        self.alignment.__class__ = HBIEntityLevelAlignmentLoss


def mean_pooled_similarity(text_embeddings: torch.Tensor, video_embeddings: torch.Tensor) -> torch.Tensor:
    """Cosine of each caption embedding `(n_text, dim)` with each video's mean frame token `(n_video, dim)`:
    `(n_text, n_video)`."""
    return F.normalize(text_embeddings.float(), dim=-1) @ F.normalize(video_embeddings.float(), dim=-1).t()


class HBIMeanPooledForRetrieval(HBIForRetrieval):
    """A CLIP4Clip-style baseline on HBI's towers: the caption's [EOS] embedding against the mean of the video's frame
    tokens (the temporal transformer's outputs with its residual, i.e. CLIP4Clip's `seqTransf` similarity), trained
    with the symmetric contrastive loss (Eq. 13) alone. No token matching, hierarchy, L_I or self-distillation; the
    HBI modules stay in the model unused, so a checkpoint has [`HBIForRetrieval`]'s keys."""

    def score(self, text_features, video_features, chunk_size: int | None = None) -> torch.Tensor:
        """`(n_text, n_video)` cosines of the pooled embeddings (`chunk_size` is accepted and not needed)."""
        return mean_pooled_similarity(text_features.global_embeddings, video_features.global_embeddings)

    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        video_mask: torch.Tensor | None = None,
        return_loss: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> HBIRetrievalOutput:
        """As [`HBIForRetrieval.forward`]; `loss` is the contrastive loss of the pooled cosines over the batch (under
        `torch.distributed`, against every process's items)."""
        if return_loss is None:
            return_loss = self.training
        text_features, video_features, conventions = self.hbi._encode_pair(
            input_ids, pixel_values, attention_mask, video_mask, output_attentions, output_hidden_states
        )
        text_embeds, offset = gather_with_local_grad(text_features.global_embeddings)
        video_embeds = gather_with_local_grad(video_features.global_embeddings)[0]
        logits = self.hbi.logit_scale() * mean_pooled_similarity(text_embeds, video_embeds)
        loss = contrastive_loss(logits) if return_loss else None
        local = slice(offset, offset + len(input_ids))
        logits = logits[local, local]
        return HBIRetrievalOutput(
            loss=loss,
            contrastive_loss=loss,
            logits_per_text=logits,
            logits_per_video=logits.t(),
            text_features=text_features,
            video_features=video_features,
            **conventions,
        )


VARIANT_MODEL_CLASSES: dict[str, type[HBIForRetrieval]] = {
    "full": HBIForRetrieval,
    "no_banzhaf": HBIForRetrieval,
    "no_distillation": HBIForRetrieval,
    "entity_only": HBIEntityLevelForRetrieval,
    "mean_pooled": HBIMeanPooledForRetrieval,
}


@dataclass
class HBIAblationArguments(HBIDemoArguments):
    """The demo's sizes and schedule (see [`HBIDemoArguments`]), the variants and the training seeds."""

    output_dir: str = field(
        default="outputs/ablation", metadata={"help": "Where the per-run and summary results (JSON) go."}
    )
    num_train_epochs: float = field(default=10.0, metadata={"help": "Training epochs of every run (the demo's)."})
    seed: int = field(default=0, metadata={"help": "Seed of the synthetic dataset (the same for every run)."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Training seeds of each variant."})
    variants: list[str] = field(
        default_factory=lambda: list(ABLATION_VARIANTS), metadata={"help": f"Variants to run: {ABLATION_VARIANTS}."}
    )

    def __post_init__(self):
        super().__post_init__()
        unknown = [name for name in self.variants if name not in ABLATION_VARIANTS]
        if unknown:
            raise ValueError(f"--variants: unknown {unknown}; choose from {ABLATION_VARIANTS}")
        if not self.seeds:
            raise ValueError("--seeds: give at least one training seed")
        if self.init_from is not None:
            raise ValueError("--init_from: the ablation trains every variant from a random initialisation")


def build_variant(args: HBIDemoArguments, variant: str, seed: int) -> HBIForRetrieval:
    """The randomly initialised model of `variant` (one of `ABLATION_VARIANTS`) at the demo's sizes, seeded with
    `seed`: every variant of one seed starts from the same weights."""
    config = demo_config(args, **VARIANT_CONFIG_FIELDS[variant])
    torch.manual_seed(seed)
    return VARIANT_MODEL_CLASSES[variant](config)


def run_variant(args: HBIDemoArguments, variant: str, seed: int, train: Dataset, test: Dataset) -> dict[str, float]:
    """Train `variant` with training seed `seed` on `train`, evaluate on `test`: `REPORTED_METRICS`, the last
    logged loss parts and the wall time in seconds (`wall_s`)."""
    start = time.perf_counter()
    model = build_variant(args, variant, seed)
    processor = build_retrieval_processor(model.config)
    training_args = demo_training_arguments(args)
    training_args.seed = seed
    training_args.output_dir = str(Path(args.output_dir) / f"{variant}-seed{seed}")
    trainer = HBITrainer(
        model=model,
        args=training_args,
        data_collator=build_retrieval_collator(processor),
        train_dataset=train,
        processing_class=processor,
    )
    trainer.train()
    metrics = trainer.evaluate(test, metric_key_prefix="test")
    result = {name: metrics[f"test_{name}"] for name in REPORTED_METRICS if name != "Rsum"}
    result["Rsum"] = sum(result[f"{direction}_R@{k}"] for direction in ("t2v", "v2t") for k in (1, 5, 10))
    logged = [entry for entry in trainer.state.log_history if "contrastive_loss" in entry]
    if logged:
        parts = ("contrastive_loss", "banzhaf_loss", "distillation_loss")
        result.update({name: logged[-1][name] for name in parts if name in logged[-1]})
    result["wall_s"] = time.perf_counter() - start
    return result


def summarize(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, tuple[float, float]]]:
    """Per variant and metric of `REPORTED_METRICS`, the mean and the sample standard deviation (n - 1; 0 for a single
    run) over the runs."""
    summary = {}
    for variant, results in runs.items():
        summary[variant] = {}
        for name in REPORTED_METRICS:
            values = [result[name] for result in results]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            summary[variant][name] = (statistics.fmean(values), spread)
    return summary


def run_ablation(args: HBIAblationArguments, splits: DatasetDict | None = None) -> dict:
    """Every variant of `args.variants` with every seed of `args.seeds` on the `train` / `test` retrieval rows of
    `splits` (default: the embedded dataset of `args.seed`); writes and returns `{"arguments", "train_rows",
    "test_rows", "runs", "summary", "wall_s"}` (`ablation_results.json` in `args.output_dir`)."""
    start = time.perf_counter()
    if splits is None:
        splits = synthetic_retrieval_splits(args.data_root, seed=args.seed)
    train = _first_rows(splits["train"], args.max_train_samples)
    test = _first_rows(splits["test"], args.max_test_samples)
    runs: dict[str, list[dict[str, float]]] = {variant: [] for variant in args.variants}
    output = Path(args.output_dir) / "ablation_results.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    # seed by seed, so that an interrupted run leaves every variant with the same seeds; the file is rewritten
    # after every run
    for seed in args.seeds:
        for variant in args.variants:
            result = run_variant(args, variant, seed, train, test)
            logger.info(f"ablation {variant} seed {seed}: {result}")
            runs[variant].append(result)
            results = {
                "arguments": asdict(args),
                "train_rows": len(train),
                "test_rows": len(test),
                "runs": runs,
                "summary": {
                    variant: {name: list(pair) for name, pair in row.items()}
                    for variant, row in summarize({v: r for v, r in runs.items() if r}).items()
                },
                "wall_s": time.perf_counter() - start,
            }
            output.write_text(json.dumps(results, indent=2))
    return results


def format_table(summary: dict[str, dict[str, tuple[float, float] | list[float]]]) -> str:
    """A Markdown table of mean +- std (pairs as [`summarize`] gives them) of t2v R@1, t2v R@5 and Rsum per variant."""
    lines = ["| variant | t2v R@1 | t2v R@5 | Rsum (both directions) |", "|---|---|---|---|"]
    for variant, row in summary.items():
        cells = [f"{row[name][0]:.1f} ± {row[name][1]:.1f}" for name in ("t2v_R@1", "t2v_R@5", "Rsum")]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = [
    "ABLATION_VARIANTS",
    "HBIAblationArguments",
    "HBIEntityLevelAlignmentLoss",
    "HBIEntityLevelForRetrieval",
    "HBIMeanPooledForRetrieval",
    "build_variant",
    "format_table",
    "mean_pooled_similarity",
    "run_ablation",
    "run_variant",
    "summarize",
]
