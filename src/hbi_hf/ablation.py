"""The paper's ablation in miniature (`make ablation`, scripts/ablation.py): variants of the demo's model fine-tuned on
the embedded synthetic dataset from the same pre-trained CLIP towers (or, `--towers scratch`, trained from random
towers) with several training seeds each, evaluated on its test split, summarised as mean and standard deviation of
the retrieval metrics, compared seed by seed with the mean-pooled baseline (paired t-test and Wilcoxon signed-rank
test) and broken down by test caption (with or without a temporal twin) (docs/banzhaf.md, "Ablation in miniature").

The variants (`ABLATION_VARIANTS`):
- `full`: HBI as the demo trains it (Eq. 16: every level's contrastive loss, alpha * L_I with the config's default
  exact teacher, beta * self-distillation; the config's default objective, `"official"`);
- `full_sharpened`: the same with the objective and weights before issue 23 (`objective="sharpened"`, beta = 1);
- `no_banzhaf`: alpha = 0 (`banzhaf_loss_weight=0`; no teacher runs, the same loss as `banzhaf_teacher="none"`);
- `no_distillation`: beta = 0 (`distillation_loss_weight=0`);
- `entity_only`: only the entity level is trained (its contrastive loss and its L_I; no action / event level losses,
  hence no self-distillation), [`HBIEntityLevelForRetrieval`];
- `entity_wti`: the entity level's contrastive loss alone (alpha = 0): WTI token matching with no auxiliary loss;
- `mean_pooled`: a CLIP4Clip-style baseline on the same towers, [`HBIMeanPooledForRetrieval`].

Every HBI variant ranks with the entity level at inference (`similarity_level_weights=[1, 0, 0]`, the official
retrieval default), so the variants differ in what they are trained with only; the baseline ranks with its own score.
"""

import json
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from datasets import Dataset, DatasetDict
from transformers.utils import logging

from .configuration_hbi import HBIConfig
from .demo import (
    HBIDemoArguments,
    HBIRetrievalDemoArguments,
    _first_rows,
    build_retrieval_model,
    demo_training_arguments,
    pretraining_arguments,
)
from .metrics import compute as compute_metric
from .modeling_hbi import (
    HBIAlignmentLoss,
    HBIAlignmentLossOutput,
    HBIForRetrieval,
    HBIRetrievalOutput,
    contrastive_loss,
    gather_with_local_grad,
)
from .pretraining import pretrained_towers
from .retrieval_data import build_retrieval_collator, build_retrieval_processor, synthetic_retrieval_splits
from .retrieval_evaluation import HBIRetrievalGallery, encode_gallery, score_gallery
from .training import HBITrainer

logger = logging.get_logger(__name__)

ABLATION_VARIANTS = (
    "full",
    "full_sharpened",
    "no_banzhaf",
    "no_distillation",
    "entity_only",
    "entity_wti",
    "mean_pooled",
)
"""The variants of the ablation, in the order of its table."""

VARIANT_CONFIG_FIELDS: dict[str, dict] = {
    "full": {},
    "full_sharpened": {"objective": "sharpened", "distillation_loss_weight": 1.0},
    "no_banzhaf": {"banzhaf_loss_weight": 0.0},
    "no_distillation": {"distillation_loss_weight": 0.0},
    "entity_only": {},
    "entity_wti": {"banzhaf_loss_weight": 0.0},
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
    "full_sharpened": HBIForRetrieval,
    "no_banzhaf": HBIForRetrieval,
    "no_distillation": HBIForRetrieval,
    "entity_only": HBIEntityLevelForRetrieval,
    "entity_wti": HBIEntityLevelForRetrieval,
    "mean_pooled": HBIMeanPooledForRetrieval,
}

BASELINE_VARIANT = "mean_pooled"
"""The variant every other one is compared with, seed by seed."""


@dataclass
class HBIAblationArguments(HBIRetrievalDemoArguments):
    """The retrieval demo's towers, sizes and schedule (see [`HBIRetrievalDemoArguments`]), the variants, the
    training seeds and how many runs go at once."""

    output_dir: str = field(
        default="outputs/ablation", metadata={"help": "Where the per-run and summary results (JSON) go."}
    )
    towers: Literal["pretrained", "scratch"] = field(
        default="pretrained",
        metadata={
            "help": "pretrained: every variant fine-tunes the same CLIP towers, pre-trained contrastively on captioned "
            "single frames of other scenes (the paper's regime); scratch: every variant trains random towers."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of the synthetic dataset and of the pre-training."})
    seeds: list[int] = field(
        default_factory=lambda: [0, 1, 2, 3, 4], metadata={"help": "Training seeds of each variant."}
    )
    variants: list[str] = field(
        default_factory=lambda: list(ABLATION_VARIANTS), metadata={"help": f"Variants to run: {ABLATION_VARIANTS}."}
    )
    parallel_runs: int = field(default=1, metadata={"help": "Runs trained at once, each in its own process."})
    threads_per_run: int | None = field(
        default=None, metadata={"help": "torch threads of each run (default: torch's own choice)."}
    )

    def __post_init__(self):
        super().__post_init__()
        unknown = [name for name in self.variants if name not in ABLATION_VARIANTS]
        if unknown:
            raise ValueError(f"--variants: unknown {unknown}; choose from {ABLATION_VARIANTS}")
        if not self.seeds:
            raise ValueError("--seeds: give at least one training seed")
        if self.init_from is not None:
            raise ValueError("--init_from: the ablation starts every variant from the same towers (--towers)")
        if self.parallel_runs < 1:
            raise ValueError(f"--parallel_runs must be >= 1; got {self.parallel_runs}")


def build_variant(args: HBIRetrievalDemoArguments, variant: str, seed: int) -> HBIForRetrieval:
    """The model of `variant` (one of `ABLATION_VARIANTS`) at the demo's sizes, its towers pre-trained or random as
    `args.towers` says ([`build_retrieval_model`]), its new modules seeded with `seed`: every variant of one seed
    starts from the same weights, and with pre-trained towers every run starts from the same towers."""
    torch.manual_seed(seed)
    return build_retrieval_model(args, VARIANT_MODEL_CLASSES[variant], **VARIANT_CONFIG_FIELDS[variant])


def run_settings(args: HBIAblationArguments) -> dict:
    """What a run's result depends on besides its variant and seed: every argument but the output folder, the list
    of seeds and variants and how runs are scheduled."""
    settings = asdict(args)
    for name in ("output_dir", "seeds", "variants", "parallel_runs", "threads_per_run"):
        settings.pop(name)
    return settings


@torch.inference_mode()
def _rank_test_split(model: HBIForRetrieval, processor, test: Dataset, batch_size: int) -> tuple[dict, dict]:
    """Retrieval metrics on `test` and, per caption (test row), the rank of its video (1 = first; ties count against
    it) and the video ranked first (`top1_video`, an index into the gallery's videos)."""
    model.eval()
    gallery = HBIRetrievalGallery.from_dataset(test)
    encoded = encode_gallery(model, processor, gallery, batch_size)
    if encoded.unusable_videos or encoded.unusable_captions:
        raise ValueError(
            f"the ablation's test split must decode entirely; {len(encoded.unusable_videos)} videos and "
            f"{len(encoded.unusable_captions)} captions were unusable"
        )
    scores = score_gallery(model, encoded.text_features, encoded.video_features)
    metrics = compute_metric("retrieval", predictions=scores, references=gallery.text_to_video)
    target = scores.gather(1, gallery.text_to_video.view(-1, 1))
    items = {
        "video_ids": gallery.video_ids,
        "text_to_video": gallery.text_to_video.tolist(),
        "t2v_rank": (scores >= target).sum(1).tolist(),
        "top1_video": scores.argmax(1).tolist(),
    }
    return metrics, items


class HBIDecodedVideoCache:
    """The training collator's processor with each video decoded and processed once per run: [`HBIProcessor`] `processor`
    in every other respect. An ablation run reads each training video 5 times an epoch (one row per caption); the
    decoding is deterministic, so the batches are the same as without the cache, and the run is cheaper (memory:
    `frames x 3 x side^2` floats per video, 118 MB for the demo's 300 videos)."""

    def __init__(self, processor):
        self.processor = processor
        self.decoded: dict[tuple, object] = {}

    def video_processor(self, video, **kwargs):
        """`processor.video_processor(video, **kwargs)`, computed once per `video` path and keywords."""
        key = (str(video), tuple(sorted(kwargs.items())))
        if key not in self.decoded:
            self.decoded[key] = self.processor.video_processor(video, **kwargs)
        return self.decoded[key]

    def __getattr__(self, name: str):
        return getattr(self.processor, name)


def run_variant(args: HBIDemoArguments, variant: str, seed: int, train: Dataset, test: Dataset) -> dict:
    """Train `variant` with training seed `seed` on `train`, evaluate on `test`: `REPORTED_METRICS`, the last
    logged loss parts, the wall time in seconds (`wall_s`) and, under `items`, each test caption's rank of its video
    ([`_rank_test_split`])."""
    start = time.perf_counter()
    model = build_variant(args, variant, seed)
    processor = build_retrieval_processor(model.config)
    training_args = demo_training_arguments(args)
    training_args.seed = seed
    training_args.output_dir = str(Path(args.output_dir) / f"{variant}-seed{seed}")
    trainer = HBITrainer(
        model=model,
        args=training_args,
        data_collator=build_retrieval_collator(HBIDecodedVideoCache(processor)),
        train_dataset=train,
        processing_class=processor,
    )
    trainer.train()
    metrics, items = _rank_test_split(model, processor, test, args.batch_size)
    result = {name: metrics[name] for name in REPORTED_METRICS if name != "Rsum"}
    result["Rsum"] = sum(result[f"{direction}_R@{k}"] for direction in ("t2v", "v2t") for k in (1, 5, 10))
    logged = [entry for entry in trainer.state.log_history if "contrastive_loss" in entry]
    if logged:
        parts = ("contrastive_loss", "banzhaf_loss", "distillation_loss")
        result.update({name: logged[-1][name] for name in parts if name in logged[-1]})
    result["wall_s"] = time.perf_counter() - start
    result["items"] = items
    return result


def run_file(args: HBIAblationArguments, variant: str, seed: int) -> Path:
    """`<output_dir>/runs/<variant>-seed<seed>.json`, written when that run ends."""
    return Path(args.output_dir) / "runs" / f"{variant}-seed{seed}.json"


def load_run(args: HBIAblationArguments, variant: str, seed: int) -> dict | None:
    """The finished run of `variant` and `seed` in `args.output_dir`, or `None` if it has not been written.

    Raises:
        `ValueError`: the file holds a run made with other settings ([`run_settings`]); it is left as it is.
    """
    path = run_file(args, variant, seed)
    if not path.is_file():
        return None
    saved = json.loads(path.read_text(encoding="utf-8"))
    if saved.get("settings") != json.loads(json.dumps(run_settings(args))):
        raise ValueError(
            f"{path} holds a run made with other settings than this one; give another --output_dir (nothing was "
            "overwritten)"
        )
    return saved["result"]


def _run_and_save(args: HBIAblationArguments, variant: str, seed: int, train: Dataset, test: Dataset) -> dict:
    if args.threads_per_run is not None:
        torch.set_num_threads(args.threads_per_run)
    result = run_variant(args, variant, seed, train, test)
    path = run_file(args, variant, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    partial.write_text(
        json.dumps({"variant": variant, "seed": seed, "settings": run_settings(args), "result": result})
    )
    partial.replace(path)
    logger.warning(f"ablation {variant} seed {seed}: t2v R@1 {result['t2v_R@1']:.1f}, Rsum {result['Rsum']:.1f}")
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


def paired_comparison(values: list[float], baseline: list[float]) -> dict:
    """Seed-by-seed comparison of a variant's `values` with the baseline's on the same seeds: the differences, their
    mean and sample standard deviation, and two paired two-sided tests of "no difference", `scipy.stats.ttest_rel`
    (Student's paired t-test) and `scipy.stats.wilcoxon` (the signed-rank test, exact for small samples: with 5
    pairs its smallest possible p is 2 / 32 = 0.0625). All differences zero: both p are 1.

    Raises:
        `ValueError`: the lists differ in length or hold fewer than 2 pairs.
    """
    from scipy import stats

    if len(values) != len(baseline) or len(values) < 2:
        raise ValueError(
            f"paired_comparison needs two lists of one length >= 2; got {len(values)} and {len(baseline)}"
        )
    differences = [a - b for a, b in zip(values, baseline, strict=True)]
    comparison = {
        "differences": differences,
        "mean_difference": statistics.fmean(differences),
        "std_difference": statistics.stdev(differences),
    }
    if not any(differences):
        return {**comparison, "t_statistic": 0.0, "t_pvalue": 1.0, "wilcoxon_statistic": 0.0, "wilcoxon_pvalue": 1.0}
    t_test = stats.ttest_rel(values, baseline)
    wilcoxon = stats.wilcoxon(values, baseline)
    return {
        **comparison,
        "t_statistic": float(t_test.statistic),
        "t_pvalue": float(t_test.pvalue),
        "wilcoxon_statistic": float(wilcoxon.statistic),
        "wilcoxon_pvalue": float(wilcoxon.pvalue),
    }


def compare_with_baseline(runs: dict[str, list[dict]], seeds: list[int], metrics=("t2v_R@1", "Rsum")) -> dict:
    """For every variant but [`BASELINE_VARIANT`], its [`paired_comparison`] with the baseline on each of `metrics`,
    over the seeds both have (runs listed in the order of `seeds`)."""
    if BASELINE_VARIANT not in runs:
        return {}
    baseline = runs[BASELINE_VARIANT]
    comparisons = {}
    for variant, results in runs.items():
        count = min(len(results), len(baseline))
        if variant == BASELINE_VARIANT or count < 2:
            continue
        comparisons[variant] = {
            "seeds": seeds[:count],
            **{
                name: paired_comparison([r[name] for r in results[:count]], [r[name] for r in baseline[:count]])
                for name in metrics
            },
        }
    return comparisons


def temporal_twins(test: Dataset) -> dict[str, str]:
    """Video id -> the video id of its temporal twin in `test` (the same two objects and events in the other
    order), read from the generated dataset's `scenes.jsonl`; videos without a twin in the split are absent."""
    video_ids = {
        Path(path).stem: video_id for path, video_id in zip(test["video_path"], test["video_id"], strict=True)
    }
    root = Path(test["video_path"][0]).parent.parent
    scenes = [json.loads(line) for line in (root / "scenes.jsonl").read_text(encoding="utf-8").splitlines()]
    keys: dict[str, str] = {}
    for scene in scenes:
        if scene["video_id"] not in video_ids:
            continue
        objects = json.dumps(scene["objects"], sort_keys=True)
        events = [json.dumps(event, sort_keys=True) for event in scene["events"]]
        keys[scene["video_id"]] = (objects, tuple(events))
    twins = {}
    for name, (objects, events) in keys.items():
        for other, (other_objects, other_events) in keys.items():
            if other != name and objects == other_objects and events == tuple(reversed(other_events)):
                twins[video_ids[name]] = video_ids[other]
    return twins


def item_breakdown(runs: dict[str, list[dict]], twins: dict[str, str]) -> dict:
    """Where each variant wins and loses, from the per-caption ranks of its runs: t2v R@1 (mean over runs) on the
    captions whose video has a temporal twin in the gallery and on the others, the share of top-1 errors that pick
    the twin, and against [`BASELINE_VARIANT`] (paired by seed) how often a caption is right at rank 1 for the
    variant only (`wins`) or for the baseline only (`losses`), with and without twin."""
    breakdown = {}
    baseline = runs.get(BASELINE_VARIANT, [])
    for variant, results in runs.items():
        hits = {"twin": [], "no_twin": []}
        twin_errors = errors = 0
        wins = {"twin": 0, "no_twin": 0}
        losses = {"twin": 0, "no_twin": 0}
        for index, result in enumerate(results):
            items = result["items"]
            for caption, video in enumerate(items["text_to_video"]):
                video_id = items["video_ids"][video]
                group = "twin" if video_id in twins else "no_twin"
                right = items["t2v_rank"][caption] == 1
                hits[group].append(right)
                if not right:
                    errors += 1
                    twin_errors += items["video_ids"][items["top1_video"][caption]] == twins.get(video_id)
                if variant != BASELINE_VARIANT and index < len(baseline):
                    baseline_right = baseline[index]["items"]["t2v_rank"][caption] == 1
                    wins[group] += right and not baseline_right
                    losses[group] += baseline_right and not right
        breakdown[variant] = {
            "captions_with_twin": len(hits["twin"]) // max(1, len(results)),
            "captions_without_twin": len(hits["no_twin"]) // max(1, len(results)),
            "t2v_R@1_with_twin": 100 * statistics.fmean(hits["twin"]) if hits["twin"] else None,
            "t2v_R@1_without_twin": 100 * statistics.fmean(hits["no_twin"]) if hits["no_twin"] else None,
            "top1_errors": errors,
            "top1_errors_on_the_twin": twin_errors,
        }
        if variant != BASELINE_VARIANT and baseline:
            breakdown[variant].update({"wins_vs_baseline": wins, "losses_vs_baseline": losses})
    return breakdown


def run_ablation(args: HBIAblationArguments, splits: DatasetDict | None = None) -> dict:
    """Every variant of `args.variants` with every seed of `args.seeds` on the `train` / `test` retrieval rows of
    `splits` (default: the embedded dataset of `args.seed`), `args.parallel_runs` at a time. Each run is written to
    [`run_file`] as it ends, and a run already written with the same settings is not run again (an interrupted
    ablation resumes). Pre-trained towers are built (or found in the cache) once, before any run. Writes and returns
    `{"arguments", "train_rows", "test_rows", "runs", "summary", "comparisons", "items", "wall_s"}`
    (`ablation_results.json` in `args.output_dir`)."""
    start = time.perf_counter()
    if splits is None:
        splits = synthetic_retrieval_splits(args.data_root, seed=args.seed)
    train = _first_rows(splits["train"], args.max_train_samples)
    test = _first_rows(splits["test"], args.max_test_samples)
    if args.towers == "pretrained":
        args.pretrained_dir = str(pretrained_towers(pretraining_arguments(args), args.pretrained_dir))
    # seed by seed, so that an interrupted ablation leaves every variant with the same seeds
    pending = [
        (variant, seed) for seed in args.seeds for variant in args.variants if load_run(args, variant, seed) is None
    ]
    if args.parallel_runs > 1 and len(pending) > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.parallel_runs, mp_context=context) as pool:
            futures = [pool.submit(_run_and_save, args, variant, seed, train, test) for variant, seed in pending]
            for future in futures:
                future.result()
    else:
        for variant, seed in pending:
            _run_and_save(args, variant, seed, train, test)
    runs = {variant: [load_run(args, variant, seed) for seed in args.seeds] for variant in args.variants}
    results = {
        "arguments": asdict(args),
        "train_rows": len(train),
        "test_rows": len(test),
        "runs": {variant: [{k: v for k, v in r.items() if k != "items"} for r in rs] for variant, rs in runs.items()},
        "summary": {
            variant: {name: list(pair) for name, pair in row.items()} for variant, row in summarize(runs).items()
        },
        "comparisons": compare_with_baseline(runs, args.seeds),
        "items": item_breakdown(runs, temporal_twins(test)),
        "wall_s": time.perf_counter() - start,
    }
    output = Path(args.output_dir) / "ablation_results.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    return results


def format_table(summary: dict[str, dict[str, tuple[float, float] | list[float]]]) -> str:
    """A Markdown table of mean +- std (pairs as [`summarize`] gives them) of t2v R@1, R@5, R@10 and Rsum per
    variant."""
    names = ("t2v_R@1", "t2v_R@5", "t2v_R@10", "Rsum")
    lines = ["| variant | t2v R@1 | t2v R@5 | t2v R@10 | Rsum (both directions) |", "|---|---|---|---|---|"]
    for variant, row in summary.items():
        cells = [f"{row[name][0]:.1f} ± {row[name][1]:.1f}" for name in names]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_comparisons(comparisons: dict) -> str:
    """A Markdown table of each variant's per-seed differences from [`BASELINE_VARIANT`] in t2v R@1 and Rsum, their
    mean, and the paired t-test and Wilcoxon signed-rank p-values (two-sided)."""
    lines = [
        f"| variant - {BASELINE_VARIANT} | t2v R@1 per seed | mean | t-test p | Wilcoxon p "
        "| Rsum per seed | mean | t-test p | Wilcoxon p |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for variant, row in comparisons.items():
        cells = []
        for name in ("t2v_R@1", "Rsum"):
            pair = row[name]
            per_seed = ", ".join(f"{d:+.1f}" for d in pair["differences"])
            cells += [
                per_seed,
                f"{pair['mean_difference']:+.1f}",
                f"{pair['t_pvalue']:.3f}",
                f"{pair['wilcoxon_pvalue']:.3f}",
            ]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_items(breakdown: dict) -> str:
    """A Markdown table of [`item_breakdown`]: t2v R@1 with / without a temporal twin, top-1 errors on the twin, and
    wins / losses against the baseline (summed over seeds)."""
    lines = [
        "| variant | t2v R@1, twin / no twin | top-1 errors on the twin | wins vs baseline, twin / no twin "
        "| losses vs baseline, twin / no twin |",
        "|---|---|---|---|---|",
    ]
    for variant, row in breakdown.items():
        wins, losses = row.get("wins_vs_baseline"), row.get("losses_vs_baseline")
        cells = [
            f"{row['t2v_R@1_with_twin']:.1f} / {row['t2v_R@1_without_twin']:.1f}",
            f"{row['top1_errors_on_the_twin']} of {row['top1_errors']}",
            f"{wins['twin']} / {wins['no_twin']}" if wins else "",
            f"{losses['twin']} / {losses['no_twin']}" if losses else "",
        ]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = [
    "ABLATION_VARIANTS",
    "BASELINE_VARIANT",
    "HBIAblationArguments",
    "HBIDecodedVideoCache",
    "HBIEntityLevelAlignmentLoss",
    "HBIEntityLevelForRetrieval",
    "HBIMeanPooledForRetrieval",
    "build_variant",
    "compare_with_baseline",
    "format_comparisons",
    "format_items",
    "format_table",
    "item_breakdown",
    "load_run",
    "mean_pooled_similarity",
    "paired_comparison",
    "run_ablation",
    "run_file",
    "run_settings",
    "run_variant",
    "summarize",
    "temporal_twins",
]
