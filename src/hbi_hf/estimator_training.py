r"""
Training data and training of the Banzhaf-interaction estimator (spec §2.3).

The estimator learns to map the word x frame similarity matrix of a matched video-text pair to its Banzhaf
interactions. Its training matrices come from one of three sources:

* a frozen [`HBIModel`] run over processed examples ([`matrices_from_model`]): the entity-level similarity of each
  matched pair, with the pair's WTI weight logits and masks, as in the paper;
* a safetensors file of stored matrices ([`HBIBanzhafMatrices.load`]);
* random but structured matrices ([`synthetic_similarity_matrices`]): cosines of random token embeddings in which a
  few concepts are shared by some words and a run of frames.

The labels are Monte-Carlo estimates of the interactions ([`banzhaf_labels`]), computed once and cached in a
safetensors file keyed on the matrices and the sampler settings.
"""

import copy
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from scipy.stats import spearmanr
from transformers import AutoModel, Trainer, TrainerCallback, TrainingArguments
from transformers.utils import logging

from .banzhaf import closed_form_banzhaf_interaction, sampled_banzhaf_interaction
from .configuration_hbi import ESTIMATOR_ARCHITECTURE_FIELDS, NUM_LEVELS, HBIBanzhafEstimatorConfig
from .modeling_hbi import HBIBanzhafEstimator, HBIModel, _distribution_kl

logger = logging.get_logger(__name__)

LABEL_BATCH_SIZE = 128
"""Matrices labelled together (one generator stream per file, so the labels depend on nothing else)."""

MODEL_INPUT_COLUMNS = ("input_ids", "attention_mask", "pixel_values", "video_mask")


@dataclass
class HBIBanzhafMatrices:
    r"""
    Similarity matrices of matched video-text pairs: the inputs of the Banzhaf game and of the estimator.

    Args:
        similarity (`torch.FloatTensor` of shape `(num_matrices, words, frames)`): token cosine similarities.
        text_mask (`torch.BoolTensor` of shape `(num_matrices, words)`): valid words.
        video_mask (`torch.BoolTensor` of shape `(num_matrices, frames)`): valid frames.
        text_weight_logits (`torch.FloatTensor` of shape `(num_matrices, words)`, *optional*): MLP_t logits of Eq. 12;
            without them the game uses uniform weights over the present words.
        video_weight_logits (`torch.FloatTensor` of shape `(num_matrices, frames)`, *optional*): MLP_v logits.
    """

    similarity: torch.Tensor
    text_mask: torch.Tensor
    video_mask: torch.Tensor
    text_weight_logits: torch.Tensor | None = None
    video_weight_logits: torch.Tensor | None = None

    def __post_init__(self):
        if self.similarity.dim() != 3:
            raise ValueError(f"similarity must be (num_matrices, words, frames); got {tuple(self.similarity.shape)}")
        count, words, frames = self.similarity.shape
        expected = {
            "text_mask": (count, words),
            "video_mask": (count, frames),
            "text_weight_logits": (count, words),
            "video_weight_logits": (count, frames),
        }
        for name, shape in expected.items():
            tensor = getattr(self, name)
            if tensor is not None and tuple(tensor.shape) != shape:
                raise ValueError(f"{name} must be {shape} to match similarity; got {tuple(tensor.shape)}")
        self.similarity = self.similarity.float()
        self.text_mask = self.text_mask.bool()
        self.video_mask = self.video_mask.bool()

    def __len__(self) -> int:
        return self.similarity.shape[0]

    def __getitem__(self, index) -> "HBIBanzhafMatrices":
        return HBIBanzhafMatrices(**{name: None if value is None else value[index] for name, value in self._tensors()})

    def _tensors(self):
        return [(field.name, getattr(self, field.name)) for field in fields(self)]

    def save(self, path: str | Path) -> None:
        """Write the matrices to a safetensors file (masks as uint8)."""
        tensors = {
            name: (value.to(torch.uint8) if value.dtype == torch.bool else value).contiguous()
            for name, value in self._tensors()
            if value is not None
        }
        save_file(tensors, str(path))

    @classmethod
    def load(cls, path: str | Path) -> "HBIBanzhafMatrices":
        r"""
        Read matrices from a safetensors file with the tensor `similarity` `(num_matrices, words, frames)` and,
        optionally, `text_mask`, `video_mask` (all players valid if absent), `text_weight_logits` and
        `video_weight_logits` (uniform weights if absent).
        """
        tensors = load_file(str(path))
        if "similarity" not in tensors:
            raise ValueError(
                f"{path}: no tensor 'similarity' (expected (num_matrices, words, frames)); found {sorted(tensors)}"
            )
        unknown = set(tensors) - {field.name for field in fields(cls)}
        if unknown:
            raise ValueError(f"{path}: unexpected tensors {sorted(unknown)}")
        similarity = tensors["similarity"]
        if similarity.dim() != 3:
            raise ValueError(
                f"{path}: 'similarity' must be (num_matrices, words, frames); got {tuple(similarity.shape)}"
            )
        count, words, frames = similarity.shape
        tensors.setdefault("text_mask", torch.ones(count, words, dtype=torch.bool))
        tensors.setdefault("video_mask", torch.ones(count, frames, dtype=torch.bool))
        if "text_weight_logits" not in tensors or "video_weight_logits" not in tensors:
            logger.info("%s holds no WTI weight logits for some modality: the game uses uniform weights there", path)
        try:
            return cls(**tensors)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error

    def fingerprint(self) -> str:
        """SHA-256 of every tensor (name, dtype, shape, bytes): the identity of the matrices for the label cache."""
        digest = hashlib.sha256()
        for name, value in self._tensors():
            digest.update(name.encode())
            if value is not None:
                array = value.detach().cpu().contiguous().numpy()
                digest.update(f"{array.dtype}{array.shape}".encode())
                digest.update(array.tobytes())
        return digest.hexdigest()


def synthetic_similarity_matrices(
    num_matrices: int,
    words: int = 32,
    frames: int = 12,
    embedding_dim: int = 64,
    min_words: int = 6,
    min_frames: int = 4,
    seed: int = 0,
) -> HBIBanzhafMatrices:
    r"""
    Random but structured similarity matrices: cosines between random word and frame embeddings that share a common
    background direction and 1-4 concepts per pair; each concept is added to a run of consecutive frames and to some
    words, with a per-pair strength, so a few (word, frame) pairs align clearly and the rest are noise. Valid lengths
    are drawn in `[min_words, words]` and `[min_frames, frames]`; the weight logits are absent (uniform weights).

    Returns:
        [`HBIBanzhafMatrices`] with `num_matrices` matrices of shape `(words, frames)`.
    """
    if not 1 <= min_words <= words or not 1 <= min_frames <= frames:
        raise ValueError(
            f"need 1 <= min_words <= words and 1 <= min_frames <= frames; got {min_words}, {words}, "
            f"{min_frames}, {frames}"
        )
    generator = torch.Generator().manual_seed(seed)

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(*shape, generator=generator)

    max_concepts = 4
    background = torch.randn(num_matrices, 1, embedding_dim, generator=generator) * uniform(
        0.3, 1.0, num_matrices, 1, 1
    )
    concepts = torch.randn(num_matrices, max_concepts, embedding_dim, generator=generator)
    num_concepts = torch.randint(1, max_concepts + 1, (num_matrices, 1), generator=generator)
    strength = uniform(0.8, 2.5, num_matrices, 1, 1)

    word_concept = torch.randint(0, max_concepts, (num_matrices, words), generator=generator)
    word_has_concept = (torch.rand(num_matrices, words, generator=generator) < 0.35) & (word_concept < num_concepts)
    run_start = torch.randint(0, frames, (num_matrices, max_concepts), generator=generator)
    run_length = torch.randint(1, max(2, frames // 2), (num_matrices, max_concepts), generator=generator)
    offset = torch.arange(frames) - run_start.unsqueeze(-1)
    frame_in_run = (offset >= 0) & (offset < run_length.unsqueeze(-1))
    frame_in_run &= torch.arange(max_concepts).view(1, -1, 1) < num_concepts.unsqueeze(-1)

    word_tokens = torch.randn(num_matrices, words, embedding_dim, generator=generator) + background
    word_tokens += (
        strength
        * word_has_concept.unsqueeze(-1)
        * concepts.gather(1, word_concept.unsqueeze(-1).expand(-1, -1, embedding_dim))
    )
    frame_tokens = torch.randn(num_matrices, frames, embedding_dim, generator=generator) + background
    frame_tokens += strength * torch.einsum("ncf,ncd->nfd", frame_in_run.float(), concepts)
    similarity = torch.einsum(
        "nwd,nfd->nwf",
        torch.nn.functional.normalize(word_tokens, dim=-1),
        torch.nn.functional.normalize(frame_tokens, dim=-1),
    )
    word_count = torch.randint(min_words, words + 1, (num_matrices, 1), generator=generator)
    frame_count = torch.randint(min_frames, frames + 1, (num_matrices, 1), generator=generator)
    return HBIBanzhafMatrices(
        similarity=similarity,
        text_mask=torch.arange(words) < word_count,
        video_mask=torch.arange(frames) < frame_count,
    )


@torch.no_grad()
def matrices_from_model(
    model: HBIModel | str | Path, dataset, batch_size: int = 16, level: int = 0
) -> HBIBanzhafMatrices:
    r"""
    The similarity matrices of matched pairs under a frozen HBI model, as the paper trains its estimator.

    Args:
        model ([`HBIModel`] or `str`): the model, or a folder / Hub id loadable with `AutoModel.from_pretrained`
            (an [`HBIModel`] or [`HBIForRetrieval`] checkpoint).
        dataset (`datasets.Dataset`): processed examples, text i describing video i, with the columns `input_ids`
            `(words,)`, `attention_mask` `(words,)`, `pixel_values` `(frames, 3, H, W)` and `video_mask` `(frames,)`
            (e.g. an `HBIProcessor` output saved per example).
        batch_size (`int`, *optional*, defaults to 16): examples encoded at once.
        level (`int`, *optional*, defaults to 0): hierarchy level (0 entity: words x frames).

    Returns:
        [`HBIBanzhafMatrices`] with the matched-pair similarities `model.matched_token_similarity(..., level)`, the
        level's masks and WTI weight logits.
    """
    missing = [column for column in MODEL_INPUT_COLUMNS if column not in dataset.column_names]
    if missing:
        raise ValueError(f"dataset lacks the columns {missing}; processed examples need {list(MODEL_INPUT_COLUMNS)}")
    if not isinstance(model, torch.nn.Module):
        model = AutoModel.from_pretrained(model)
    rows = dataset.with_format("torch", columns=list(MODEL_INPUT_COLUMNS))
    batches = (rows[start : start + batch_size] for start in range(0, len(rows), batch_size))
    return matrices_from_batches(model, batches, levels=(level,))[0]


@torch.no_grad()
def matrices_from_batches(
    model: torch.nn.Module, batches: Iterable[dict], levels: tuple[int, ...] = tuple(range(NUM_LEVELS))
) -> list[HBIBanzhafMatrices]:
    r"""
    The matched-pair similarity matrices of a model at several levels, each with that level's real shapes, masks and
    WTI weight logits: what the model's Banzhaf teacher sees in training.

    Args:
        model ([`HBIModel`], or a model holding one as `.hbi`): put in evaluation mode for the encoding and back in
            its previous mode afterwards.
        batches (iterable of `dict`): model inputs (`input_ids`, `attention_mask`, `pixel_values`, `video_mask`;
            a retrieval collator's output), text i describing video i.
        levels (`tuple[int]`, *optional*, defaults to all three): 0 entity, 1 action, 2 event.

    Returns:
        `list` of [`HBIBanzhafMatrices`] on the CPU, one per level in `levels`.
    """
    hbi = getattr(model, "hbi", model)
    if not isinstance(hbi, HBIModel):
        raise ValueError(f"expected an HBIModel (or a model holding one as .hbi); got {type(model).__name__}")
    was_training = hbi.training
    hbi.eval()
    parts: list[list[HBIBanzhafMatrices]] = [[] for _ in levels]
    device = next(hbi.parameters()).device
    for batch in batches:
        if not batch:  # a collator's batch whose every row was bad and skipped
            continue
        batch = {name: batch[name].to(device) for name in MODEL_INPUT_COLUMNS if batch.get(name) is not None}
        text = hbi.get_text_features(batch["input_ids"], batch.get("attention_mask"))
        video = hbi.get_video_features(batch["pixel_values"], batch.get("video_mask"))
        for part, level in zip(parts, levels):
            part.append(
                HBIBanzhafMatrices(
                    similarity=hbi.matched_token_similarity(text, video, level).float().cpu(),
                    text_mask=text.level_masks[level].cpu(),
                    video_mask=video.level_masks[level].cpu(),
                    text_weight_logits=text.level_weight_logits[level].float().cpu(),
                    video_weight_logits=video.level_weight_logits[level].float().cpu(),
                )
            )
    hbi.train(was_training)
    if not parts[0]:
        raise ValueError("no batch to encode")
    return [
        HBIBanzhafMatrices(
            **{
                field.name: torch.cat([getattr(item, field.name) for item in part])
                for field in fields(HBIBanzhafMatrices)
            }
        )
        for part in parts
    ]


def teacher_agreement(
    prediction: torch.Tensor, reference: torch.Tensor, text_mask: torch.Tensor, video_mask: torch.Tensor
) -> dict[str, float]:
    r"""
    How well a teacher's interactions match reference interactions (e.g. 1000-sample Monte-Carlo labels) as the
    targets of Eq. 8, on the valid cells.

    Returns:
        `dict` with `pearson` (over all valid cells pooled), `kl_over_frames` / `kl_over_words` (mean over words /
        frames of `KL(softmax(reference) || softmax(prediction))`, the distributions Eq. 8 builds), and the same two
        for a uniform teacher (`uniform_kl_over_frames`, `uniform_kl_over_words`): a teacher is informative where its
        KL is well below the uniform one's.
    """
    cell_mask = text_mask.bool().unsqueeze(-1) & video_mask.bool().unsqueeze(-2)
    prediction, reference = prediction.double(), reference.double()
    uniform = torch.zeros_like(reference)
    predicted, target = prediction[cell_mask].numpy(), reference[cell_mask].numpy()
    return {
        "pearson": float(np.corrcoef(predicted, target)[0, 1]),
        "kl_over_frames": _distribution_kl(reference, prediction, cell_mask, dim=-1).item(),
        "kl_over_words": _distribution_kl(reference, prediction, cell_mask, dim=-2).item(),
        "uniform_kl_over_frames": _distribution_kl(reference, uniform, cell_mask, dim=-1).item(),
        "uniform_kl_over_words": _distribution_kl(reference, uniform, cell_mask, dim=-2).item(),
    }


def banzhaf_labels(
    matrices: HBIBanzhafMatrices,
    num_samples: int | None = 100,
    logit_scale: float = 1000.0,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> torch.Tensor:
    r"""
    Banzhaf interactions of every matrix, the estimator's targets: Monte-Carlo estimates
    ([`sampled_banzhaf_interaction`], as the paper's labels) or, with `num_samples=None`, the exact values
    ([`closed_form_banzhaf_interaction`]; not cached, they take about a millisecond per matrix).

    With `cache_dir`, Monte-Carlo labels are stored in `cache_dir/banzhaf-labels-<key>.safetensors`, the key hashing the
    matrices (every tensor) and the sampler settings, and read back instead of recomputed on the next call.

    Args:
        matrices ([`HBIBanzhafMatrices`])
        num_samples (`int`, *optional*, defaults to 100): Monte-Carlo samples per pair (official labels: 100);
            `None`: the exact interactions.
        logit_scale (`float`, *optional*, defaults to 1000.0): scale of the similarities, hence of the labels
            (official: 1000; the teacher's outputs are the logits of the distributions of Eq. 8).
        seed (`int`, *optional*, defaults to 0): seed of the coalitions.
        cache_dir (`str` or `Path`, *optional*): where to cache the labels.

    Returns:
        `torch.FloatTensor` of shape `(num_matrices, words, frames)`, 0 on padded cells.
    """
    if num_samples is None:  # the closed form bounds its own working memory
        return closed_form_banzhaf_interaction(
            matrices.similarity,
            matrices.text_weight_logits,
            matrices.video_weight_logits,
            matrices.text_mask,
            matrices.video_mask,
            logit_scale=logit_scale,
        )
    settings = {"num_samples": num_samples, "logit_scale": logit_scale, "seed": seed, "batch": LABEL_BATCH_SIZE}
    cache_file = None
    if cache_dir is not None:
        key = hashlib.sha256((matrices.fingerprint() + json.dumps(settings, sort_keys=True)).encode()).hexdigest()
        cache_file = Path(cache_dir) / f"banzhaf-labels-{key[:24]}.safetensors"
        if cache_file.exists():
            logger.info("Banzhaf labels read from the cache %s", cache_file)
            return load_file(str(cache_file))["labels"]
    generator = torch.Generator().manual_seed(seed)
    labels = []
    for start in range(0, len(matrices), LABEL_BATCH_SIZE):
        part = matrices[start : start + LABEL_BATCH_SIZE]
        labels.append(
            sampled_banzhaf_interaction(
                part.similarity,
                num_samples,
                part.text_weight_logits,
                part.video_weight_logits,
                part.text_mask,
                part.video_mask,
                logit_scale=logit_scale,
                generator=generator,
            )
        )
    labels = torch.cat(labels)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        save_file({"labels": labels.contiguous()}, str(cache_file), metadata={k: str(v) for k, v in settings.items()})
        logger.info("Banzhaf labels cached in %s", cache_file)
    return labels


class HBIBanzhafLabelledMatrices(torch.utils.data.Dataset):
    """Matrices and their labels as examples for [`HBIBanzhafEstimator`]: `similarity`, `text_mask`, `video_mask`,
    `labels`."""

    def __init__(self, matrices: HBIBanzhafMatrices, labels: torch.Tensor):
        if labels.shape != matrices.similarity.shape:
            raise ValueError(f"labels must be {tuple(matrices.similarity.shape)}; got {tuple(labels.shape)}")
        self.matrices, self.labels = matrices, labels

    def __len__(self) -> int:
        return len(self.matrices)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {
            "similarity": self.matrices.similarity[index],
            "text_mask": self.matrices.text_mask[index],
            "video_mask": self.matrices.video_mask[index],
            "labels": self.labels[index],
        }


@torch.no_grad()
def evaluate_estimator(
    estimator: HBIBanzhafEstimator, matrices: HBIBanzhafMatrices, labels: torch.Tensor, batch_size: int = 128
) -> dict[str, float]:
    r"""
    Agreement of the estimator with labels on the valid cells.

    Returns:
        `dict` with `mse`, `pearson` and `spearman` over all valid cells pooled, and `pearson_per_matrix`, the mean
        over matrices of the Pearson correlation within a matrix (what the row / column softmaxes of Eq. 8 see).
    """
    estimator.eval()
    device = estimator.device
    predictions = []
    for start in range(0, len(matrices), batch_size):
        part = matrices[start : start + batch_size]
        predictions.append(
            estimator(part.similarity.to(device), part.text_mask.to(device), part.video_mask.to(device))
            .interaction.float()
            .cpu()
        )
    prediction = torch.cat(predictions)
    cell_mask = matrices.text_mask.unsqueeze(-1) & matrices.video_mask.unsqueeze(-2)
    predicted, target = prediction[cell_mask], labels[cell_mask].float()
    per_matrix = [
        np.corrcoef(prediction[i][cell_mask[i]].numpy(), labels[i][cell_mask[i]].float().numpy())[0, 1]
        for i in range(len(matrices))
        if cell_mask[i].sum() > 1
    ]
    return {
        "mse": torch.mean((predicted - target) ** 2).item(),
        "pearson": float(np.corrcoef(predicted.numpy(), target.numpy())[0, 1]),
        "spearman": float(spearmanr(predicted.numpy(), target.numpy()).statistic),
        "pearson_per_matrix": float(np.nanmean(per_matrix)),
    }


def fit_estimator_normalisation(matrices: HBIBanzhafMatrices, labels: torch.Tensor) -> dict[str, float]:
    r"""
    The normalisation fields of [`HBIBanzhafEstimatorConfig`] for training matrices and their labels.

    * `input_mean`, `input_std`: mean and standard deviation of the similarities over the valid cells.
    * `word_count_exponent`, `frame_count_exponent`: least-squares fit of
      `log RMS(labels of a matrix) = c - a * log(valid_words) - b * log(valid_frames)` over the matrices (interactions
      shrink as the game grows); 0 for a count that does not vary.
    * `output_scale`: RMS over the valid cells of the labels divided by `valid_words ** -a * valid_frames ** -b`, so
      the network's targets have unit RMS.

    Returns:
        `dict` of the five fields (`hbi_hf.configuration_hbi.ESTIMATOR_NORMALISATION_FIELDS`).
    """
    cell_mask = matrices.text_mask.unsqueeze(-1) & matrices.video_mask.unsqueeze(-2)
    labels = labels.double()
    cells = cell_mask.flatten(1).sum(-1)
    usable = cells > 0
    if not usable.any():
        raise ValueError("no matrix has a valid cell: cannot fit the estimator normalisation")
    similarity = matrices.similarity[cell_mask].double()
    valid_words = matrices.text_mask.sum(-1)[usable].double()
    valid_frames = matrices.video_mask.sum(-1)[usable].double()
    square_sums = (labels.pow(2) * cell_mask).flatten(1).sum(-1)[usable]
    log_rms = (square_sums / cells[usable]).clamp(min=1e-30).sqrt().log()
    columns = [torch.ones_like(log_rms)]
    varying = [counts.unique().numel() > 1 for counts in (valid_words, valid_frames)]
    columns += [counts.log() for counts, varies in zip((valid_words, valid_frames), varying) if varies]
    solution = torch.linalg.lstsq(torch.stack(columns, 1), log_rms.unsqueeze(1)).solution.squeeze(1).tolist()
    slopes = iter(solution[1:])
    word_exponent, frame_exponent = (-next(slopes) if varies else 0.0 for varies in varying)
    factor = matrices.text_mask.sum(-1).clamp(min=1).double().pow(-word_exponent) * matrices.video_mask.sum(-1).clamp(
        min=1
    ).double().pow(-frame_exponent)
    scaled = (labels / factor.view(-1, 1, 1))[cell_mask]
    return {
        "input_mean": similarity.mean().item(),
        "input_std": similarity.std().item() if similarity.numel() > 1 else 1.0,
        "output_scale": scaled.pow(2).mean().sqrt().clamp(min=1e-12).item(),
        "word_count_exponent": word_exponent,
        "frame_count_exponent": frame_exponent,
    }


def train_estimator(
    train_matrices: HBIBanzhafMatrices,
    train_labels: torch.Tensor,
    training_args: TrainingArguments,
    eval_matrices: HBIBanzhafMatrices | None = None,
    eval_labels: torch.Tensor | None = None,
    config: HBIBanzhafEstimatorConfig | None = None,
    normalise: bool = True,
) -> tuple[HBIBanzhafEstimator, dict[str, float]]:
    r"""
    Train an [`HBIBanzhafEstimator`] with MSE on the labels through the `Trainer`, save it to
    `training_args.output_dir` (loadable with `AutoModel.from_pretrained`), and measure it on the held-out matrices.

    With `normalise` (the default) the normalisation fields of the config are first fitted to the training data
    ([`fit_estimator_normalisation`]): the network then sees standardised similarities and learns unit-scale targets
    with the game-size dependence divided out, and the saved estimator still outputs interactions in label units.

    Returns:
        The trained estimator and its held-out metrics ([`evaluate_estimator`], prefixed `eval_`; empty without
        held-out matrices).
    """
    config = copy.deepcopy(config) if config is not None else HBIBanzhafEstimatorConfig()
    config.is_trained = True
    if normalise:
        fitted = fit_estimator_normalisation(train_matrices, train_labels)
        logger.info("estimator normalisation fitted on the training data: %s", fitted)
        for name, value in fitted.items():
            setattr(config, name, value)
    estimator = HBIBanzhafEstimator(config)
    eval_dataset = None
    if eval_matrices is not None:
        eval_dataset = HBIBanzhafLabelledMatrices(eval_matrices, eval_labels)
    trainer = Trainer(
        model=estimator,
        args=training_args,
        train_dataset=HBIBanzhafLabelledMatrices(train_matrices, train_labels),
        eval_dataset=eval_dataset,
    )
    trainer.train()
    trainer.save_model(training_args.output_dir)
    metrics = {}
    if eval_matrices is not None:
        metrics = {f"eval_{k}": v for k, v in evaluate_estimator(estimator, eval_matrices, eval_labels).items()}
    return estimator, metrics


def pad_matrices(parts: list[HBIBanzhafMatrices]) -> HBIBanzhafMatrices:
    """Concatenate matrices of different shapes (e.g. the three levels of a model) into one set, padding each to the
    largest `(words, frames)` with invalid players (mask False, similarity 0, weight logit 0)."""
    words = max(part.similarity.shape[1] for part in parts)
    frames = max(part.similarity.shape[2] for part in parts)

    def pad(tensor: torch.Tensor | None, size: tuple[int, ...]) -> torch.Tensor | None:
        if tensor is None:
            return None
        widths = []
        for have, want in zip(reversed(tensor.shape[1:]), reversed(size)):
            widths += [0, want - have]
        return torch.nn.functional.pad(tensor, widths)

    padded = [
        HBIBanzhafMatrices(
            similarity=pad(part.similarity, (words, frames)),
            text_mask=pad(part.text_mask, (words,)),
            video_mask=pad(part.video_mask, (frames,)),
            text_weight_logits=pad(part.text_weight_logits, (words,)),
            video_weight_logits=pad(part.video_weight_logits, (frames,)),
        )
        for part in parts
    ]
    return HBIBanzhafMatrices(
        **{
            field.name: None
            if getattr(padded[0], field.name) is None
            else torch.cat([getattr(part, field.name) for part in padded])
            for field in fields(HBIBanzhafMatrices)
        }
    )


@torch.no_grad()
def estimator_agreement(
    estimator: HBIBanzhafEstimator,
    level_matrices: list[HBIBanzhafMatrices],
    game_scale: float,
    num_samples: int | None = None,
    seed: int = 1,
) -> dict[str, float]:
    r"""
    Agreement of an estimator with the Banzhaf interactions of a model's own matrices (exact by default), level by
    level ([`teacher_agreement`]).

    Args:
        estimator ([`HBIBanzhafEstimator`])
        level_matrices (`list` of [`HBIBanzhafMatrices`]): a model's matched-pair matrices per level
            ([`matrices_from_batches`]).
        game_scale (`float`): the model's `banzhaf_game_scale`.
        num_samples (`int`, *optional*): Monte-Carlo samples of the reference labels; `None` (default): the exact
            interactions.
        seed (`int`, *optional*, defaults to 1): seed of Monte-Carlo reference labels.

    Returns:
        `dict` with `level{l}_pearson`, `level{l}_kl_over_frames`, ... for every level.
    """
    estimator.eval()
    device = estimator.device
    metrics = {}
    for level, matrices in enumerate(level_matrices):
        reference = banzhaf_labels(matrices, num_samples=num_samples, logit_scale=game_scale, seed=seed)
        prediction = estimator(
            matrices.similarity.to(device), matrices.text_mask.to(device), matrices.video_mask.to(device)
        ).interaction.float()
        agreement = teacher_agreement(prediction.cpu(), reference, matrices.text_mask, matrices.video_mask)
        metrics.update({f"level{level}_{name}": value for name, value in agreement.items()})
    return metrics


def fit_estimator_to_model(
    model: torch.nn.Module,
    train_batches: Iterable[dict],
    eval_batches: Iterable[dict],
    output_dir: str | Path,
    num_samples: int | None = 100,
    eval_num_samples: int | None = None,
    config: HBIBanzhafEstimatorConfig | None = None,
    training_args: TrainingArguments | None = None,
) -> tuple[HBIBanzhafEstimator, dict[str, float]]:
    r"""
    The paper's recipe for the teacher, on the model it will teach: the model's matched-pair matrices at every level
    (each with its real shapes, masks and WTI weight logits), Monte-Carlo labels at the model's game scale, one
    estimator trained on all levels with MSE ([`train_estimator`]) and saved to `output_dir` (marked trained), and
    its agreement with the exact interactions (or `eval_num_samples`-sample labels) on the held-out pairs, level by level
    ([`estimator_agreement`]).

    Args:
        model ([`HBIForRetrieval`] or another HBI model with `.hbi`): the model to teach (not changed).
        train_batches, eval_batches (iterables of `dict`): model inputs of training and held-out matched pairs.
        output_dir (`str` or `Path`): where the estimator is saved.
        num_samples (`int`, *optional*, defaults to 100): Monte-Carlo samples of the training labels (official);
            `None`: train on the exact interactions.
        eval_num_samples (`int`, *optional*): Monte-Carlo samples of the held-out reference; `None` (default):
            the exact interactions.
        config ([`HBIBanzhafEstimatorConfig`], *optional*): the architecture; defaults to the model's
            `estimator_config` architecture (the teacher slot it must load into).
        training_args (`TrainingArguments`, *optional*): defaults to 20 epochs at learning rate 1e-2 (cosine),
            batch 64, on the model's device, no checkpoints.

    Returns:
        The trained estimator and the held-out agreement (`level{l}_pearson`, ...).
    """
    game_scale = model.config.banzhaf_game_scale
    train_levels = matrices_from_batches(model, train_batches)
    eval_levels = matrices_from_batches(model, eval_batches)
    labels = [banzhaf_labels(m, num_samples=num_samples, logit_scale=game_scale, seed=0) for m in train_levels]
    train_matrices = pad_matrices(train_levels)
    words, frames = train_matrices.similarity.shape[1:]
    train_labels = torch.cat(
        [torch.nn.functional.pad(label, (0, frames - label.shape[2], 0, words - label.shape[1])) for label in labels]
    )
    if training_args is None:
        training_args = TrainingArguments(
            output_dir=str(output_dir),
            use_cpu=next(model.parameters()).device.type == "cpu",
            report_to="none",
            remove_unused_columns=False,
            save_strategy="no",
            learning_rate=1e-2,
            lr_scheduler_type="cosine",
            per_device_train_batch_size=64,
            num_train_epochs=20,
            disable_tqdm=True,
        )
    if config is None:
        architecture = model.config.estimator_config
        config = HBIBanzhafEstimatorConfig(
            **{name: getattr(architecture, name) for name in (*ESTIMATOR_ARCHITECTURE_FIELDS, "initializer_gain")}
        )
    estimator, _ = train_estimator(train_matrices, train_labels, training_args, config=config)
    estimator.save_pretrained(output_dir)
    metrics = estimator_agreement(estimator, eval_levels, game_scale, eval_num_samples)
    logger.info("Banzhaf estimator fitted to the model and saved to %s; held-out agreement: %s", output_dir, metrics)
    return estimator, metrics


class HBIEstimatorAgreementCallback(TrainerCallback):
    r"""
    At every evaluation, measures the model's estimator teacher again on fresh matched-pair matrices of the current
    model ([`estimator_agreement`] on `eval_batches()`), adds the figures to the evaluation metrics as
    `estimator_level{l}_pearson`, ... and logs them; with `refit_below`, calls `refit(model)` when the lowest
    level's Pearson falls below it.

    Args:
        eval_batches (`Callable[[], Iterable[dict]]`): fresh held-out model inputs at each call.
        refit (`Callable[[torch.nn.Module], None]`, *optional*): re-fits and reloads the teacher.
        refit_below (`float`, *optional*): Pearson under which `refit` runs.
        num_samples (`int`, *optional*): Monte-Carlo samples of the reference; `None` (default): the exact
            interactions.
    """

    def __init__(self, eval_batches, refit=None, refit_below: float | None = None, num_samples: int | None = None):
        if refit_below is not None and refit is None:
            raise ValueError("refit_below needs a refit function")
        self.eval_batches, self.refit, self.refit_below, self.num_samples = (
            eval_batches,
            refit,
            refit_below,
            num_samples,
        )

    def on_evaluate(self, args, state, control, model=None, metrics=None, **kwargs):
        if model is None or not hasattr(model, "alignment") or model.config.banzhaf_teacher != "estimator":
            return
        levels = matrices_from_batches(model, self.eval_batches())
        agreement = estimator_agreement(
            model.alignment.banzhaf_teacher, levels, model.config.banzhaf_game_scale, self.num_samples
        )
        agreement = {f"estimator_{name}": value for name, value in agreement.items()}
        logger.info("Banzhaf estimator agreement with the current model's matrices: %s", agreement)
        if metrics is not None:
            metrics.update(agreement)
        state.log_history.append({**agreement, "step": state.global_step})
        lowest = min(value for name, value in agreement.items() if name.endswith("_pearson"))
        if self.refit_below is not None and lowest < self.refit_below:
            logger.warning(
                "Banzhaf estimator Pearson %.3f < refit_below %.3f: re-fitting it to the current model",
                lowest,
                self.refit_below,
            )
            self.refit(model)


def fit_estimator_for_training(
    model: torch.nn.Module,
    train_dataset,
    eval_dataset,
    collator,
    output_dir: str | Path,
    num_pairs: int = 1024,
    batch_size: int = 32,
    refit_below: float | None = None,
) -> HBIEstimatorAgreementCallback:
    r"""
    What `--fit_estimator` does in the training scripts: fit an estimator to `model` ([`fit_estimator_to_model`] on
    the first `num_pairs` training rows, held-out agreement on up to 256 rows of `eval_dataset`), save it to
    `output_dir/banzhaf_estimator`, load it as the model's teacher, and return the callback that re-measures (and
    with `refit_below` re-fits) it at every evaluation on fresh matrices of the current model.

    Args:
        model: the HBI task model (with `.alignment`).
        train_dataset, eval_dataset (`datasets.Dataset`): rows that `collator` turns into model inputs.
        collator: the task's data collator.
        output_dir (`str` or `Path`): the run's output folder.
        num_pairs (`int`, *optional*, defaults to 1024): training rows whose matrices train the estimator.
        batch_size (`int`, *optional*, defaults to 32): rows encoded at once.
        refit_below (`float`, *optional*): see [`HBIEstimatorAgreementCallback`].
    """
    directory = Path(output_dir) / "banzhaf_estimator"
    eval_rows = min(256, len(eval_dataset))

    def batches(dataset, count: int):
        return (
            collator([dataset[i] for i in range(start, min(start + batch_size, count))])
            for start in range(0, count, batch_size)
        )

    def fit(target: torch.nn.Module) -> None:
        _, metrics = fit_estimator_to_model(
            target,
            batches(train_dataset, min(num_pairs, len(train_dataset))),
            batches(eval_dataset, eval_rows),
            directory,
        )
        logger.warning("Banzhaf estimator fitted to the model (%s); held-out agreement: %s", directory, metrics)
        target.load_banzhaf_teacher(str(directory))

    fit(model)
    return HBIEstimatorAgreementCallback(lambda: batches(eval_dataset, eval_rows), fit, refit_below)


__all__ = [
    "HBIEstimatorAgreementCallback",
    "HBIBanzhafLabelledMatrices",
    "HBIBanzhafMatrices",
    "banzhaf_labels",
    "estimator_agreement",
    "evaluate_estimator",
    "fit_estimator_for_training",
    "fit_estimator_to_model",
    "fit_estimator_normalisation",
    "matrices_from_batches",
    "matrices_from_model",
    "pad_matrices",
    "synthetic_similarity_matrices",
    "teacher_agreement",
    "train_estimator",
]
