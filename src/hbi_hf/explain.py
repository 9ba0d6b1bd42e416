"""Explain one video-caption match: the word x frame Banzhaf interaction at the three HBI levels, as a figure.

The interaction of a word (or phrase, paragraph) with a frame (or clip, segment) is the Banzhaf interaction index of
the pair in the game whose characteristic function is the similarity of Eq. 12 (spec §2), played at the model's
`banzhaf_game_scale`: large when the two tokens add to the match together more than separately. It follows the same
teacher rules as training: a trained estimator (given, or the model's own teacher when it trained with one), never a
never-trained one; otherwise the Monte-Carlo estimate of `hbi_hf.banzhaf` (`DEFAULT_EXPLAIN_SAMPLES` coalitions per
pair unless `exact_samples` is given), replaced by exact enumeration for levels of at most `EXACT_EXPLAIN_PLAYERS`
players.
"""

import os
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure
from transformers.utils import logging

from .configuration_hbi import NUM_LEVELS
from .modeling_hbi import LEVEL_NAMES, HBIBanzhafEstimator, HBIModel, HBITextFeatures, HBIVideoFeatures
from .search_index import decode_video, encode_text, encode_video_batch, load_hbi_model, load_processor

logger = logging.get_logger(__name__)

DEFAULT_EXPLAIN_SAMPLES = 1000
"""Monte-Carlo coalitions per pair when no trained estimator explains (the reference of docs/banzhaf.md)."""
EXACT_EXPLAIN_PLAYERS = 16
"""Levels with at most this many words + frames are enumerated exactly instead of sampled."""
TEXT_TOKEN_NAMES = ("word", "phrase", "paragraph")
VIDEO_TOKEN_NAMES = ("frame", "clip", "segment")


@dataclass
class HBILevelExplanation:
    r"""
    The interaction at one level, restricted to the valid tokens.

    Args:
        interaction (`np.ndarray` of shape `(text_tokens, video_tokens)`): Banzhaf interaction of each pair.
        text_groups (`list[list[int]]`): for each text token of the level, the words (entity-level indices) it merges.
        video_groups (`list[list[int]]`): for each video token of the level, the frames it merges.
    """

    interaction: np.ndarray
    text_groups: list[list[int]]
    video_groups: list[list[int]]


@dataclass
class HBIExplanation:
    r"""
    Args:
        caption (`str`), video (`str`)
        words (`list[str]`): the caption's tokens, decoded.
        frames (`np.ndarray` of shape `(frames, H, W, 3)`): the frames the model saw, rescaled to [0, 1] for display.
        levels (`list[HBILevelExplanation]`): entity, action and event levels.
        source (`str`): how the interaction was obtained.
        units (`str`): what the values measure (the colour bars' label).
    """

    caption: str
    video: str
    words: list[str]
    frames: np.ndarray
    levels: list[HBILevelExplanation]
    source: str
    units: str = "Banzhaf interaction"


def _monte_carlo_interaction(
    similarity: torch.Tensor,
    text_weight_logits: torch.Tensor,
    video_weight_logits: torch.Tensor,
    text_mask: torch.Tensor,
    video_mask: torch.Tensor,
    num_samples: int,
    seed: int,
    game_scale: float = 1.0,
) -> torch.Tensor:
    """Banzhaf interaction `(batch, words, frames)` of the similarity game at `game_scale` (from `hbi_hf.banzhaf`):
    exact enumeration for games of at most `EXACT_EXPLAIN_PLAYERS` players, else `num_samples` sampled coalitions."""
    from .banzhaf import exact_banzhaf_interaction, sampled_banzhaf_interaction

    game = dict(
        text_weight_logits=text_weight_logits,
        video_weight_logits=video_weight_logits,
        text_mask=text_mask,
        video_mask=video_mask,
        logit_scale=game_scale,
    )
    if sum(similarity.shape[1:]) <= EXACT_EXPLAIN_PLAYERS:
        return exact_banzhaf_interaction(similarity, **game)
    generator = torch.Generator(device=similarity.device).manual_seed(seed)
    return sampled_banzhaf_interaction(similarity, num_samples, generator=generator, **game)


def _members(assignments: list[torch.Tensor], level: int, num_tokens: int) -> list[list[int]]:
    """For each token of `level`, the entity-level indices merged into it; `assignments` as in the features."""
    if level == 0:
        return [[i] for i in range(num_tokens)]
    owner = assignments[0]
    for step in range(1, level):
        owner = torch.where(owner >= 0, assignments[step][owner.clamp_min(0)], owner)
    return [torch.nonzero(owner == k).flatten().tolist() for k in range(num_tokens)]


def _display_frames(pixel_values: torch.Tensor) -> np.ndarray:
    """`(frames, 3, H, W)` normalised pixels -> `(frames, H, W, 3)` in [0, 1], each frame min-max rescaled."""
    frames = pixel_values.float()
    low = frames.amin(dim=(1, 2, 3), keepdim=True)
    high = frames.amax(dim=(1, 2, 3), keepdim=True)
    return ((frames - low) / (high - low).clamp_min(1e-6)).permute(0, 2, 3, 1).numpy()


def _word_labels(tokenizer, input_ids: torch.Tensor) -> list[str]:
    return [token.replace("</w>", "") for token in tokenizer.convert_ids_to_tokens(input_ids.tolist())]


@torch.no_grad()
def explain_features(
    model: HBIModel,
    text_features: HBITextFeatures,
    video_features: HBIVideoFeatures,
    estimator: HBIBanzhafEstimator | None = None,
    exact_samples: int = 0,
    seed: int = 0,
) -> list[HBILevelExplanation]:
    r"""
    Banzhaf interaction of one matched text and video (batch 1 each) at every level, restricted to valid tokens.

    Args:
        estimator ([`HBIBanzhafEstimator`], *optional*): maps token similarities to interactions.
        exact_samples (`int`, *optional*, defaults to 0): if positive, use the Monte-Carlo estimate with this many
            coalitions per pair instead of the estimator (exact enumeration for small levels), at the model's
            `banzhaf_game_scale`.
        seed (`int`): seed of the Monte-Carlo coalitions.
    """
    if exact_samples <= 0 and estimator is None:
        raise ValueError("no Banzhaf estimator: pass an estimator (e.g. --estimator PATH) or exact_samples > 0")
    levels = []
    for level in range(NUM_LEVELS):
        similarity = model.matched_token_similarity(text_features, video_features, level)
        text_mask, video_mask = text_features.level_masks[level], video_features.level_masks[level]
        if exact_samples > 0:
            interaction = _monte_carlo_interaction(
                similarity,
                text_features.level_weight_logits[level],
                video_features.level_weight_logits[level],
                text_mask,
                video_mask,
                exact_samples,
                seed,
                model.config.banzhaf_game_scale,
            )
        else:
            interaction = estimator(similarity, text_mask, video_mask).interaction
        text_valid, video_valid = text_mask[0].cpu(), video_mask[0].cpu()
        text_groups = _members([a[0].cpu() for a in text_features.cluster_assignments], level, len(text_valid))
        video_groups = _members([a[0].cpu() for a in video_features.cluster_assignments], level, len(video_valid))
        levels.append(
            HBILevelExplanation(
                interaction=interaction[0].float().cpu()[text_valid][:, video_valid].numpy(),
                text_groups=[group for group, valid in zip(text_groups, text_valid) if valid],
                video_groups=[group for group, valid in zip(video_groups, video_valid) if valid],
            )
        )
    return levels


def explain_video(
    video: str | os.PathLike,
    caption: str,
    model_name_or_path: str | os.PathLike,
    estimator_name_or_path: str | os.PathLike | None = None,
    exact_samples: int = 0,
    seed: int = 0,
) -> HBIExplanation:
    """Load the model, encode `video` and `caption`, and compute their interactions at every level (see
    [`explain_features`]). The estimator is `estimator_name_or_path` if given, else the model's Banzhaf teacher if
    the model trained with a trained one; otherwise (or with `exact_samples` > 0) the Monte-Carlo estimate with
    `exact_samples` or `DEFAULT_EXPLAIN_SAMPLES` coalitions per pair.

    Raises:
        `ValueError`: `estimator_name_or_path` is an estimator that was never trained."""
    model, teacher = load_hbi_model(model_name_or_path)
    processor = load_processor(model_name_or_path)
    if estimator_name_or_path is not None:
        teacher = HBIBanzhafEstimator.from_pretrained(estimator_name_or_path).eval()
        if not teacher.config.is_trained:
            raise ValueError(
                f"the estimator {estimator_name_or_path} was never trained (is_trained is false in its config.json): "
                "its interactions would be random. Give a trained one (scripts/train_estimator.py) or leave out "
                "--estimator to use Monte-Carlo interactions"
            )
    elif teacher is not None and not (model.config.banzhaf_teacher == "estimator" and teacher.config.is_trained):
        teacher = None
    if teacher is None and exact_samples <= 0:
        exact_samples = DEFAULT_EXPLAIN_SAMPLES
    pixel_values, video_mask = decode_video(processor, video)
    video_features = encode_video_batch(model, pixel_values[None], video_mask[None])
    text_features, input_ids = encode_text(model, processor, caption)
    text_features = text_features.map(lambda tensor: tensor.cpu())
    levels = explain_features(model, text_features, video_features, teacher, exact_samples, seed)
    words = _word_labels(processor.tokenizer, input_ids[0].cpu()[text_features.level_masks[0][0]])
    return HBIExplanation(
        caption=caption,
        video=str(video),
        words=words,
        frames=_display_frames(pixel_values[video_mask.bool()]),
        levels=levels,
        source=f"Monte-Carlo, {exact_samples} samples; exact for small levels"
        if exact_samples > 0
        else "trained Banzhaf estimator",
        units=f"Banzhaf interaction (similarity x {model.config.banzhaf_game_scale:g})",
    )


def _group_label(names: list[str], group: list[int], limit: int = 4) -> str:
    shown = [names[i] for i in group[:limit]]
    return " ".join(shown) + (" …" if len(group) > limit else "")


def plot_explanation(explanation: HBIExplanation, out: str | os.PathLike, dpi: int = 120) -> str:
    """
    Draw the frames (with their clip and segment) above one heatmap per level (text tokens x video tokens, each
    labelled by the words or frames it merges) and save the figure to `out`. Returns the path written.
    """
    frames = explanation.frames
    num_frames = len(frames)
    frame_names = [f"f{i + 1}" for i in range(num_frames)]
    video_cluster_of = [
        {i: k + 1 for k, group in enumerate(level.video_groups) for i in group} for level in explanation.levels
    ]
    heights = [1.2] + [0.35 * len(level.interaction) + 1.2 for level in explanation.levels]
    figure = Figure(figsize=(max(6.0, 0.9 * num_frames + 3.0), sum(heights) + 1.0))
    grid = figure.add_gridspec(1 + NUM_LEVELS, 1, height_ratios=heights, hspace=0.6)
    strip = grid[0].subgridspec(1, num_frames, wspace=0.05)
    for i in range(num_frames):
        axis = figure.add_subplot(strip[0, i])
        axis.imshow(frames[i])
        axis.set_axis_off()
        clusters = f"c{video_cluster_of[1].get(i, '-')} s{video_cluster_of[2].get(i, '-')}"
        axis.set_title(f"{frame_names[i]}\n{clusters}", fontsize=7)
    for level, explanation_level in enumerate(explanation.levels, start=0):
        axis = figure.add_subplot(grid[1 + level])
        values = explanation_level.interaction
        bound = float(np.abs(values).max()) or 1.0
        image = axis.imshow(values, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
        axis.set_yticks(range(len(values)))
        axis.set_yticklabels([_group_label(explanation.words, g) for g in explanation_level.text_groups], fontsize=7)
        axis.set_xticks(range(values.shape[1]))
        axis.set_xticklabels([",".join(frame_names[i] for i in g) for g in explanation_level.video_groups], fontsize=7)
        axis.set_title(
            f"{LEVEL_NAMES[level]} level: {TEXT_TOKEN_NAMES[level]}s x {VIDEO_TOKEN_NAMES[level]}s", fontsize=9
        )
        figure.colorbar(image, ax=axis, fraction=0.03, pad=0.01).set_label(explanation.units, fontsize=7)
    figure.suptitle(f'"{explanation.caption}" — Banzhaf interaction ({explanation.source})', fontsize=10)
    out = str(out)
    figure.savefig(out, dpi=dpi, bbox_inches="tight")
    return out


__all__ = ["HBIExplanation", "HBILevelExplanation", "explain_features", "explain_video", "plot_explanation"]
