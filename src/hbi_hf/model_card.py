"""Model cards for HBI checkpoints, rendered from the model's config and the *measured* evaluation results, and the
one builder of the Hub `model-index` results ([`model_index_results`]) that the training and evaluation scripts
([`write_eval_results`]), the card and `push_to_hub` share.

A card states a number for this checkpoint only when results measured on it are given (the `eval_results.json` the
scripts write); otherwise its results section says "not yet measured". For the paper's own results a card points to
the paper's table and quotes no number from it. `base_model` is the CLIP the model was built from
(`config.clip_name_or_path`, recorded by `from_clip`), and is left out when there is none.
"""

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from transformers import PreTrainedConfig
from transformers.utils import logging

from .configuration_hbi import HBIBanzhafEstimatorConfig

logger = logging.get_logger(__name__)

EVAL_RESULTS_NAME = "eval_results.json"

RETRIEVAL_TASK = "text-video-retrieval"
QA_TASK = "video-question-answering"
CAPTIONING_TASK = "video-captioning"
ESTIMATOR_TASK = "banzhaf-interaction-estimation"
RESULT_PREFIXES = ("eval_", "test_")
"""Prefixes the `Trainer` puts before metric names (`metric_key_prefix`); results are stored without them."""

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
    "synthetic": HBIRelease(
        key="synthetic",
        title="text-video retrieval on the embedded synthetic dataset",
        task=RETRIEVAL_TASK,
        dataset_id="hbi-hf-synthetic",
        dataset_pretty_name="hbi-hf embedded synthetic dataset (test)",
        split="test",
        training_data="The embedded synthetic dataset of hbi-hf (`hbi_hf.data.synthetic`): 300 generated 8-second "
        "videos of two coloured shapes and two events in order, 5 template captions each.",
        intended_use="Checking that a training pipeline learns (the `make demo` run). Not for real videos.",
        limitations=(
            "Trained on generated videos of coloured shapes: it says nothing about real videos or captions.",
            "Its figures show that the pipeline learns; they say nothing about the paper's accuracy.",
        ),
        paper_table=None,
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
            "hbi-hf computes the exact interactions of the model's game in closed form in a few milliseconds per "
            'training batch (`banzhaf_teacher="exact"`, the default), so training needs no estimator; this one is for '
            "reproducing the paper's recipe.",
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


# metric name (as the package's metrics name it) -> (model-index type, display name), per task of the model index
_RETRIEVAL_METRICS = {
    **{f"R@{k}": (f"recall@{k}", f"R@{k}") for k in (1, 5, 10)},
    "Rsum": ("rsum", "Rsum"),
    "MdR": ("median_rank", "Median rank"),
    "MnR": ("mean_rank", "Mean rank"),
}
_RETRIEVAL_DIRECTIONS = (
    ("t2v_", "text-to-video-retrieval", "Text-to-Video Retrieval"),
    ("v2t_", "video-to-text-retrieval", "Video-to-Text Retrieval"),
)
_TASK_METRICS = (
    (QA_TASK, "Video Question Answering", "", {"accuracy": ("accuracy", "Accuracy")}),
    (
        CAPTIONING_TASK,
        "Video Captioning",
        "",
        {
            "bleu_4": ("bleu", "BLEU-4"),
            "meteor": ("meteor", "METEOR"),
            "rouge_l": ("rouge", "ROUGE-L"),
            "cider": ("cider", "CIDEr"),
        },
    ),
)


@dataclass
class HBIEvalResults:
    """
    What an `eval_results.json` holds: the figures measured on a checkpoint and where they were measured.

    Args:
        metrics (`dict[str, float]`): metric name -> value, without the `Trainer`'s `eval_` / `test_` prefix (e.g.
            `t2v_R@1` in percent, `accuracy` and `cider` as fractions).
        dataset_name (`str`, *optional*): the dataset (`--dataset_name` of the scripts, a key of `RELEASES` for the
            planned releases); None for a hand-written file of metrics only.
        split (`str`, *optional*): the split the metrics were measured on.
    """

    metrics: dict[str, float]
    dataset_name: str | None = None
    split: str | None = None
    model_index: list[dict] = field(init=False)

    def __post_init__(self):
        self.metrics = _strip_prefixes(self.metrics)
        self.model_index = model_index_results(self.metrics, self.dataset_name, self.split)

    def to_json(self) -> str:
        """The file's text: `dataset_name`, `split`, `metrics` and, for readers, the `model_index` results that the
        card's metadata will carry (built by [`model_index_results`])."""
        payload = {
            "dataset_name": self.dataset_name,
            "split": self.split,
            "metrics": self.metrics,
            "model_index": self.model_index,
        }
        return json.dumps(payload, indent=2) + "\n"


def _strip_prefixes(metrics: Mapping[str, float]) -> dict[str, float]:
    stripped = {}
    for name, value in metrics.items():
        for prefix in RESULT_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix) :]
        stripped[name] = value
    return stripped


def _dataset_entry(dataset_name: str | None, split: str | None) -> dict[str, str]:
    """The model index's `dataset` of results measured on `dataset_name`: the release's Hub id and name for a planned
    release, the name as given otherwise."""
    release = RELEASES.get(dataset_name) if dataset_name is not None else None
    if release is not None:
        return {"name": release.dataset_pretty_name, "type": release.dataset_id, "split": split or release.split}
    name = dataset_name or "unknown"
    return {"name": name, "type": name, "split": split or "test"}


def model_index_results(
    metrics: Mapping[str, float], dataset_name: str | None, split: str | None = None
) -> list[dict]:
    """
    The `results` of a Hub `model-index` entry: the one place where the package turns measured metrics into the
    index, used by [`write_eval_results`] (the training and evaluation scripts), [`render_model_card`] and
    `hbi_hf.hub`.

    Recognised metrics, as the package's metrics name them (an `eval_` / `test_` prefix is ignored): retrieval
    `t2v_` / `v2t_` R@1, R@5, R@10, Rsum, MdR, MnR (two tasks, text-to-video and video-to-text); video QA `accuracy`;
    captioning `bleu_4`, `meteor`, `rouge_l`, `cider`. Everything else is not a figure of the checkpoint and stays
    out: `epoch`, run times, counts such as `num_questions` or `gallery_videos`, and dual-softmax `dsl_*` figures
    (re-ranked over the whole test gallery, not comparable with the plain ones). Values are kept exactly as measured.

    Args:
        metrics (`dict[str, float]`): e.g. `{"test_t2v_R@1": 49.4, "test_v2t_R@1": 47.7, "epoch": 5.0}`.
        dataset_name (`str`, *optional*): where they were measured (see [`HBIEvalResults`]).
        split (`str`, *optional*): the split; defaults to the release's.

    Returns:
        `list[dict]` of `{"task": {"type", "name"}, "dataset": {"name", "type", "split"}, "metrics": [{"type",
        "value", "name"}, ...]}`, one per task with at least one metric.
    """
    metrics = _strip_prefixes(metrics)
    dataset = _dataset_entry(dataset_name, split)
    tasks = [(task, name, prefix, _RETRIEVAL_METRICS) for prefix, task, name in _RETRIEVAL_DIRECTIONS]
    results = []
    for task_type, task_name, prefix, known in (*tasks, *_TASK_METRICS):
        entries = [
            {"type": metric_type, "value": float(metrics[prefix + key]), "name": label}
            for key, (metric_type, label) in known.items()
            if prefix + key in metrics
        ]
        if entries:
            results.append(
                {"task": {"type": task_type, "name": task_name}, "dataset": dict(dataset), "metrics": entries}
            )
    return results


def write_eval_results(
    output_dir: str | os.PathLike, metrics: Mapping[str, float], dataset_name: str, split: str
) -> Path:
    """
    Write `output_dir/eval_results.json` ([`HBIEvalResults`]): the metrics without the `Trainer`'s prefix, the
    dataset and split they were measured on, and the model-index results built from them. What the training and
    evaluation scripts write, and what [`load_eval_results`], the card and `push_to_hub` read.

    Raises:
        `ValueError`: a metric that is not a finite number (named).
    """
    results = HBIEvalResults(
        {name: _finite(name, value, "metrics") for name, value in metrics.items()}, dataset_name, split
    )
    path = Path(output_dir) / EVAL_RESULTS_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(results.to_json())
    return path


def _finite(name: str, value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: metric {name!r} must be a finite number; got {value!r}")
    return float(value)


def load_eval_results(path: str | Path) -> HBIEvalResults:
    """
    Read an `eval_results.json`: the scripts' format (`{"dataset_name", "split", "metrics": {...}, "model_index"}`,
    [`write_eval_results`]), or a flat `{metric: number}` object written by hand (dataset and split unknown).

    Raises:
        `ValueError`: invalid JSON, another structure, or a metric that is not a finite number, naming the file and
            the metric.
    """
    path = Path(path)
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(content, dict):
        raise ValueError(
            f'{path} must hold a JSON object ({{"metrics": {{...}}, "dataset_name": ..., "split": ...}} or a flat '
            f"{{metric: number}}); got {type(content).__name__}"
        )
    if "metrics" not in content:
        return HBIEvalResults({name: _finite(name, value, str(path)) for name, value in content.items()})
    metrics = content["metrics"]
    if not isinstance(metrics, dict):
        raise ValueError(f"{path}: 'metrics' must be a JSON object {{metric: number}}; got {type(metrics).__name__}")
    for key in ("dataset_name", "split"):
        if content.get(key) is not None and not isinstance(content[key], str):
            raise ValueError(f"{path}: {key!r} must be a string; got {content[key]!r}")
    return HBIEvalResults(
        {name: _finite(name, value, str(path)) for name, value in metrics.items()},
        content.get("dataset_name"),
        content.get("split"),
    )


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
            f"- CLIP initialisation: {_clip_origin(config)}",
            f"- {config.num_frames} frames, {config.max_words} words; temporal transformer of "
            f"{config.temporal_num_layers} layers",
            f"- token merges ({config.cluster_mode}): {clusters}",
            f"- inference fuses the entity / action / event similarities with weights "
            f"{config.similarity_level_weights}",
        ]
    )


_HUB_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+|[A-Za-z0-9][\w.-]*")


def base_model_of(config: PreTrainedConfig) -> str | None:
    """The Hub id of the CLIP the model was built from (`config.clip_name_or_path`, set by `from_clip`): None for an
    estimator, for randomly initialised towers, and for a CLIP loaded from a local folder (not a Hub id)."""
    name = getattr(config, "clip_name_or_path", None)
    if name is None or isinstance(config, HBIBanzhafEstimatorConfig):
        return None
    if os.path.isabs(name) or name.startswith(".") or not _HUB_REPO_ID.fullmatch(name) or Path(name).exists():
        return None
    return name


def _clip_origin(config: PreTrainedConfig) -> str:
    name = getattr(config, "clip_name_or_path", None)
    if name is None:
        return (
            "none recorded: the CLIP towers were randomly initialised (`clip_name_or_path` is unset; checkpoints saved "
            "before hbi-hf recorded it also read this way)"
        )
    if base_model_of(config) is None:
        return f"the local CLIP folder `{name}` (not a Hub id, so no `base_model`)"
    return f"[{name}](https://huggingface.co/{name}) (built with `from_clip`)"


def _results_table(model_index: list[dict]) -> str:
    rows = [
        f"| {result['task']['name']} | {metric['name']} | {metric['value']:g} |"
        for result in model_index
        for metric in result["metrics"]
    ]
    return "\n".join(["| task | metric | value |", "|---|---|---|", *rows])


def _paper_section(release: HBIRelease, method: str | None) -> str:
    if release.paper_table is None:
        if release.task == ESTIMATOR_TASK:
            return "The paper reports no standalone results for this component."
        return f"The paper reports no results on {release.dataset_pretty_name}."
    name = method or "HBI and HBI V2"
    return (
        f"The authors' results for {name} on {release.dataset_pretty_name} are in {release.paper_table} of the TPAMI "
        "2024 paper. They were obtained with the authors' code and weights; this card states only what was measured "
        "for this checkpoint."
    )


PIPELINE_TAGS = {RETRIEVAL_TASK: "feature-extraction", QA_TASK: "visual-question-answering"}
"""The Hub `pipeline_tag` of each task. The Hub has no text-video retrieval tag: a retrieval model encodes texts and
videos into features that are compared (as CLIP-style embedding models are tagged); the QA model classifies over an
answer vocabulary given a video and a question, as the Hub's visual-question-answering classifiers (e.g. ViLT) do.
The estimator is a training component and gets none."""
DEFAULT_LICENSE = "apache-2.0"
"""The license of checkpoints trained with hbi-hf, the package's own (its weights start from OpenAI's CLIP, MIT
licensed); `render_model_card(..., license=...)` states another."""

_PROCESSOR_LOAD = (
    "import torch\n"
    "from transformers import AutoProcessor\n\n"
    "import hbi_hf  # registers the HBI classes with the transformers Auto classes\n"
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
            _PROCESSOR_LOAD + "from hbi_hf import AutoModelForVideoQuestionAnswering\n\n"
            f'model = AutoModelForVideoQuestionAnswering.from_pretrained("{repo_id}")\n'
            f'processor = AutoProcessor.from_pretrained("{repo_id}")  # CLIP tokenizer + video processor\n'
            'inputs = processor(text=["what is the man doing?"], videos=["video.mp4"], return_tensors="pt")\n'
            "with torch.no_grad():\n"
            "    logits = model(**inputs).logits  # (batch, answers)\n"
            "print(model.config.id2label[int(logits.argmax(-1)[0])])"
        )
    return (
        _PROCESSOR_LOAD + "from hbi_hf import AutoModelForVideoTextRetrieval\n\n"
        f'model = AutoModelForVideoTextRetrieval.from_pretrained("{repo_id}")\n'
        f'processor = AutoProcessor.from_pretrained("{repo_id}")  # CLIP tokenizer + video processor\n'
        'inputs = processor(text=["a man is playing a guitar"], videos=["a.mp4", "b.mp4"], return_tensors="pt")\n'
        "with torch.no_grad():\n"
        '    text = model.get_text_features(inputs["input_ids"], inputs["attention_mask"])\n'
        '    video = model.get_video_features(inputs["pixel_values"], inputs["video_mask"])\n'
        "scores = model.score(text, video)  # (n_text, n_video)\n"
        "# without the package: transformers.AutoModel.from_pretrained(..., trust_remote_code=True) gives the encoder"
    )


def render_model_card(
    config: PreTrainedConfig,
    dataset_name: str,
    eval_results: HBIEvalResults | Mapping[str, float] | None = None,
    repo_id: str | None = None,
    license: str | None = DEFAULT_LICENSE,
) -> ModelCard:
    """
    The model card of a checkpoint.

    Args:
        config: the checkpoint's [`HBIConfig`] or [`HBIBanzhafEstimatorConfig`]. Its `clip_name_or_path` gives the
            card's `base_model` ([`base_model_of`]).
        dataset_name (`str`): one of `RELEASES` ("msrvtt", "activitynet", "didemo", "msrvtt-qa", "synthetic");
            ignored for the estimator, which has its own release.
        eval_results ([`HBIEvalResults`] or `dict[str, float]`, *optional*): what was measured on this checkpoint
            (the scripts' `eval_results.json`, read with [`load_eval_results`], or a dict of metrics). The card's
            results section and `model-index` hold exactly the figures [`model_index_results`] recognises in them;
            without any it says "not yet measured".
        repo_id (`str`, *optional*): the Hub repository, used in the title and the loading snippet.
        license (`str`, *optional*, defaults to [`DEFAULT_LICENSE`]): the Hub license identifier of the weights;
            `None` leaves it out.

    Raises:
        `ValueError`: an unknown `dataset_name`, or results measured on another dataset than `dataset_name`.
    """
    release = _release_for(config, dataset_name)
    task = _infer_task(config, dataset_name)
    method = _method_name(config)
    name = repo_id or f"hbi-{release.key}"
    if eval_results is not None and not isinstance(eval_results, HBIEvalResults):
        eval_results = HBIEvalResults(dict(eval_results))
    model_index = []
    if eval_results is not None:
        measured_on = eval_results.dataset_name
        if measured_on is not None and measured_on != release.key:
            raise ValueError(
                f"the results were measured on {measured_on!r}, but the card describes the {release.key!r} release; "
                f"render the card for {measured_on!r} or give the results measured on {release.key!r}"
            )
        model_index = model_index_results(eval_results.metrics, release.key, eval_results.split)
        left_out = sorted(set(eval_results.metrics) - _recognised_names(eval_results.metrics))
        if left_out:
            logger.info("Not figures of the checkpoint, left out of the card: %s", ", ".join(left_out))
        if not model_index:
            logger.warning("No metric of the results is a figure the card knows: it says 'not yet measured'")
    card_data = ModelCardData(
        library_name="transformers",
        license=license,
        pipeline_tag=PIPELINE_TAGS.get(task),
        base_model=base_model_of(config),
        datasets=[release.dataset_id],
        tags=["hbi", "video", "clip", "banzhaf-interaction", task],
        model_name=name if model_index else None,
        eval_results=[
            EvalResult(
                task_type=result["task"]["type"],
                task_name=result["task"]["name"],
                dataset_type=result["dataset"]["type"],
                dataset_name=result["dataset"]["name"],
                dataset_split=result["dataset"]["split"],
                metric_type=metric["type"],
                metric_name=metric["name"],
                metric_value=metric["value"],
            )
            for result in model_index
            for metric in result["metrics"]
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
            f"Measured on {model_index[0]['dataset']['name']}, split `{model_index[0]['dataset']['split']}`, with "
            f"this checkpoint:\n\n{_results_table(model_index)}"
            if model_index
            else "Not yet measured: no evaluation results have been recorded for this checkpoint."
        ),
        paper_results=_paper_section(release, method),
        limitations="\n".join(f"- {line}" for line in release.limitations),
        citation=CITATION,
    )


def _recognised_names(metrics: Mapping[str, float]) -> set[str]:
    names = {prefix + key for prefix, _, _ in _RETRIEVAL_DIRECTIONS for key in _RETRIEVAL_METRICS}
    names |= {key for _, _, _, known in _TASK_METRICS for key in known}
    return names & set(metrics)


__all__ = [
    "CITATION",
    "DEFAULT_LICENSE",
    "EVAL_RESULTS_NAME",
    "PIPELINE_TAGS",
    "RELEASES",
    "HBIEvalResults",
    "HBIRelease",
    "base_model_of",
    "load_eval_results",
    "model_index_results",
    "render_model_card",
    "write_eval_results",
]
