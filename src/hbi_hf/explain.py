"""Explain one video-caption match: the word x frame Banzhaf interaction at the three HBI levels, as a figure.

The interaction of a word (or phrase, paragraph) with a frame (or clip, segment) is the Banzhaf interaction index of
the pair in the game whose characteristic function is the similarity of Eq. 12 (spec §2), played at the model's
`banzhaf_game_scale` s: large when the two tokens add to the match together more than separately, in units of
cosine similarity x s. It follows the teacher rules of training (`banzhaf_teacher` of [`HBIConfig`]):

* `"exact"` (the default, the reference): the exact interactions of the game at every level
  ([`~hbi_hf.banzhaf.closed_form_banzhaf_interaction`]);
* `"monte_carlo"`: the unbiased Monte-Carlo estimate ([`~hbi_hf.banzhaf.sampled_banzhaf_interaction`],
  `DEFAULT_EXPLAIN_SAMPLES` coalitions per pair unless told otherwise);
* `"estimator"`: a trained [`HBIBanzhafEstimator`] (given, or the model's own teacher when it trained with one); a
  never-trained estimator is refused.

The game is the model's: every valid token, the start and end tokens included, is a player. The figure leaves the
special tokens out, joins CLIP's BPE pieces into words (a word's row is the sum of its pieces' rows) and labels frames
with their time in the video.
"""

import functools
import math
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib import colors as mcolors
from matplotlib.figure import Figure
from transformers.utils import logging

from .configuration_hbi import NUM_LEVELS
from .errors import HBIInputError
from .modeling_hbi import LEVEL_NAMES, HBIBanzhafEstimator, HBIModel, HBITextFeatures, HBIVideoFeatures
from .search_index import (
    encode_text,
    encode_video_batch,
    load_hbi_model,
    load_processor,
    resolve_model_folder,
    text_token_count,
)

logger = logging.get_logger(__name__)

EXPLAIN_TEACHERS = ("exact", "monte_carlo", "estimator")
"""Where explained interactions come from (the `banzhaf_teacher` choices of training that have interactions)."""
DEFAULT_EXPLAIN_SAMPLES = 1000
"""Monte-Carlo coalitions per pair of `teacher="monte_carlo"` (the 1000-sample labels of docs/banzhaf.md)."""
"""Levels with at most this many words + frames (special tokens included) are enumerated exactly instead."""
TEXT_TOKEN_NAMES = ("word", "phrase", "paragraph")
VIDEO_TOKEN_NAMES = ("frame", "clip", "segment")
MAX_TICK_LABELS = 64
"""Axes with more tokens than this label every k-th one only (the figure keeps growing with the counts, up to 4x this
many rows / columns and 40 inches wide)."""
MAX_THUMBNAILS = 16
"""The frame strip shows at most this many frames, evenly spread (each with its time)."""
MAX_ANNOTATED_CELLS = 150
"""A heatmap with at most this many cells prints each cell's value in it."""
MAX_TITLE_CHARACTERS = 110
"""The caption in the figure's title is wrapped at this many characters a line (fewer in a narrow figure) ..."""
MAX_TITLE_LINES = 3
"""... on at most this many lines; the rest is elided, and the title says how many words were left out."""
MAX_LABEL_CHARACTERS = 28
"""A row or column label longer than this is cut, ending in '…'."""
REPLACEMENT_CHARACTER = "\ufffd"
"""Drawn in place of a character that no installed font has a glyph for (an emoji without a colour-emoji font that
matplotlib can draw, a script without its font): matplotlib would draw an empty box and warn."""
_END_OF_WORD = "</w>"


@dataclass
class HBILevelExplanation:
    r"""
    The interaction at one level, restricted to the valid tokens (special tokens included: they are players).

    Args:
        interaction (`np.ndarray` of shape `(text_tokens, video_tokens)`): Banzhaf interaction of each pair.
        text_groups (`list[list[int]]`): for each text token of the level, the tokens (entity-level indices) it merges.
        video_groups (`list[list[int]]`): for each video token of the level, the frames it merges.
        source (`str`): how the values were obtained at this level (e.g. `"exact enumeration"`).
    """

    interaction: np.ndarray
    text_groups: list[list[int]]
    video_groups: list[list[int]]
    source: str = ""


@dataclass
class HBIExplanation:
    r"""
    Args:
        caption (`str`), video (`str`)
        tokens (`list[str]`): the caption's valid tokens as the tokenizer names them (BPE pieces, special tokens).
        words (`list[str]`): the caption's words, special tokens left out, BPE pieces joined.
        word_tokens (`list[list[int]]`): for each word, the indices in `tokens` of its pieces.
        frames (`np.ndarray` of shape `(frames, H, W, 3)`): the frames the model saw, rescaled to [0, 1] for display.
        frame_times (`list[float]` or `None`): time of each frame in seconds from the start of the video; `None`
            when the video gives no frame rate.
        levels (`list[HBILevelExplanation]`): entity, action and event levels.
        source (`str`): how the interaction was obtained (the figure's title names it).
        units (`str`): what the values measure (the colour bars' label).
        level_similarities (`list[float]`, *optional*): S of Eq. 12 of the pair at each level (entity, action,
            event), in cosine-similarity units.
        level_weights (`list[float]`, *optional*): the model's `similarity_level_weights`; the match score is
            `sum(w * s)` ([`HBIModel.score`]).
        tokens_not_read (`int`, *optional*, defaults to 0): tokens of the caption past the model's `max_words`, which
            the model does not read (the figure says so).
    """

    caption: str
    video: str
    tokens: list[str]
    words: list[str]
    word_tokens: list[list[int]]
    frames: np.ndarray
    frame_times: list[float] | None
    levels: list[HBILevelExplanation]
    source: str
    units: str
    level_similarities: list[float] | None = None
    level_weights: list[float] | None = None
    tokens_not_read: int = 0

    @property
    def score(self) -> float | None:
        """The match score `sum_l w_l S_l` the search ranks by ([`HBIModel.score`]); `None` when unknown."""
        if self.level_similarities is None or self.level_weights is None:
            return None
        return float(sum(w * s for w, s in zip(self.level_weights, self.level_similarities)))

    def level_shares(self) -> list[float] | None:
        """Each level's share `w_l S_l / score` of the match score (they sum to 1); `None` when the score is unknown
        or 0."""
        score = self.score
        if score is None or score == 0:
            return None
        return [w * s / score for w, s in zip(self.level_weights, self.level_similarities)]


@dataclass
class HBILevelDisplay:
    r"""
    What the figure draws for one level.

    Args:
        values (`np.ndarray` of shape `(rows, columns)`): the drawn interactions (word rows summed over their pieces;
            rows of special tokens only left out).
        row_labels (`list[str]`): the words of each row.
        column_labels (`list[str]`): the frames of each column, as times (`"1.5 s"`, `"0.0-2.0 s"`) when known.
    """

    values: np.ndarray
    row_labels: list[str]
    column_labels: list[str]


def reference_interaction(
    similarity: torch.Tensor,
    text_weight_logits: torch.Tensor,
    video_weight_logits: torch.Tensor,
    game_scale: float,
    num_samples: int | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, str]:
    r"""
    The Banzhaf interaction of one game at `game_scale` (from [`hbi_hf.banzhaf`]): exact
    ([`~hbi_hf.banzhaf.closed_form_banzhaf_interaction`]) without `num_samples`, else the Monte-Carlo estimate with
    `num_samples` sampled coalitions per pair.

    Args:
        similarity (`torch.Tensor` of shape `(words, frames)`): the matched token similarities of the valid tokens.
        text_weight_logits (`(words,)`), video_weight_logits (`(frames,)`): the level's WTI weight logits.
        game_scale (`float`): the model's `banzhaf_game_scale`.
        num_samples (`int`, *optional*), seed (`int`): the Monte-Carlo coalitions; `None`: the exact values.

    Returns:
        `(interaction, source)`: `(words, frames)` in cosine-similarity units x `game_scale`, and `"exact"` or
        `"Monte-Carlo, N samples"`.
    """
    from .banzhaf import closed_form_banzhaf_interaction, sampled_banzhaf_interaction

    game = dict(
        text_weight_logits=text_weight_logits.float()[None],
        video_weight_logits=video_weight_logits.float()[None],
        logit_scale=game_scale,
    )
    if num_samples is None:
        return closed_form_banzhaf_interaction(similarity.float()[None], **game)[0], "exact"
    generator = torch.Generator(device=similarity.device).manual_seed(seed)
    sampled = sampled_banzhaf_interaction(similarity.float()[None], num_samples, generator=generator, **game)
    return sampled[0], f"Monte-Carlo, {num_samples} samples"


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


def caption_words(tokens: list[str], special: list[bool]) -> tuple[list[str], list[list[int]]]:
    r"""
    Join a caption's BPE pieces into words, leaving special tokens out. CLIP's BPE marks the last piece of a word
    with `</w>`; a word runs from the piece after the previous word's end to the next piece that ends one (or to a
    special token).

    Args:
        tokens (`list[str]`): the tokenizer's names of the valid tokens (`convert_ids_to_tokens`).
        special (`list[bool]`): which of them are special tokens (start, end, padding).

    Returns:
        `(words, word_tokens)`: each word's text and the indices of its pieces in `tokens`.
    """
    words, word_tokens, pieces = [], [], []
    for index, (token, is_special) in enumerate(zip(tokens, special, strict=True)):
        if is_special:
            if pieces:
                word_tokens.append(pieces)
            pieces = []
            continue
        pieces.append(index)
        if token.endswith(_END_OF_WORD):
            word_tokens.append(pieces)
            pieces = []
    if pieces:
        word_tokens.append(pieces)
    for pieces in word_tokens:
        words.append("".join(tokens[i] for i in pieces).removesuffix(_END_OF_WORD).replace(_END_OF_WORD, " "))
    return words, word_tokens


def caption_word_labels(tokenizer, token_ids: list[int]) -> tuple[list[str], list[str], list[list[int]]]:
    r"""
    The labels of a caption's valid tokens for the figure: each piece as text, and the words ([`caption_words`]), each
    decoded from its pieces together (a character's bytes may span pieces: emoji, accented letters).

    Args:
        tokenizer: the processor's tokenizer.
        token_ids (`list[int]`): the valid token ids, special tokens included.

    Returns:
        `(tokens, words, word_tokens)`: the pieces as text, the words, and the indices of each word's pieces.
    """
    raw_tokens = tokenizer.convert_ids_to_tokens(token_ids)
    tokens = _decode_pieces(tokenizer, raw_tokens)
    special_ids = set(getattr(tokenizer, "all_special_ids", ()))
    words, word_tokens = caption_words(tokens, [token_id in special_ids for token_id in token_ids])
    if callable(getattr(tokenizer, "convert_tokens_to_string", None)):
        words = [
            tokenizer.convert_tokens_to_string([raw_tokens[i] for i in pieces])
            .removesuffix(_END_OF_WORD)
            .replace(_END_OF_WORD, " ")
            .strip()
            for pieces in word_tokens
        ]
    return tokens, words, word_tokens


def _decode_pieces(tokenizer, tokens: list[str]) -> list[str]:
    """CLIP's byte-level BPE writes bytes as printable symbols; map them back to text where the tokenizer says how."""
    byte_decoder = getattr(tokenizer, "byte_decoder", None)
    if not byte_decoder:
        if callable(getattr(tokenizer, "convert_tokens_to_string", None)):  # fast tokenizers decode bytes themselves
            return [tokenizer.convert_tokens_to_string([token]) for token in tokens]
        return tokens
    decoded = []
    for token in tokens:
        body, end = (token[: -len(_END_OF_WORD)], _END_OF_WORD) if token.endswith(_END_OF_WORD) else (token, "")
        if all(symbol in byte_decoder for symbol in body):
            body = bytearray(byte_decoder[symbol] for symbol in body).decode("utf-8", errors="replace")
        decoded.append(body + end)
    return decoded


def frame_times_of(metadata) -> list[float] | None:
    r"""
    Time in seconds from the start of the video of each sampled frame, from the video processor's metadata
    (`return_metadata=True`): the variable-frame-rate `frame_times` where the reader set them, else the frame index
    over the frame rate. `None` when the metadata gives neither.
    """
    if metadata is None or getattr(metadata, "frames_indices", None) is None:
        return None
    indices = [int(i) for i in metadata.frames_indices]
    frame_times = getattr(metadata, "frame_times", None)
    if frame_times:
        return [float(frame_times[i] - frame_times[0]) for i in indices]
    if not getattr(metadata, "fps", None):
        return None
    return [i / float(metadata.fps) for i in indices]


@torch.no_grad()
def explain_features(
    model: HBIModel,
    text_features: HBITextFeatures,
    video_features: HBIVideoFeatures,
    estimator: HBIBanzhafEstimator | None = None,
    num_samples: int | None = None,
    seed: int = 0,
) -> list[HBILevelExplanation]:
    r"""
    Banzhaf interaction of one matched text and video (batch 1 each) at every level, restricted to valid tokens.

    Args:
        estimator ([`HBIBanzhafEstimator`], *optional*): a trained estimator; without it, the reference
            ([`reference_interaction`]) at the model's `banzhaf_game_scale`.
        num_samples (`int`, *optional*), seed (`int`): Monte-Carlo coalitions per pair of the reference; `None`:
            its exact values.

    Raises:
        [`HBIInputError`]: `estimator` was never trained (`is_trained` is false in its config).
    """
    if estimator is not None and not estimator.config.is_trained:
        raise HBIInputError(_NEVER_TRAINED.format(what="the estimator"))
    levels = []
    for level in range(NUM_LEVELS):
        similarity = model.matched_token_similarity(text_features, video_features, level)[0].float().cpu()
        text_valid = text_features.level_masks[level][0].cpu()
        video_valid = video_features.level_masks[level][0].cpu()
        similarity = similarity[text_valid][:, video_valid]
        if estimator is None:
            interaction, source = reference_interaction(
                similarity,
                text_features.level_weight_logits[level][0].cpu()[text_valid],
                video_features.level_weight_logits[level][0].cpu()[video_valid],
                model.config.banzhaf_game_scale,
                num_samples,
                seed,
            )
        else:
            cell_mask = torch.ones(1, *similarity.shape, dtype=torch.bool, device=estimator.device)
            values = similarity[None].to(device=estimator.device, dtype=estimator.dtype)
            interaction, source = estimator.estimate(values, cell_mask)[0].float().cpu(), "trained estimator"
        text_groups = _members([a[0].cpu() for a in text_features.cluster_assignments], level, len(text_valid))
        video_groups = _members([a[0].cpu() for a in video_features.cluster_assignments], level, len(video_valid))
        levels.append(
            HBILevelExplanation(
                interaction=interaction.numpy(),
                text_groups=[group for group, valid in zip(text_groups, text_valid) if valid],
                video_groups=[group for group, valid in zip(video_groups, video_valid) if valid],
                source=source,
            )
        )
    return levels


_NEVER_TRAINED = (
    "{what} was never trained (is_trained is false in its config): its interactions would be random. Give a trained "
    "one (estimator_name_or_path, --estimator PATH: from scripts/train_estimator.py, the training scripts' "
    "--fit_estimator or a converted official estimator), or use teacher='exact' (--teacher exact: the exact "
    "interactions of the model's game)"
)


def resolve_explain_teacher(
    teacher: str | None,
    estimator_name_or_path: str | os.PathLike | None,
    model: HBIModel,
    model_teacher: HBIBanzhafEstimator | None,
) -> HBIBanzhafEstimator | None:
    r"""
    The estimator that explains, following the teacher rules of training; `None` means the reference (`"exact"`
    or `"monte_carlo"`).

    Args:
        teacher (`str`, *optional*): `"exact"`, `"monte_carlo"` or `"estimator"`; `None`: `"estimator"` when
            `estimator_name_or_path` is given, else `"exact"`.
        estimator_name_or_path (`str` or `os.PathLike`, *optional*): a saved, trained [`HBIBanzhafEstimator`];
            without it `"estimator"` uses the model's own teacher.
        model ([`HBIModel`]), model_teacher ([`HBIBanzhafEstimator`], *optional*): from [`load_hbi_model`].

    Raises:
        [`HBIInputError`]: an unknown `teacher`; `"exact"` or `"monte_carlo"` with an estimator path; an estimator that was never
            trained; `"estimator"` for a model without a teacher or one that did not train with its estimator.
    """
    if teacher is None:
        teacher = "estimator" if estimator_name_or_path is not None else "exact"
    if teacher not in EXPLAIN_TEACHERS:
        raise HBIInputError(f"teacher must be one of {EXPLAIN_TEACHERS}; got {teacher!r}")
    if teacher != "estimator":
        if estimator_name_or_path is not None:
            raise HBIInputError(
                f"teacher={teacher!r} takes no estimator; leave out --estimator or use --teacher estimator"
            )
        return None
    if estimator_name_or_path is not None:
        estimator = HBIBanzhafEstimator.from_pretrained(estimator_name_or_path).eval()
        if not estimator.config.is_trained:
            raise HBIInputError(_NEVER_TRAINED.format(what=f"the estimator {estimator_name_or_path}"))
        return estimator
    if model_teacher is None:
        raise HBIInputError(
            "teacher='estimator' but the model folder holds an HBIModel without a Banzhaf teacher: give a trained "
            "estimator (estimator_name_or_path, --estimator PATH), or use teacher='exact'"
        )
    if not model_teacher.config.is_trained:
        raise HBIInputError(_NEVER_TRAINED.format(what="the model's Banzhaf teacher"))
    if model.config.banzhaf_teacher != "estimator":
        raise HBIInputError(
            f"the model trained with banzhaf_teacher={model.config.banzhaf_teacher!r}, not with its estimator: give "
            "a trained estimator (estimator_name_or_path, --estimator PATH), or use teacher='exact'"
        )
    return model_teacher


def explain_video(
    video: str | os.PathLike,
    caption: str,
    model_name_or_path: str | os.PathLike,
    estimator_name_or_path: str | os.PathLike | None = None,
    teacher: str | None = None,
    num_samples: int = DEFAULT_EXPLAIN_SAMPLES,
    seed: int = 0,
) -> HBIExplanation:
    r"""
    Load the model and its processor, encode `video` and `caption`, and compute their interactions at every level
    (see [`explain_with_model`]; the estimator is chosen by [`resolve_explain_teacher`]: by default the exact
    interactions; `num_samples` and `seed` are those of `teacher="monte_carlo"`). `model_name_or_path` is a saved
    model folder or an index folder (its model), resolved as `hbi-hf index` / `search` do
    ([`~hbi_hf.search_index.resolve_model_folder`]). A caption longer than the model's `max_words` is cut, with a
    warning ([`~hbi_hf.search_index.encode_text`]).

    Raises:
        [`HBIInputError`]: see [`resolve_explain_teacher`]; an empty caption; a video without a decodable frame; a
            model folder without a processor ([`~hbi_hf.search_index.load_processor`]).
        `FileNotFoundError`: no such model folder (or the model of an index has moved).
    """
    if not caption.strip():
        raise HBIInputError(f"the caption is empty: give the words to explain; got {caption!r}")
    model_dir = resolve_model_folder(model_name_or_path)
    model, model_teacher = load_hbi_model(model_dir)
    estimator = resolve_explain_teacher(teacher, estimator_name_or_path, model, model_teacher)
    processor = load_processor(model_dir)
    if estimator is not None:
        name = estimator_name_or_path if estimator_name_or_path is not None else "the model's teacher"
        estimator_name = f"trained Banzhaf estimator ({name})"
    else:
        estimator_name = None
    sampled = teacher == "monte_carlo"
    return explain_with_model(
        model, processor, video, caption, estimator, num_samples if sampled else None, seed, estimator_name
    )


@torch.no_grad()
def explain_with_model(
    model: HBIModel,
    processor,
    video: str | os.PathLike,
    caption: str,
    estimator: HBIBanzhafEstimator | None = None,
    num_samples: int | None = None,
    seed: int = 0,
    estimator_name: str | None = None,
) -> HBIExplanation:
    r"""
    [`explain_video`] with a model and processor already loaded (`hbi-hf serve` loads them once): decode `video`,
    encode it and `caption`, compute the interactions at every level ([`explain_features`]) and the pair's match
    score with each level's similarity.

    Args:
        model ([`HBIModel`]), processor: from [`load_hbi_model`] / [`load_processor`].
        estimator ([`HBIBanzhafEstimator`], *optional*): a trained estimator (see [`resolve_explain_teacher`]);
            `None`: the exact values, or with `num_samples` the Monte-Carlo estimate.
        estimator_name (`str`, *optional*): how the figure names the estimator.

    Raises:
        [`HBIInputError`]: an empty caption; a video without a decodable frame.
    """
    if not caption.strip():
        raise HBIInputError(f"the caption is empty: give the words to explain; got {caption!r}")
    inputs = processor(videos=[str(video)], return_tensors="pt", return_metadata=True)
    pixel_values = inputs["pixel_values"][0]
    video_mask = inputs.get("video_mask")
    video_mask = torch.ones(len(pixel_values), dtype=torch.long) if video_mask is None else video_mask[0]
    if not video_mask.bool().any():
        raise HBIInputError(f"{video}: no decodable frame")
    metadata = inputs.get("video_metadata")
    frame_times = frame_times_of(metadata[0] if metadata else None)
    if frame_times is not None and len(frame_times) != int(video_mask.sum()):
        frame_times = None
    if frame_times is None:
        logger.warning(f"{video}: the processor gave no frame times (no frame rate); frames are labelled f1, f2, ...")
    video_features = encode_video_batch(model, pixel_values[None], video_mask[None])
    text_features, input_ids = encode_text(model, processor, caption, what="the caption")
    tokens_not_read = max(0, (text_token_count(processor, caption) or 0) - input_ids.shape[1])
    text_features = text_features.map(lambda tensor: tensor.cpu())
    video_features = video_features.map(lambda tensor: tensor.to(model.device))
    levels = explain_features(
        model, text_features.map(lambda t: t.to(model.device)), video_features, estimator, num_samples, seed
    )
    per_level = model.similarity_per_level(text_features.map(lambda t: t.to(model.device)), video_features)
    tokenizer = processor.tokenizer
    valid_ids = input_ids[0].cpu()[text_features.level_masks[0][0]].tolist()
    tokens, words, word_tokens = caption_word_labels(tokenizer, valid_ids)
    game_scale = model.config.banzhaf_game_scale
    if estimator is None:
        used = sorted({level.source for level in levels})
        source = "the exact interactions" if used == ["exact"] else f"{' / '.join(used)} estimates"
        source += f" of the model's game at scale s = {game_scale:g}"
        units = f"Banzhaf interaction\n[cosine similarity x s = {game_scale:g}]"
    else:
        source = estimator_name or "trained Banzhaf estimator"
        units = "Banzhaf interaction, estimated\n[units of the estimator's labels]"
    return HBIExplanation(
        caption=caption,
        video=str(video),
        tokens=tokens,
        words=words,
        word_tokens=word_tokens,
        frames=_display_frames(pixel_values[video_mask.bool()]),
        frame_times=frame_times,
        levels=levels,
        source=source,
        units=units,
        level_similarities=[float(similarity[0, 0]) for similarity in per_level],
        level_weights=[float(w) for w in model.config.similarity_level_weights],
        tokens_not_read=tokens_not_read,
    )


def _time_decimals(frame_times: list[float] | None) -> int:
    """Decimals that show the spacing of the frames (1 for frames half a second or more apart, 2 for 1/8 s, at most
    3)."""
    if not frame_times or len(frame_times) < 2:
        return 1
    gap = min((b - a for a, b in zip(frame_times, frame_times[1:]) if b > a), default=1.0)
    return min(3, max(1, math.ceil(-math.log10(gap / 4))))


def _time_label(frames: list[int], frame_times: list[float] | None, decimals: int = 1) -> str:
    """Frames `[0, 1, 2, 5]` -> `"0.0-1.0, 2.5 s"` (runs of consecutive frames as ranges); frame numbers
    (`"f1-3, f6"`) without times."""
    runs: list[list[int]] = []
    for frame in sorted(frames):
        if runs and frame == runs[-1][-1] + 1:
            runs[-1].append(frame)
        else:
            runs.append([frame])
    if frame_times is None:
        return ", ".join(f"f{r[0] + 1}" if len(r) == 1 else f"f{r[0] + 1}-{r[-1] + 1}" for r in runs)
    parts = [
        f"{frame_times[r[0]]:.{decimals}f}"
        if len(r) == 1
        else f"{frame_times[r[0]]:.{decimals}f}-{frame_times[r[-1]]:.{decimals}f}"
        for r in runs
    ]
    return ", ".join(parts) + " s"


def _words_label(explanation: HBIExplanation, group: list[int], limit: int = 4) -> str:
    """The words whose pieces `group` (token indices) holds; a word with only some of its pieces there is shown as
    those pieces followed by '-'."""
    members = set(group)
    shown = []
    for word, pieces in zip(explanation.words, explanation.word_tokens):
        present = [i for i in pieces if i in members]
        if len(present) == len(pieces):
            shown.append(word)
        elif present:
            shown.append("".join(explanation.tokens[i].removesuffix(_END_OF_WORD) for i in present) + "-")
    return " ".join(shown[:limit]) + (" …" if len(shown) > limit else "")


def explanation_displays(explanation: HBIExplanation) -> list[HBILevelDisplay]:
    r"""
    What [`plot_explanation`] draws at each level. At the entity level the rows are the caption's words: a word
    split into several BPE pieces gets the sum of its pieces' rows (its pieces' total pairwise interaction with the
    frame; a one-piece word keeps its value), and special tokens are left out. At the action and event levels the
    rows are the phrases / paragraphs, labelled by the words merged into them; one that merges special tokens only
    is left out. Columns are frames / clips / segments, labelled with their times.
    """
    displays = []
    decimals = _time_decimals(explanation.frame_times)
    for level, explained in enumerate(explanation.levels):
        columns = [_time_label(group, explanation.frame_times, decimals) for group in explained.video_groups]
        if level == 0:
            values = np.stack([explained.interaction[pieces].sum(0) for pieces in explanation.word_tokens])
            displays.append(HBILevelDisplay(values, list(explanation.words), columns))
            continue
        word_pieces = {i for pieces in explanation.word_tokens for i in pieces}
        rows = [k for k, group in enumerate(explained.text_groups) if word_pieces.intersection(group)]
        labels = [_words_label(explanation, explained.text_groups[k]) for k in rows]
        displays.append(HBILevelDisplay(explained.interaction[rows], labels, columns))
    return displays


def _set_ticks(axis, labels: list[str], which: str, fontsize: float, axis_width: float = 0.0) -> None:
    """Label every token, or every k-th past `MAX_TICK_LABELS`; x labels wider than their column stand upright."""
    step = max(1, math.ceil(len(labels) / MAX_TICK_LABELS))
    positions = list(range(0, len(labels), step))
    shown = [_elide(drawable_text(labels[i]), MAX_LABEL_CHARACTERS) for i in positions]
    if which == "x":
        text_width = 0.6 * fontsize / 72 * max((len(label) for label in shown), default=0)
        rotation = 0 if text_width < 0.9 * axis_width / max(1, len(positions)) else 90
        axis.set_xticks(positions)
        axis.set_xticklabels(shown, fontsize=fontsize, rotation=rotation)
    else:
        axis.set_yticks(positions)
        axis.set_yticklabels(shown, fontsize=fontsize)


def _elide(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@functools.cache
def _font_coverage() -> tuple[tuple[str, frozenset[int]], ...]:
    """`(family, characters)` of each font matplotlib can draw with: its default sans-serif first (DejaVu Sans), then
    the other installed fonts by name. Left out: a font FreeType cannot size (colour-bitmap emoji fonts), and the
    "Last Resort" font matplotlib ships, whose glyph for every character is a placeholder box."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    default = font_manager.findfont(font_manager.FontProperties(family=["sans-serif"]), fallback_to_default=True)
    entries = sorted(font_manager.fontManager.ttflist, key=lambda entry: (entry.fname != default, entry.name))
    coverage, seen = [], set()
    for entry in entries:
        if entry.name in seen or entry.name.startswith("Last Resort"):
            continue
        try:
            font = FT2Font(entry.fname)
            font.set_size(10, 72)
            characters = frozenset(font.get_charmap())
        except (OSError, RuntimeError, ValueError):
            continue
        seen.add(entry.name)
        coverage.append((entry.name, characters))
    return tuple(coverage)


def drawable_text(text: str) -> str:
    """`text` with every character that no installed font can draw replaced by `REPLACEMENT_CHARACTER` (line breaks
    and spaces are kept)."""
    covered = _font_coverage()
    return "".join(
        character
        if character in "\n\t " or any(ord(character) in characters for _, characters in covered)
        else REPLACEMENT_CHARACTER
        for character in text
    )


def _font_families(texts: list[str]) -> list[str]:
    """The default family, then the installed families needed for the characters of `texts` it lacks (matplotlib
    falls back along the list, glyph by glyph)."""
    covered = _font_coverage()
    if not covered:
        return ["sans-serif"]
    missing = {ord(c) for text in texts for c in text} - covered[0][1]
    families = [covered[0][0]]
    for name, characters in covered[1:]:
        if missing & characters:
            families.append(name)
            missing -= characters
    return families


def level_colour_scale(values: np.ndarray) -> tuple[str, mcolors.Normalize]:
    r"""
    The colour map and normalisation that show one level's differences: values of both signs get the diverging
    `RdBu_r` with 0 white and each side stretched to its own extreme (red: the pair adds to the match together, blue:
    it takes away); values that all share a sign get a sequential map over their own range (`Reds` from the smallest
    to the largest positive value, `Blues_r` likewise for negative values), so that a level whose values are all
    positive is not drawn as one block of a single colour.

    Returns:
        `(colour map name, matplotlib normalisation)`.
    """
    finite = values[np.isfinite(values)] if values.size else values
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if low == high:
        bound = abs(high) or 1.0
        return "RdBu_r", mcolors.Normalize(-bound, bound)
    if low >= 0:
        return "Reds", mcolors.Normalize(low, high)
    if high <= 0:
        return "Blues_r", mcolors.Normalize(low, high)
    return "RdBu_r", mcolors.TwoSlopeNorm(vcenter=0.0, vmin=low, vmax=high)


def format_value(value: float) -> str:
    """A cell's value as printed in the figure and sent to the page: 3 significant digits."""
    return f"{value:.3g}"


def _annotate_cells(axis, values: np.ndarray, image) -> None:
    """Print each value in its cell, black or white whichever reads better on the cell's colour."""
    colours = image.cmap(image.norm(values))
    for (row, column), value in np.ndenumerate(values):
        red, green, blue, _ = colours[row, column]
        luminance = 0.299 * red + 0.587 * green + 0.114 * blue
        axis.text(
            column,
            row,
            format_value(value),
            ha="center",
            va="center",
            fontsize=6.5,
            color="black" if luminance > 0.55 else "white",
        )


def _caption_title(explanation: HBIExplanation, line_length: int) -> str:
    """The caption wrapped at `line_length` characters on at most `MAX_TITLE_LINES` lines, saying what was left out
    (words elided from the title, tokens the model does not read)."""
    caption = " ".join(drawable_text(explanation.caption).split())
    lines = textwrap.wrap(f'"{caption}"', line_length, break_long_words=True) or ['""']
    notes = []
    if len(lines) > MAX_TITLE_LINES:
        shown_characters = len(" ".join(lines[:MAX_TITLE_LINES])) - 1  # less the opening quote
        lines = lines[:MAX_TITLE_LINES]
        lines[-1] = lines[-1][: line_length - 2] + " …"
        notes.append(f"caption cut here: {len(caption[shown_characters:].split())} more words not shown")
    if explanation.tokens_not_read:
        notes.append(
            f"the model reads the first {len(explanation.tokens)} tokens; {explanation.tokens_not_read} more are not read"
        )
    if any(REPLACEMENT_CHARACTER in text for text in [caption, *explanation.words]):
        notes.append(f"{REPLACEMENT_CHARACTER}: a character no installed font can draw")
    return "\n".join(lines + (textwrap.wrap(f"({'; '.join(notes)})", line_length) if notes else []))


def _score_line(explanation: HBIExplanation) -> str:
    """`match score 0.41 = entity 0.41 x 1 (100 %) + action ...`: the score and each level's share, when known."""
    score, shares = explanation.score, explanation.level_shares()
    if score is None:
        return ""
    parts = []
    for level, (similarity, weight) in enumerate(zip(explanation.level_similarities, explanation.level_weights)):
        share = f" ({100 * shares[level]:.0f} %)" if shares is not None else ""
        parts.append(f"{LEVEL_NAMES[level]} {format_value(similarity)} x {weight:g}{share}")
    return f"match score {format_value(score)} = " + " + ".join(parts) + " (level similarity x weight, share)"


def draw_explanation(explanation: HBIExplanation) -> Figure:
    r"""
    The explanation as a figure: a strip of frames (at most `MAX_THUMBNAILS`, each with its time, clip and segment)
    above one heatmap per level ([`explanation_displays`]: words x frames, phrases x clips, paragraphs x segments).
    Each heatmap has its own colour scale ([`level_colour_scale`]) with a colour bar labelled with the units, and
    prints its values in the cells when it has at most `MAX_ANNOTATED_CELLS`. The title gives the caption (wrapped,
    at most `MAX_TITLE_LINES` lines, so a long caption cannot widen the figure), the match score and each level's
    share of it; characters no installed font has are drawn as `REPLACEMENT_CHARACTER`, and the title says so. The
    figure grows with the numbers of words and frames up to 40 inches; past `MAX_TICK_LABELS` an axis labels every
    k-th token.
    """
    import matplotlib

    with matplotlib.rc_context(_font_settings(explanation)):
        return _draw(explanation, explanation_displays(explanation))


def _font_settings(explanation: HBIExplanation) -> dict:
    """matplotlib settings whose font list draws every character of the explanation's texts that some installed
    font has."""
    texts = [explanation.caption, Path(explanation.video).name, *explanation.words, *explanation.tokens]
    return {"font.family": _font_families([drawable_text(text) for text in texts])}


def _draw(explanation: HBIExplanation, displays: list[HBILevelDisplay]) -> Figure:
    num_frames = len(explanation.frames)
    cell_width, cell_height, label_width = 0.32, 0.24, 2.6
    columns = min(num_frames, 4 * MAX_TICK_LABELS)
    width = min(max(7.0, cell_width * columns + label_width + 1.5), 40.0)
    shown = sorted({round(i) for i in np.linspace(0, num_frames - 1, min(num_frames, MAX_THUMBNAILS))})
    thumbnail = 0.8 * width / len(shown)
    heights = [min(1.6, thumbnail + 0.5)] + [
        max(1.8, cell_height * min(len(d.values), 4 * MAX_TICK_LABELS) + 1.0) for d in displays
    ]
    figure = Figure(figsize=(width, sum(heights) + 1.2), layout="constrained")
    grid = figure.add_gridspec(1 + NUM_LEVELS, 1, height_ratios=heights)
    strip = grid[0].subgridspec(1, len(shown), wspace=0.08)
    cluster_of = [
        {i: k + 1 for k, group in enumerate(level.video_groups) for i in group} for level in explanation.levels
    ]
    for position, frame in enumerate(shown):
        axis = figure.add_subplot(strip[0, position])
        axis.imshow(explanation.frames[frame])
        axis.set_axis_off()
        clusters = f"clip {cluster_of[1].get(frame, '-')} seg {cluster_of[2].get(frame, '-')}"
        time = _time_label([frame], explanation.frame_times, _time_decimals(explanation.frame_times))
        axis.set_title(f"{time}\n{clusters}", fontsize=7)
    shares = explanation.level_shares()
    for level, display in enumerate(displays):
        axis = figure.add_subplot(grid[1 + level])
        colour_map, norm = level_colour_scale(display.values)
        image = axis.imshow(display.values, cmap=colour_map, norm=norm, aspect="auto")
        if 0 < display.values.size <= MAX_ANNOTATED_CELLS:
            _annotate_cells(axis, display.values, image)
        _set_ticks(axis, display.row_labels, "y", 8)
        _set_ticks(axis, display.column_labels, "x", 7, axis_width=width - label_width - 1.5)
        axis.set_xlabel(
            f"{VIDEO_TOKEN_NAMES[level]}s (time in the video)"
            if explanation.frame_times
            else f"{VIDEO_TOKEN_NAMES[level]}s",
            fontsize=8,
        )
        title = (
            f"{LEVEL_NAMES[level]} level: {TEXT_TOKEN_NAMES[level]}s x {VIDEO_TOKEN_NAMES[level]}s "
            f"({explanation.levels[level].source})"
        )
        if explanation.level_similarities is not None:
            title += f"; level similarity {format_value(explanation.level_similarities[level])}"
            title += f", weight {explanation.level_weights[level]:g}"
            if shares is not None:
                title += f", {100 * shares[level]:.0f} % of the match score"
        axis.set_title(title, fontsize=9)
        colour_bar = figure.colorbar(image, ax=axis, fraction=0.04, pad=0.01)
        colour_bar.set_label(explanation.units, fontsize=7)
        colour_bar.ax.tick_params(labelsize=7)
    line_length = min(MAX_TITLE_CHARACTERS, int(width * 72 / 8))  # characters of a 10 pt title in the figure's width
    lines = [
        _caption_title(explanation, line_length),
        _elide(drawable_text(Path(explanation.video).name), line_length),
    ]
    lines += textwrap.wrap(f"Banzhaf interaction: {explanation.source}", line_length)
    if explanation.score is not None:
        lines += textwrap.wrap(_score_line(explanation), line_length)
    figure.suptitle("\n".join(lines), fontsize=10)
    return figure


def plot_explanation(explanation: HBIExplanation, out: str | os.PathLike, dpi: int = 120) -> str:
    """Draw the explanation ([`draw_explanation`]) and save it to `out` (png, pdf, svg). Returns the path written."""
    import matplotlib

    out = str(out)
    with matplotlib.rc_context(_font_settings(explanation)):  # tick labels are laid out when the figure is drawn
        draw_explanation(explanation).savefig(out, dpi=dpi, bbox_inches="tight")
    return out


def explanation_to_dict(explanation: HBIExplanation) -> dict:
    r"""
    The data of the figure as JSON-ready values (what `hbi-hf serve`'s explain endpoint returns): the caption, the
    video, the words, the frame times, the match score with each level's similarity, weight and share, and per level
    the drawn matrix ([`explanation_displays`]) with its row and column labels and colour scale.

    Returns:
        `dict` with keys `caption`, `video`, `words`, `frame_times`, `source`, `units`, `score`,
        `tokens_not_read` and `levels` (a list of 3 dicts: `name`, `rows`, `columns`, `row_labels`,
        `column_labels`, `values` (`rows x columns` nested lists), `source`, `similarity`, `weight`, `share`,
        `colour_map`, `vmin`, `vmax`, `vcenter` (0 for a diverging scale, else `None`), `colours` (each cell's colour
        in the figure, `"#rrggbb"`)).
    """
    shares = explanation.level_shares()
    levels = []
    for level, display in enumerate(explanation_displays(explanation)):
        colour_map, norm = level_colour_scale(display.values)
        levels.append(
            dict(
                name=LEVEL_NAMES[level],
                rows=TEXT_TOKEN_NAMES[level],
                columns=VIDEO_TOKEN_NAMES[level],
                row_labels=list(display.row_labels),
                column_labels=list(display.column_labels),
                values=[[float(v) for v in row] for row in display.values],
                source=explanation.levels[level].source,
                similarity=None if explanation.level_similarities is None else explanation.level_similarities[level],
                weight=None if explanation.level_weights is None else explanation.level_weights[level],
                share=None if shares is None else shares[level],
                colour_map=colour_map,
                vmin=float(norm.vmin),
                vmax=float(norm.vmax),
                vcenter=float(norm.vcenter) if isinstance(norm, mcolors.TwoSlopeNorm) else None,
                colours=[[mcolors.to_hex(c) for c in row] for row in colormaps[colour_map](norm(display.values))],
            )
        )
    return dict(
        caption=explanation.caption,
        video=explanation.video,
        words=list(explanation.words),
        frame_times=explanation.frame_times,
        source=explanation.source,
        units=explanation.units,
        score=explanation.score,
        tokens_not_read=explanation.tokens_not_read,
        levels=levels,
    )


__all__ = [
    "HBIExplanation",
    "HBILevelDisplay",
    "HBILevelExplanation",
    "caption_words",
    "draw_explanation",
    "explain_features",
    "explain_video",
    "explain_with_model",
    "explanation_displays",
    "explanation_to_dict",
    "drawable_text",
    "level_colour_scale",
    "plot_explanation",
    "caption_word_labels",
    "reference_interaction",
    "resolve_explain_teacher",
]
