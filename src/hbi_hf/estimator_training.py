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
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from scipy.stats import spearmanr
from transformers import AutoModel, Trainer, TrainingArguments
from transformers.utils import logging

from .banzhaf import sampled_banzhaf_interaction
from .configuration_hbi import HBIBanzhafEstimatorConfig
from .modeling_hbi import HBIBanzhafEstimator, HBIModel

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
    hbi = getattr(model, "hbi", model)
    if not isinstance(hbi, HBIModel):
        raise ValueError(f"expected an HBIModel (or a model holding one as .hbi); got {type(model).__name__}")
    hbi.eval()
    rows = dataset.with_format("torch", columns=list(MODEL_INPUT_COLUMNS))
    parts = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        text = hbi.get_text_features(batch["input_ids"], batch["attention_mask"])
        video = hbi.get_video_features(batch["pixel_values"], batch["video_mask"])
        parts.append(
            HBIBanzhafMatrices(
                similarity=hbi.matched_token_similarity(text, video, level),
                text_mask=text.level_masks[level],
                video_mask=video.level_masks[level],
                text_weight_logits=text.level_weight_logits[level],
                video_weight_logits=video.level_weight_logits[level],
            )
        )
    return HBIBanzhafMatrices(
        **{
            field.name: torch.cat([getattr(part, field.name) for part in parts])
            for field in fields(HBIBanzhafMatrices)
        }
    )


def banzhaf_labels(
    matrices: HBIBanzhafMatrices,
    num_samples: int = 100,
    logit_scale: float = 1000.0,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> torch.Tensor:
    r"""
    Monte-Carlo Banzhaf interactions of every matrix ([`sampled_banzhaf_interaction`]), the estimator's targets.

    With `cache_dir`, the labels are stored in `cache_dir/banzhaf-labels-<key>.safetensors`, the key hashing the
    matrices (every tensor) and the sampler settings, and read back instead of recomputed on the next call.

    Args:
        matrices ([`HBIBanzhafMatrices`])
        num_samples (`int`, *optional*, defaults to 100): Monte-Carlo samples per pair (official labels: 100).
        logit_scale (`float`, *optional*, defaults to 1000.0): scale of the similarities, hence of the labels
            (official: 1000; the teacher's outputs are the logits of the distributions of Eq. 8).
        seed (`int`, *optional*, defaults to 0): seed of the coalitions.
        cache_dir (`str` or `Path`, *optional*): where to cache the labels.

    Returns:
        `torch.FloatTensor` of shape `(num_matrices, words, frames)`, 0 on padded cells.
    """
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


__all__ = [
    "HBIBanzhafLabelledMatrices",
    "HBIBanzhafMatrices",
    "banzhaf_labels",
    "evaluate_estimator",
    "fit_estimator_normalisation",
    "matrices_from_model",
    "synthetic_similarity_matrices",
    "train_estimator",
]
