"""Model cards for HBI checkpoints, rendered from the model's config and the *measured* evaluation results.

A card states a number for this checkpoint only when an `eval_results.json` (flat `{metric: value}`) measured on it is
given; otherwise its results section says "not yet measured". For the paper's own results a card points to the
paper's table and quotes no number from it.
"""

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from transformers import PreTrainedConfig

from .configuration_hbi import HBIBanzhafEstimatorConfig

RETRIEVAL_TASK = "text-video-retrieval"
QA_TASK = "video-question-answering"
ESTIMATOR_TASK = "banzhaf-interaction-estimation"

CITATION = """@inproceedings{jin2023video,
  title     = {Video-Text as Game Players: Hierarchical Banzhaf Interaction for Cross-Modal Representation Learning},
  author    = {Jin, Peng and Huang, Jinfa and Xiong, Pengfei and Tian, Shangxuan and Liu, Chang and Ji, Xiangyang and Yuan, Li and Chen, Jie},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2023}
}

@article{jin2024hierarchical,
  title   = {Hierarchical Banzhaf Interaction for General Video-Language Representation Learning},
  author  = {Jin, Peng and Li, Hao and Yuan, Li and Yan, Shuicheng and Chen, Jie},
  journal = {IEEE Transactions on Pattern Analysis and Machine Intelligence (TPAMI)},
  year    = {2024}
}"""


@dataclass(frozen=True)
class HBIRelease:
    """What a card says about one planned release: the task, the data, and where the paper reports its results."""

    key: str
    title: str
    task: str
    dataset_id: str
    dataset_pretty_name: str
    split: str
    training_data: str
    intended_use: str
    limitations: tuple[str, ...]
    paper_table: str | None = "Table I"
    """The table of the TPAMI 2024 paper with the authors' results for this setting (None: no standalone results)."""


_RETRIEVAL_LIMITS = (
    "Trained on English captions of web videos; behaviour on other languages, domains or much longer videos is "
    "untested.",
    "Frames are sampled uniformly and encoded by CLIP frame by frame: audio and fine motion are not modelled.",
    "Retrieval scores are similarities for ranking, not calibrated probabilities.",
    "CLIP's social biases carry over to the retrieval ranking.",
)

RELEASES: dict[str, HBIRelease] = {
    "msrvtt": HBIRelease(
        key="msrvtt",
        title="text-video retrieval on MSR-VTT",
        task=RETRIEVAL_TASK,
        dataset_id="msr-vtt",
        dataset_pretty_name="MSR-VTT (1k-A test)",
        split="1k-A test",
        training_data="MSR-VTT 9k training split (about 9,000 videos with 20 captions each); 12 frames and 32 words "
        "per pair.",
        intended_use="Ranking short web videos for a text query, and text captions for a video (late interaction: "
        "encode each side once, score any pair).",
        limitations=_RETRIEVAL_LIMITS,
    ),
    "activitynet": HBIRelease(
        key="activitynet",
        title="video-paragraph retrieval on ActivityNet Captions",
        task=RETRIEVAL_TASK,
        dataset_id="activitynet-captions",
        dataset_pretty_name="ActivityNet Captions (val1)",
        split="val1",
        training_data="ActivityNet Captions training split (10K videos), segment captions concatenated into one "
        "paragraph per video; 64 frames and 64 words.",
        intended_use="Ranking long untrimmed videos (minutes) for a paragraph query.",
        limitations=_RETRIEVAL_LIMITS,
    ),
    "didemo": HBIRelease(
        key="didemo",
        title="video-paragraph retrieval on DiDeMo",
        task=RETRIEVAL_TASK,
        dataset_id="didemo",
        dataset_pretty_name="DiDeMo (test)",
        split="test",
        training_data="DiDeMo training split, descriptions concatenated into a paragraph per video (CLIP4Clip "
        "protocol); 32 frames and 64 words.",
        intended_use="Ranking personal videos for a paragraph query.",
        limitations=_RETRIEVAL_LIMITS,
    ),
    "msrvtt-qa": HBIRelease(
        key="msrvtt-qa",
        title="open-ended video question answering on MSRVTT-QA",
        task=QA_TASK,
        dataset_id="msrvtt-qa",
        dataset_pretty_name="MSRVTT-QA (test)",
        split="test",
        training_data="MSRVTT-QA training questions (from MSR-VTT videos), answered by classification over the "
        "most frequent training answers; 12 frames and 32 words.",
        intended_use="Answering short factual questions about a short video with one word from a fixed answer "
        "vocabulary.",
        limitations=(
            "Answers outside the training answer vocabulary can never be produced.",
            "Open-ended classification only; no multiple-choice or free-form generation.",
            "Trained on English questions about web videos; other languages and domains are untested.",
        ),
        paper_table="Table II",
    ),
    "estimator": HBIRelease(
        key="estimator",
        title="the Banzhaf-interaction estimator",
        task=ESTIMATOR_TASK,
        dataset_id="msr-vtt",
        dataset_pretty_name="MSR-VTT (9k training split)",
        split="train",
        training_data="Word x frame similarity matrices of matched MSR-VTT training pairs, labelled by Monte-Carlo "
        "Banzhaf-interaction sampling; the encoders were frozen at CLIP initialisation.",
        intended_use="The frozen teacher of the Banzhaf-interaction loss (Eq. 8) when training HBI models "
        "(`estimator_name_or_path=...`). Not a retrieval model by itself.",
        limitations=(
            "Trained on entity-level (word x frame) matrices only; HBI applies it to all three levels.",
            "Its targets are Monte-Carlo estimates, so its outputs are approximations of the Banzhaf interaction.",
        ),
        paper_table=None,
    ),
}

_QA_DATASETS = ("msrvtt-qa", "msvd-qa", "activitynet-qa")

CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

{{ summary }}

## How to load

```python
{{ load_snippet }}
```

## Intended use

{{ intended_use }}

## Training data

{{ training_data }}

## Configuration

{{ configuration }}

## Evaluation results of this checkpoint

{{ results }}

## The paper's results

{{ paper_results }}

## Limitations

{{ limitations }}

## Citation

```bibtex
{{ citation }}
```
"""


def load_eval_results(path: str | Path) -> dict[str, float]:
    """Read an `eval_results.json` (a flat `{metric: number}` object), refusing anything else with the file name."""
    path = Path(path)
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(results, dict):
        raise ValueError(f"{path} must hold a flat JSON object {{metric: number}}; got {type(results).__name__}")
    for name, value in results.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{path}: metric {name!r} must be a finite number; got {value!r}")
    return {name: float(value) for name, value in results.items()}


def _infer_task(config: PreTrainedConfig, dataset_name: str) -> str:
    if isinstance(config, HBIBanzhafEstimatorConfig):
        return ESTIMATOR_TASK
    return QA_TASK if dataset_name in _QA_DATASETS else RETRIEVAL_TASK


def _release_for(config: PreTrainedConfig, dataset_name: str) -> HBIRelease:
    key = "estimator" if isinstance(config, HBIBanzhafEstimatorConfig) else dataset_name
    if key not in RELEASES:
        raise ValueError(f"no release description for dataset {dataset_name!r}; known: {sorted(RELEASES)}")
    return RELEASES[key]


def _method_name(config: PreTrainedConfig) -> str | None:
    if isinstance(config, HBIBanzhafEstimatorConfig):
        return None
    return "HBI V2" if config.representation_reconstruction else "HBI"


def _configuration_lines(config: PreTrainedConfig) -> str:
    if isinstance(config, HBIBanzhafEstimatorConfig):
        attention = "single-head self-attention over the cells" if config.use_attention else "no attention"
        return (
            f"- input features `{config.input_features}`, {attention}, hidden size {config.hidden_size}, "
            f"kernel {config.kernel_size}x{config.kernel_size}"
        )
    clusters = (
        f"ratios video {config.video_cluster_ratios}, text {config.text_cluster_ratios}"
        if config.cluster_mode == "ratio"
        else f"counts video {config.video_cluster_counts}, text {config.text_cluster_counts}"
    )
    vision = config.vision_config
    return "\n".join(
        [
            f"- method: {_method_name(config)} (`representation_reconstruction={config.representation_reconstruction}`)",
            f"- CLIP towers: vision width {vision.hidden_size}, {vision.num_hidden_layers} layers, patch "
            f"{vision.patch_size}, {vision.image_size} px; text width {config.text_config.hidden_size}; "
            f"joint dimension {config.projection_dim}",
            f"- {config.num_frames} frames, {config.max_words} words; temporal transformer of "
            f"{config.temporal_num_layers} layers",
            f"- token merges ({config.cluster_mode}): {clusters}",
            f"- inference fuses the entity / action / event similarities with weights "
            f"{config.similarity_level_weights}",
        ]
    )


def _results_table(results: Mapping[str, float]) -> str:
    rows = [f"| {name} | {value:g} |" for name, value in results.items()]
    return "\n".join(["| metric | value |", "|---|---|", *rows])


def _paper_section(release: HBIRelease, method: str | None) -> str:
    if release.paper_table is None:
        return "The paper reports no standalone results for this component."
    name = method or "HBI and HBI V2"
    return (
        f"The authors' results for {name} on {release.dataset_pretty_name} are in {release.paper_table} of the TPAMI "
        "2024 paper. They were obtained with the authors' code and weights; this card states only what was measured "
        "for this checkpoint."
    )


def _load_snippet(config: PreTrainedConfig, repo_id: str, task: str) -> str:
    if task == ESTIMATOR_TASK:
        return (
            "import hbi_hf\nfrom hbi_hf import HBIBanzhafEstimator\n\n"
            f'estimator = HBIBanzhafEstimator.from_pretrained("{repo_id}")\n'
            f'# as the teacher of a new HBI run: HBIForRetrieval.from_clip(..., estimator_name_or_path="{repo_id}")'
        )
    if task == QA_TASK:
        return (
            "import hbi_hf  # registers the HBI classes with the transformers Auto classes\n"
            "from transformers import AutoModel\n\n"
            f'encoder = AutoModel.from_pretrained("{repo_id}")  # the HBI encoder; the answer head loads with its class'
        )
    return (
        "import hbi_hf  # registers the HBI classes with the transformers Auto classes\n"
        "from hbi_hf import AutoModelForVideoTextRetrieval\n\n"
        f'model = AutoModelForVideoTextRetrieval.from_pretrained("{repo_id}")\n'
        "text = model.get_text_features(input_ids, attention_mask)\n"
        "video = model.get_video_features(pixel_values, video_mask)  # (batch, frames, 3, H, W)\n"
        "scores = model.score(text, video)  # (n_text, n_video)"
    )


def render_model_card(
    config: PreTrainedConfig,
    dataset_name: str,
    eval_results: Mapping[str, float] | None = None,
    repo_id: str | None = None,
    license: str | None = None,
    base_model: str | None = "openai/clip-vit-base-patch32",
) -> ModelCard:
    """
    The model card of a checkpoint.

    Args:
        config: the checkpoint's [`HBIConfig`] or [`HBIBanzhafEstimatorConfig`].
        dataset_name (`str`): one of `RELEASES` ("msrvtt", "activitynet", "didemo", "msrvtt-qa"); ignored for the
            estimator, which has its own release.
        eval_results (`dict[str, float]`, *optional*): metrics measured on this checkpoint (the `eval_results.json`
            of the evaluation scripts). Without them the card says "not yet measured".
        repo_id (`str`, *optional*): the Hub repository, used in the title and the loading snippet.
        license (`str`, *optional*): the license identifier of the weights; omitted when not given.
        base_model (`str`, *optional*): the CLIP checkpoint the model was initialised from.
    """
    release = _release_for(config, dataset_name)
    task = _infer_task(config, dataset_name)
    method = _method_name(config)
    name = repo_id or f"hbi-{release.key}"
    results = dict(eval_results) if eval_results else {}
    card_data = ModelCardData(
        library_name="transformers",
        license=license,
        base_model=base_model if task != ESTIMATOR_TASK else None,
        datasets=[release.dataset_id],
        tags=["hbi", "video", "clip", "banzhaf-interaction", task],
        model_name=name if results else None,
        eval_results=[
            EvalResult(
                task_type=task,
                dataset_type=release.dataset_id,
                dataset_name=release.dataset_pretty_name,
                dataset_split=release.split,
                metric_type=metric,
                metric_name=metric,
                metric_value=value,
            )
            for metric, value in results.items()
        ]
        or None,
    )
    summary = (
        f"{method or 'HBI'} checkpoint for {release.title}, implemented with hbi-hf on Hugging Face "
        f"transformers (model type `{config.model_type}`)."
    )
    return ModelCard.from_template(
        card_data,
        template_str=CARD_TEMPLATE,
        model_name=name,
        summary=summary,
        load_snippet=_load_snippet(config, repo_id or "path/to/checkpoint", task),
        intended_use=release.intended_use,
        training_data=release.training_data,
        configuration=_configuration_lines(config),
        results=(
            f"Measured on {release.dataset_pretty_name} with this checkpoint:\n\n{_results_table(results)}"
            if results
            else "Not yet measured: no evaluation results have been recorded for this checkpoint."
        ),
        paper_results=_paper_section(release, method),
        limitations="\n".join(f"- {line}" for line in release.limitations),
        citation=CITATION,
    )


__all__ = ["CITATION", "RELEASES", "HBIRelease", "load_eval_results", "render_model_card"]
