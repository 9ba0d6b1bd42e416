"""PyTorch HBI: Hierarchical Banzhaf Interaction for video-language representation learning.

HBI (CVPR 2023) and HBI V2 (TPAMI 2024) on a Hugging Face CLIP backbone. Equation numbers refer to the TPAMI paper;
section numbers of the form "spec §N" to the sections of docs/method.md.
"""

import math
import os
from dataclasses import dataclass, fields, replace

import torch
import torch.distributed as dist
import torch.nn.functional as F
from accelerate import PartialState
from torch import nn
from transformers import (
    AutoTokenizer,
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
    GenerationConfig,
    GenerationMixin,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    ProcessorMixin,
)
from transformers import initialization as init
from transformers.cache_utils import Cache, EncoderDecoderCache
from transformers.dynamic_module_utils import custom_object_save
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import BaseModelOutputWithPooling, Seq2SeqLMOutput
from transformers.models.clip.modeling_clip import CLIPEncoderLayer
from transformers.utils import ModelOutput, can_return_tuple, logging

from .configuration_hbi import (
    ESTIMATOR_ARCHITECTURE_FIELDS,
    ESTIMATOR_INPUT_CHANNELS,
    ESTIMATOR_NORMALISATION_FIELDS,
    NUM_LEVELS,
    OBJECTIVES,
    ROW_COLUMN_STATISTICS,
    HBIBanzhafEstimatorConfig,
    HBIConfig,
)

logger = logging.get_logger(__name__)

LEVEL_NAMES = ("entity", "action", "event")
# texts x videos per scoring block: at ViT-B/32 shapes a block's cells (~6 MB) stay in the CPU's cache
DEFAULT_SCORING_CHUNK_SIZE = 64


# ---------------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class HBIModalityFeatures(ModelOutput):
    r"""
    Pair-independent features of one modality at the three hierarchy levels: what [`HBIModel`] caches per text or per
    video and scores against the other modality.

    Args:
        level_tokens (`tuple(torch.FloatTensor)` of length 3):
            Single-modal tokens of the entity, action and event levels, each of shape `(batch, tokens_l, dim)`:
            words / phrases / paragraphs for text, frames / clips / segments for video.
        level_masks (`tuple(torch.BoolTensor)` of length 3):
            Validity of each token, each of shape `(batch, tokens_l)`.
        level_weight_logits (`tuple(torch.FloatTensor)` of length 3):
            MLP_t / MLP_v logits of Eq. 12 for every token, each of shape `(batch, tokens_l)`.
        level_gate_logits (`tuple(torch.FloatTensor)`, *optional*):
            HBI V2 only: `w . x_i` of the linear reconstruction gate of Eqs. 3 / 5 for every token, each of shape
            `(batch, tokens_l)`.
        global_embeddings (`torch.FloatTensor` of shape `(batch, dim)`):
            One vector per item: the sentence ([EOT]) embedding t_c for text, the mean frame token for video.
        cluster_assignments (`tuple(torch.LongTensor)` of length 2):
            For the entity->action and action->event merges, the index of the cluster each lower-level token joined,
            each of shape `(batch, tokens_{l-1})`; -1 for padding.
    """

    level_tokens: tuple[torch.FloatTensor, ...] | None = None
    level_masks: tuple[torch.BoolTensor, ...] | None = None
    level_weight_logits: tuple[torch.FloatTensor, ...] | None = None
    level_gate_logits: tuple[torch.FloatTensor, ...] | None = None
    global_embeddings: torch.FloatTensor | None = None
    cluster_assignments: tuple[torch.LongTensor, ...] | None = None

    def __len__(self) -> int:
        return self.global_embeddings.shape[0]

    @property
    def pooler_output(self) -> torch.FloatTensor:
        """`global_embeddings` `(batch, dim)`, under the name CLIP's `get_text_features(...).pooler_output` gives
        its pooled, projected embedding."""
        return self.global_embeddings

    def map(self, fn) -> "HBIModalityFeatures":
        """Apply `fn` to every tensor (e.g. a batch slice, `.to(device)`, `.detach()`)."""
        changes = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, tuple):
                changes[field.name] = tuple(fn(v) for v in value)
            elif value is not None:
                changes[field.name] = fn(value)
        return replace(self, **changes)

    def __getitem__(self, key):
        if isinstance(key, str):
            return super().__getitem__(key)
        return self.map(lambda tensor: tensor[key])

    @classmethod
    def concatenate(cls, parts: list["HBIModalityFeatures"]) -> "HBIModalityFeatures":
        """Join features of several batches, e.g. encoded chunk by chunk or on several processes, along the batch
        axis. Batches padded to different lengths (words, frames) are padded to the longest with invalid tokens
        (mask False, cluster index -1), which changes no score."""
        first = parts[0]
        changes = {}
        for field in fields(first):
            value = getattr(first, field.name)
            if isinstance(value, tuple):
                fill = False if field.name == "level_masks" else -1 if field.name == "cluster_assignments" else 0
                per_level = [[getattr(p, field.name)[i] for p in parts] for i in range(len(value))]
                changes[field.name] = tuple(torch.cat(_padded_to_longest(level, fill)) for level in per_level)
            elif value is not None:
                changes[field.name] = torch.cat([getattr(p, field.name) for p in parts])
        return replace(first, **changes)


def _padded_to_longest(tensors: list[torch.Tensor], fill: float | bool) -> list[torch.Tensor]:
    """Per-token tensors `(batch, tokens, ...)` of several batches, padded with `fill` to the most tokens."""
    length = max(tensor.shape[1] for tensor in tensors)
    return [
        torch.cat([tensor, tensor.new_full((tensor.shape[0], length - tensor.shape[1], *tensor.shape[2:]), fill)], 1)
        if tensor.shape[1] < length
        else tensor
        for tensor in tensors
    ]


@dataclass
class HBITextFeatures(HBIModalityFeatures):
    """Features of a batch of texts; see [`HBIModalityFeatures`]."""


@dataclass
class HBIVideoFeatures(HBIModalityFeatures):
    """Features of a batch of videos; see [`HBIModalityFeatures`]."""


@dataclass
class HBIModelOutput(ModelOutput):
    r"""
    Args:
        logits_per_text (`torch.FloatTensor` of shape `(text_batch_size, video_batch_size)`):
            Fused similarity (levels weighted by `config.similarity_level_weights`) divided by the temperature.
        logits_per_video (`torch.FloatTensor` of shape `(video_batch_size, text_batch_size)`):
            The transpose of `logits_per_text`.
        similarity_per_level (`tuple(torch.FloatTensor)` of length 3):
            Similarity S of Eq. 12 at the entity, action and event levels, each `(text_batch_size, video_batch_size)`;
            `None` for a level that was not computed.
        text_features ([`HBITextFeatures`]): The texts' features.
        video_features ([`HBIVideoFeatures`]): The videos' features.
        text_embeds (`torch.FloatTensor` of shape `(text_batch_size, projection_dim)`):
            The pooled, projected, L2-normalised text embeddings (CLIP's and X-CLIP's `text_embeds`): the sentence
            embedding t_c.
        video_embeds (`torch.FloatTensor` of shape `(video_batch_size, projection_dim)`):
            The pooled, projected, L2-normalised video embeddings (X-CLIP's `video_embeds`): the mean frame token.
        text_model_output ([`~modeling_outputs.BaseModelOutputWithPooling`]):
            The output of the CLIP text tower, with `hidden_states` / `attentions` when asked for, each
            `(text_batch_size, words, ...)`.
        vision_model_output ([`~modeling_outputs.BaseModelOutputWithPooling`]):
            The output of the CLIP image tower over the valid frames of the batch (padded frames are not encoded),
            each `(valid_frames, patches + 1, ...)`, frames in video order.
    """

    logits_per_text: torch.FloatTensor | None = None
    logits_per_video: torch.FloatTensor | None = None
    similarity_per_level: tuple[torch.FloatTensor | None, ...] | None = None
    text_features: HBITextFeatures | None = None
    video_features: HBIVideoFeatures | None = None
    text_embeds: torch.FloatTensor | None = None
    video_embeds: torch.FloatTensor | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None

    def to_tuple(self) -> tuple:
        """As `CLIPOutput.to_tuple`: nested outputs become tuples too."""
        return _nested_to_tuple(self)


def _nested_to_tuple(output: ModelOutput) -> tuple:
    return tuple(value.to_tuple() if isinstance(value, ModelOutput) else value for value in output.values())


@dataclass
class HBIAlignmentLossOutput(ModelOutput):
    r"""
    The alignment objective of Eq. 16 without a task loss.

    Args:
        loss (`torch.FloatTensor` of shape `()`):
            `contrastive_loss + alpha * banzhaf_loss + beta * distillation_loss`.
        contrastive_loss (`torch.FloatTensor` of shape `()`): Sum over levels of L_C (Eq. 13).
        banzhaf_loss (`torch.FloatTensor` of shape `()`): Sum over levels of L_I (Eq. 8), before alpha.
        distillation_loss (`torch.FloatTensor` of shape `()`): L_D^{e2a} + L_D^{e2v} (Eq. 15), before beta.
        similarity_per_level (`tuple(torch.FloatTensor)` of length 3):
            S at each level between this process's texts and videos, each `(batch, batch)`. (The losses use the
            similarities over the global batch of all processes.)
        contrastive_loss_per_level (`tuple(torch.FloatTensor)` of length 3): L_C of the entity, action and event
            levels, each of shape `()`.
        banzhaf_loss_per_level (`tuple(torch.FloatTensor)` of length 3, *optional*): L_I of each level, before alpha
            (`None` when L_I is not computed).
        distillation_loss_per_level (`tuple(torch.FloatTensor)` of length 2): L_D^{e2a} and L_D^{e2v}, before beta.
    """

    loss: torch.FloatTensor | None = None
    contrastive_loss: torch.FloatTensor | None = None
    banzhaf_loss: torch.FloatTensor | None = None
    distillation_loss: torch.FloatTensor | None = None
    similarity_per_level: tuple[torch.FloatTensor, ...] | None = None
    contrastive_loss_per_level: tuple[torch.FloatTensor, ...] | None = None
    banzhaf_loss_per_level: tuple[torch.FloatTensor, ...] | None = None
    distillation_loss_per_level: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class HBIRetrievalOutput(ModelOutput):
    r"""
    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned with `return_loss=True`):
            Total loss of Eq. 16 (retrieval has no task loss).
        contrastive_loss, banzhaf_loss, distillation_loss (`torch.FloatTensor` of shape `()`, *optional*):
            The parts of `loss`, see [`HBIAlignmentLossOutput`].
        logits_per_text (`torch.FloatTensor` of shape `(text_batch_size, video_batch_size)`):
            Fused similarity divided by the temperature; the retrieval score of a text against each video.
        logits_per_video (`torch.FloatTensor` of shape `(video_batch_size, text_batch_size)`):
            The transpose of `logits_per_text`.
        similarity_per_level (`tuple(torch.FloatTensor)` of length 3):
            S of Eq. 12 at each level, each `(text_batch_size, video_batch_size)`.
        text_features ([`HBITextFeatures`]): The texts' features.
        video_features ([`HBIVideoFeatures`]): The videos' features.
        text_embeds, video_embeds, text_model_output, vision_model_output: see [`HBIModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    contrastive_loss: torch.FloatTensor | None = None
    banzhaf_loss: torch.FloatTensor | None = None
    distillation_loss: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    logits_per_video: torch.FloatTensor | None = None
    similarity_per_level: tuple[torch.FloatTensor | None, ...] | None = None
    text_features: HBITextFeatures | None = None
    video_features: HBIVideoFeatures | None = None
    text_embeds: torch.FloatTensor | None = None
    video_embeds: torch.FloatTensor | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None

    def to_tuple(self) -> tuple:
        """As `CLIPOutput.to_tuple`: nested outputs become tuples too."""
        return _nested_to_tuple(self)


@dataclass
class HBIBanzhafEstimatorOutput(ModelOutput):
    r"""
    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is given):
            Mean squared error against `labels` over the valid cells.
        interaction (`torch.FloatTensor` of shape `(batch, words, frames)`):
            Estimated Banzhaf interaction of every (word, frame) pair; 0 on padded cells.
    """

    loss: torch.FloatTensor | None = None
    interaction: torch.FloatTensor | None = None


# ---------------------------------------------------------------------------------------------------------------------
# Functional building blocks
# ---------------------------------------------------------------------------------------------------------------------


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over the entries where `mask` is True; a slice with no True entry gives all zeros."""
    logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
    return torch.softmax(logits, dim=dim) * mask


def weighted_token_interaction(
    similarity: torch.Tensor,
    text_weight_logits: torch.Tensor,
    video_weight_logits: torch.Tensor,
    text_mask: torch.Tensor,
    video_mask: torch.Tensor,
    word_dim: int = -2,
    frame_dim: int = -1,
    fill_in_place: bool = False,
) -> torch.Tensor:
    r"""
    Weighted token-wise interaction, Eq. 12:
    `S = 1/2 [ sum_j w_t^j max_i a_ji + sum_i w_v^i max_j a_ji ]` with `w = softmax(MLP(tokens))` over valid tokens.

    Only valid tokens take part: padded words and frames are excluded from the maxima and from the softmaxes, so the
    same function is the characteristic function of a coalition (spec §2.2) when the masks select its players. A
    coalition without any word or without any frame scores 0.

    Args:
        similarity (`torch.Tensor` of shape `(..., words, frames)`): token similarities a; the words and frames may
            sit at other dimensions (`word_dim`, `frame_dim`), e.g. `(texts, words, frames, videos)` when scoring a
            gallery.
        text_weight_logits (`torch.Tensor` of shape `(..., words, 1)`): MLP_t logits, size 1 along `frame_dim`.
        video_weight_logits (`torch.Tensor` of shape `(..., 1, frames)`): MLP_v logits, size 1 along `word_dim`.
        text_mask (`torch.BoolTensor` of shape `(..., words, 1)`): the words present.
        video_mask (`torch.BoolTensor` of shape `(..., 1, frames)`): the frames present.
        word_dim (`int`, defaults to -2), frame_dim (`int`, defaults to -1): where the words and frames are.
        fill_in_place (`bool`, defaults to `False`): `similarity` is scratch that the caller drops: cells of absent
            players are overwritten in it instead of in a copy (no copy of the cells when scoring a gallery).
    All other dimensions broadcast against each other.

    Returns:
        `torch.Tensor`: the broadcast shape without `word_dim` and `frame_dim`, e.g. `(...)` or `(texts, videos)`.
    """
    for name, tensor, other_dim in (
        ("text_weight_logits", text_weight_logits, frame_dim),
        ("text_mask", text_mask, frame_dim),
        ("video_weight_logits", video_weight_logits, word_dim),
        ("video_mask", video_mask, word_dim),
    ):
        if tensor.dim() < 2 or tensor.shape[other_dim] != 1:
            raise ValueError(
                f"{name} must have size 1 along the other modality's dimension ({other_dim}), e.g. (..., words, 1) "
                f"for the words and (..., 1, frames) for the frames; got shape {tuple(tensor.shape)}"
            )
    text_weights = masked_softmax(text_weight_logits, text_mask, dim=word_dim)
    video_weights = masked_softmax(video_weight_logits, video_mask, dim=frame_dim)
    # a cell with an absent word or frame never wins a maximum (adding -inf is one cheap pass over the cells);
    # absent words and frames weigh 0 in the sums, and their maxima are zeroed before the product
    text_penalty = torch.zeros(text_mask.shape, dtype=similarity.dtype, device=similarity.device)
    text_penalty = text_penalty.masked_fill_(~text_mask, float("-inf"))
    video_penalty = torch.zeros(video_mask.shape, dtype=similarity.dtype, device=similarity.device)
    video_penalty = video_penalty.masked_fill_(~video_mask, float("-inf"))
    if fill_in_place:
        similarity = similarity.add_(text_penalty).add_(video_penalty)
    else:
        similarity = similarity + (text_penalty + video_penalty)
    any_frame, any_word = video_mask.any(frame_dim, keepdim=True), text_mask.any(word_dim, keepdim=True)
    best_frame_per_word = similarity.amax(dim=frame_dim, keepdim=True).masked_fill(~(text_mask & any_frame), 0.0)
    best_word_per_frame = similarity.amax(dim=word_dim, keepdim=True).masked_fill(~(video_mask & any_word), 0.0)
    text_to_video = (text_weights * best_frame_per_word).sum(dim=word_dim, keepdim=True)
    video_to_text = (video_weights * best_word_per_frame).sum(dim=frame_dim, keepdim=True)
    return (0.5 * (text_to_video + video_to_text)).squeeze((word_dim, frame_dim))


class HBIPairLayout:
    r"""
    How text items meet video items when scoring, and where their cells sit. Words are dimension 1 and frames
    dimension 2 in both layouts:

    * matched pairs (text i with video i): cells `(batch, words, frames)`;
    * every text with every video: cells `(texts, words, frames, videos)`, the videos last, so that every reduction
      over words or frames runs over an outer dimension, vectorised along the videos, and the word x frame products
      of a whole chunk are one matrix product written in place.

    Per-item tensors are broadcast to the layout without copies; per-pair tensors keep size 1 at the dimension of
    the modality they do not depend on (`(..., words, 1, ...)` per word, `(..., 1, frames, ...)` per frame).
    """

    WORD_DIM, FRAME_DIM = 1, 2

    def __init__(self, matched: bool):
        self.matched = matched

    def products(self, text: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        """Dot products of words `(n_text, words, dim)` and frames `(n_video, frames, dim)`: the layout's cells."""
        if self.matched:
            return text @ video.transpose(1, 2)
        (n_text, words, dim), (n_video, frames, _) = text.shape, video.shape
        frame_major = video.transpose(0, 1).reshape(frames * n_video, dim)
        return (text.reshape(n_text * words, dim) @ frame_major.T).view(n_text, words, frames, n_video)

    def text_side(self, tensor: torch.Tensor) -> torch.Tensor:
        """Per-word `(n_text, words)` -> `(batch, words, 1)` or `(texts, words, 1, 1)`."""
        return tensor.unsqueeze(-1) if self.matched else tensor[:, :, None, None]

    def video_side(self, tensor: torch.Tensor) -> torch.Tensor:
        """Per-frame `(n_video, frames)` -> `(batch, 1, frames)` or `(1, 1, frames, videos)`."""
        return tensor.unsqueeze(1) if self.matched else tensor.T.contiguous()[None, None]

    def word_matvec(self, matrices: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """Per-text `(n_text, words, words)` matrices times per-pair word vectors."""
        if self.matched:
            return matrices @ vectors
        return (matrices @ vectors.squeeze(2)).unsqueeze(2)

    def frame_matvec(self, matrices: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """Per-video symmetric `(n_video, frames, frames)` matrices times per-pair frame vectors."""
        if self.matched:
            return vectors @ matrices
        # (1, frames, frames', videos) x (texts, 1, frames', videos) summed over frames': elementwise along the videos
        return (matrices.permute(1, 2, 0).contiguous().unsqueeze(0) * vectors).sum(2).unsqueeze(1)


ALL_PAIRS = HBIPairLayout(matched=False)
MATCHED_PAIRS = HBIPairLayout(matched=True)


@torch.no_grad()
def dpc_knn_cluster(
    tokens: torch.Tensor,
    mask: torch.Tensor,
    num_clusters: int,
    k: int = 3,
    item_clusters: torch.Tensor | None = None,
    order: str = "temporal",
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""
    Density-peaks clustering with k-nearest neighbours (DPC-KNN, Eqs. 9-10), per sample, without gradient.

    * distance `d_ij = ||x_i - x_j|| / sqrt(dim)`;
    * local density `rho_i = exp(-mean_{j in kNN(i)} d_ij^2)`, the token itself among its k neighbours;
    * distance indicator `xi_i = min_{j: rho_j > rho_i} d_ij`, or `max_j d_ij` for the densest token;
    * the `num_clusters` tokens of highest `rho * xi` become centres; every token joins its nearest centre and each
      centre its own cluster. Ties in density go to the earlier token (a deterministic stand-in for the official
      code's 1e-6 random noise). With `order="temporal"` clusters are numbered in the order of their centres in the
      sequence, so merged tokens keep the temporal order; with `order="score"` by decreasing centre score, as the
      official code numbers them.

    Padded tokens are never centres and join no cluster. A sample with fewer valid tokens than its cluster count gets
    one cluster per valid token; the remaining clusters are marked invalid.

    Args:
        tokens (`torch.Tensor` of shape `(batch, tokens, dim)`)
        mask (`torch.BoolTensor` of shape `(batch, tokens)`)
        num_clusters (`int`): clusters per sample (the width of the output).
        k (`int`): neighbours of the density.
        item_clusters (`torch.LongTensor` of shape `(batch,)`, *optional*): clusters of each sample, at most
            `num_clusters` ([`HBIConfig.merged_token_counts`]); `num_clusters` for every sample if omitted.
        order (`str`, *optional*, defaults to `"temporal"`): `"temporal"` or `"score"` (see above); invalid clusters
            come last in both.

    Returns:
        assignment (`torch.LongTensor` of shape `(batch, tokens)`): cluster of each token, -1 for padding.
        cluster_mask (`torch.BoolTensor` of shape `(batch, num_clusters)`): which clusters exist.

    Raises:
        `ValueError`: an `order` other than `"temporal"` and `"score"`.
    """
    batch, length, dim = tokens.shape
    tokens = tokens.float()
    distance = torch.cdist(tokens, tokens) / math.sqrt(dim)
    pair_mask = mask.unsqueeze(2) & mask.unsqueeze(1)

    neighbour_distance = distance.masked_fill(~mask.unsqueeze(1), float("inf"))
    nearest = neighbour_distance.topk(min(k, length), dim=-1, largest=False).values
    is_neighbour = nearest.isfinite()
    mean_square = (nearest.where(is_neighbour, 0.0) ** 2).sum(-1) / is_neighbour.sum(-1).clamp_min(1)
    order_tiebreak = 1e-6 * (1.0 - torch.arange(length, device=tokens.device) / length)
    density = (torch.exp(-mean_square) + order_tiebreak).masked_fill(~mask, -1.0)

    denser = (density.unsqueeze(1) > density.unsqueeze(2)) & pair_mask
    max_distance = distance.masked_fill(~pair_mask, 0.0).flatten(1).amax(-1, keepdim=True)
    indicator = distance.masked_fill(~denser, float("inf")).amin(-1)
    indicator = torch.where(indicator.isinf(), max_distance, indicator)
    centre_score = (density * indicator).masked_fill(~mask, float("-inf"))

    num_centres = min(num_clusters, length)
    top = centre_score.topk(num_centres, dim=-1)
    is_centre = top.values.isfinite()
    if item_clusters is not None:
        is_centre &= torch.arange(num_centres, device=tokens.device) < item_clusters.unsqueeze(1)
    if order == "score":  # topk order: decreasing score, the valid centres first
        centres, cluster_mask = top.indices, is_centre
    elif order == "temporal":
        positions = torch.where(is_centre, top.indices, top.indices + length)
        by_position = positions.argsort(dim=-1)
        centres, cluster_mask = top.indices.gather(1, by_position), is_centre.gather(1, by_position)
    else:
        raise ValueError(f"order must be 'temporal' or 'score'; got {order!r}")

    centre_distance = distance.gather(2, centres.unsqueeze(1).expand(batch, length, num_centres))
    assignment = centre_distance.masked_fill(~cluster_mask.unsqueeze(1), float("inf")).argmin(-1)
    cluster_index = torch.arange(num_centres, device=tokens.device).expand(batch, num_centres)
    own = torch.where(cluster_mask, cluster_index, assignment.gather(1, centres))
    assignment = assignment.scatter(1, centres, own).masked_fill(~mask, -1)

    if num_clusters > num_centres:
        cluster_mask = F.pad(cluster_mask, (0, num_clusters - num_centres), value=False)
    return assignment, cluster_mask


# ---------------------------------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------------------------------


class HBITemporalTransformer(nn.Module):
    """Temporal transformer over frame embeddings (Sec. 3.1, official `seqTransf`): learned frame positions, CLIP-style
    layers, and a residual around the whole stack: `out = Transformer(x + pos) + x`. Padded frames are masked."""

    def __init__(self, config: HBIConfig):
        super().__init__()
        layer_config = CLIPTextConfig(
            hidden_size=config.projection_dim,
            intermediate_size=config.temporal_intermediate_size,
            num_attention_heads=config.temporal_num_attention_heads,
            num_hidden_layers=config.temporal_num_layers,
            layer_norm_eps=config.temporal_layer_norm_eps,
            hidden_act="quick_gelu",
        )
        # the layers dispatch through transformers' attention interface with the model's implementation
        # (`HBIPreTrainedModel.set_attn_implementation` keeps it in step). A config that names none (one built
        # outside a model) gets what a model would choose, SDPA: with no implementation the padding mask would be
        # dropped and padded frames attended to
        layer_config._attn_implementation = config._attn_implementation or "sdpa"
        self.config = layer_config
        self.frame_position_embeddings = nn.Embedding(config.temporal_max_position_embeddings, config.projection_dim)
        self.layers = nn.ModuleList([CLIPEncoderLayer(layer_config) for _ in range(config.temporal_num_layers)])

    def forward(self, frame_embeddings: torch.Tensor, video_mask: torch.Tensor) -> torch.Tensor:
        """
        Args:
            frame_embeddings (`torch.Tensor` of shape `(batch, frames, dim)`): projected CLIP [CLS] of each frame.
            video_mask (`torch.BoolTensor` of shape `(batch, frames)`): valid frames.

        Returns:
            `torch.Tensor` of shape `(batch, frames, dim)`: the frame tokens V_f^s.

        Raises:
            `ValueError`: more frames than the rows of the frame position table (`temporal_max_position_embeddings`).
        """
        frames, table = frame_embeddings.shape[1], self.frame_position_embeddings.num_embeddings
        if frames > table:
            raise ValueError(
                f"frame_embeddings has {frames} frames, more than the {table} rows of the frame position table "
                f"(temporal_max_position_embeddings={table}); sample at most {table} frames (num_frames)"
            )
        positions = torch.arange(frames, device=frame_embeddings.device)
        hidden = frame_embeddings + self.frame_position_embeddings(positions)
        # padded frames are never attended to, in the form the attention implementation takes (None: no padding)
        key_mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=video_mask)
        for layer in self.layers:
            hidden = layer(hidden, key_mask)
        return hidden + frame_embeddings


class HBITokenWeightMLP(nn.Module):
    """MLP_t / MLP_v of Eq. 12: `Linear(D, 2D) -> ReLU -> Linear(2D, 1)`, one logit per token."""

    def __init__(self, config: HBIConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.projection_dim, 2 * config.projection_dim)
        self.fc2 = nn.Linear(2 * config.projection_dim, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """`(batch, tokens, dim)` -> `(batch, tokens)`."""
        return self.fc2(F.relu(self.fc1(tokens))).squeeze(-1)


class HBIRepresentationReconstruction(nn.Module):
    r"""
    Representation reconstruction of HBI V2 (Eqs. 2-5), applied pairwise when a text meets a video:

    * `v^c = softmax(t_c . V^T) V` (Eq. 2): the video attention-pooled with the text's sentence embedding as query;
      `V' = gamma * V + (1 - gamma) * v^c` with `gamma = MLP(V - v^c)` (Eq. 3);
    * `t^c = softmax(v_c . T^T) T` with `v_c` the mean video token (Eq. 4); `T' = delta * T + (1 - delta) * t^c`
      with `delta = MLP(T - t^c)` (Eq. 5).

    The gates are linear (one unbounded scalar per token, so they can exceed 1 as the paper observes for delta),
    which keeps every reconstructed dot product and norm a combination of the single-modal token dot products:
    the cosine between reconstructed tokens is computed from the `(words, frames)` dot-product matrix of the pair and
    the per-item Gram matrices, without materialising reconstructed tokens per pair.
    """

    def __init__(self, config: HBIConfig):
        super().__init__()
        self.text_gate = nn.Linear(config.projection_dim, 1)
        self.video_gate = nn.Linear(config.projection_dim, 1)

    def gate_logits(self, tokens: torch.Tensor, modality: str) -> torch.Tensor:
        """`w . x_i` for every token (no bias): `(batch, tokens, dim)` -> `(batch, tokens)`."""
        gate = self.text_gate if modality == "text" else self.video_gate
        return tokens @ gate.weight.squeeze(0)

    def pair_cosine(
        self,
        text: "HBILevelInputs",
        video: "HBILevelInputs",
        layout: HBIPairLayout,
    ) -> torch.Tensor:
        """Cosine similarity of the reconstructed word and frame tokens of each pair: the layout's cells."""
        words, frames = layout.WORD_DIM, layout.FRAME_DIM
        text_mask, video_mask = layout.text_side(text.mask), layout.video_side(video.mask)
        dots = layout.products(text.tokens, video.tokens)
        frame_attention = masked_softmax(layout.products(text.query.unsqueeze(1), video.tokens), video_mask, frames)
        # t_j . v_c with v_c the mean valid frame token: the mean of the word's dot products over the valid frames
        frame_mean = (video_mask / video_mask.sum(frames, keepdim=True).clamp_min(1)).to(dots.dtype)
        word_attention = masked_softmax(
            torch.linalg.vecdot(dots, frame_mean, dim=frames).unsqueeze(frames), text_mask, words
        )

        # gates of Eqs. 3 and 5: MLP(x_i - pooled) = w . x_i + b - sum_k attention_k (w . x_k)
        video_gate, text_gate = layout.video_side(video.gate_logits), layout.text_side(text.gate_logits)
        gamma = video_gate + self.video_gate.bias - (frame_attention * video_gate).sum(frames, keepdim=True)
        delta = text_gate + self.text_gate.bias - (word_attention * text_gate).sum(words, keepdim=True)

        # With P_ji = t_j . v_i, A_j = t_j . v^c, B_i = t^c . v_i and C = t^c . v^c, the reconstructed dot product is
        # d_j g_i P_ji + d_j (1 - g_i) A_j + (1 - d_j) g_i B_i + (1 - d_j)(1 - g_i) C
        #   = d_j g_i (P_ji - A_j - B_i + C) + d_j (A_j - C) + g_i (B_i - C) + C,
        # evaluated with few passes over the cells and divided by both norms on the way.
        word_dot_pooled_video = torch.linalg.vecdot(dots, frame_attention, dim=frames).unsqueeze(frames)  # A
        pooled_text_dot_frame = torch.linalg.vecdot(dots, word_attention, dim=words).unsqueeze(words)  # B
        pooled_dot_pooled = (word_attention * word_dot_pooled_video).sum(words, keepdim=True)  # C
        word_offset = word_dot_pooled_video - pooled_dot_pooled
        frame_offset = pooled_text_dot_frame - pooled_dot_pooled

        video_own = layout.video_side(video.gram.diagonal(dim1=1, dim2=2))
        video_cross = layout.frame_matvec(video.gram, frame_attention)
        inverse_video_norm = self._mixture_inverse_norm(gamma, frame_attention, video_own, video_cross, frames)
        text_own = layout.text_side(text.gram.diagonal(dim1=1, dim2=2))
        text_cross = layout.word_matvec(text.gram, word_attention)
        inverse_text_norm = self._mixture_inverse_norm(delta, word_attention, text_own, text_cross, words)
        scaled_delta, scaled_gamma = delta * inverse_text_norm, gamma * inverse_video_norm

        # without autograd the products are scratch and become the cosines in place; backward still needs them
        cosine = dots.clone() if dots.requires_grad else dots
        cosine.sub_(word_dot_pooled_video).sub_(frame_offset).mul_(scaled_delta).mul_(scaled_gamma)
        cosine.addcmul_(
            torch.addcmul(pooled_dot_pooled * inverse_text_norm, scaled_delta, word_offset), inverse_video_norm
        )
        return cosine.addcmul_(inverse_text_norm, scaled_gamma * frame_offset)

    @staticmethod
    def _mixture_inverse_norm(
        gate: torch.Tensor, attention: torch.Tensor, own: torch.Tensor, cross: torch.Tensor, dim: int
    ) -> torch.Tensor:
        """`1 / ||g_i x_i + (1 - g_i) m||` with `m = sum_k attention_k x_k`, from the Gram matrix G of the tokens:
        `own_i = G_ii`, `cross_i = (G attention)_i`, `||m||^2 = attention . cross`; `dim` is the tokens' dimension.
        `||.||^2 = g^2 own + 2 g (1 - g) cross + (1 - g)^2 ||m||^2 = ||m||^2 + 2 g [e + g f / 2]` with
        `e = cross - ||m||^2`, `f = own - cross - e`."""
        pooled = (attention * cross).sum(dim, keepdim=True)
        excess = cross - pooled
        curvature = (own - cross).sub_(excess)
        sq_norm = torch.addcmul(pooled, gate, torch.addcmul(excess, gate, curvature, value=0.5), value=2.0)
        return sq_norm.clamp_min_(1e-12).rsqrt_()


@dataclass
class HBILevelInputs:
    """One modality at one level, everything pair-independent that scoring needs; `(batch, ...)` tensors."""

    tokens: torch.Tensor
    mask: torch.Tensor
    weight_logits: torch.Tensor
    query: torch.Tensor | None = None  # HBI V2, texts: the sentence embedding t_c of Eq. 2
    gate_logits: torch.Tensor | None = None  # HBI V2: the gates' logits without bias
    gram: torch.Tensor | None = None  # HBI V2: token dot products (batch, tokens, tokens)

    def extent(self) -> torch.Tensor:
        """How many leading token positions hold all of each item's valid tokens: `(batch,)`."""
        positions = torch.arange(1, self.mask.shape[1] + 1, device=self.mask.device)
        return (self.mask * positions).amax(1)

    def take(self, index: torch.Tensor, length: int) -> "HBILevelInputs":
        """The items at `index`, cut to their first `length` token positions (the positions cut off must be padding)."""
        return HBILevelInputs(
            tokens=self.tokens[index, :length],
            mask=self.mask[index, :length],
            weight_logits=self.weight_logits[index, :length],
            query=None if self.query is None else self.query[index],
            gate_logits=None if self.gate_logits is None else self.gate_logits[index, :length],
            gram=None if self.gram is None else self.gram[index, :length, :length],
        )


class HBILevel(nn.Module):
    """The per-level modules of the similarity: the token-weight MLPs of Eq. 12 and, for HBI V2, the reconstruction
    gates of Eqs. 2-5."""

    def __init__(self, config: HBIConfig):
        super().__init__()
        self.text_weight = HBITokenWeightMLP(config)
        self.video_weight = HBITokenWeightMLP(config)
        self.reconstruction = HBIRepresentationReconstruction(config) if config.representation_reconstruction else None

    def token_similarity(self, text: HBILevelInputs, video: HBILevelInputs, layout: HBIPairLayout) -> torch.Tensor:
        """Cosine similarity of every word and frame token of each pair: the layout's cells, `(batch, words, frames)`
        or `(texts, words, frames, videos)`."""
        if self.reconstruction is None:
            return layout.products(F.normalize(text.tokens, dim=-1), F.normalize(video.tokens, dim=-1))
        return self.reconstruction.pair_cosine(text, video, layout)

    def similarity(self, text: HBILevelInputs, video: HBILevelInputs, layout: HBIPairLayout) -> torch.Tensor:
        """S of Eq. 12 for each pair: `(n_text, n_video)` or `(batch,)`."""
        return weighted_token_interaction(
            self.token_similarity(text, video, layout),
            layout.text_side(text.weight_logits),
            layout.video_side(video.weight_logits),
            layout.text_side(text.mask),
            layout.video_side(video.mask),
            word_dim=layout.WORD_DIM,
            frame_dim=layout.FRAME_DIM,
            fill_in_place=True,
        )


class HBIMergeAttention(nn.Module):
    r"""Attention refinement of merged tokens (Eq. 11): `Softmax(Q K^T / sqrt(d_k) + W) V` with the merged tokens as
    queries, the pre-merge tokens as keys and values, and their log importance `s` as the additive bias W.
    Pre-LayerNorm (shared by queries and keys) and a residual on the queries, as in the official `TCBlock`."""

    def __init__(self, config: HBIConfig):
        super().__init__()
        dim = config.projection_dim
        self.num_heads = config.merge_num_attention_heads
        self.head_dim = dim // self.num_heads
        self.norm = nn.LayerNorm(dim)
        self.q_proj = nn.Linear(dim, dim)
        self.kv_proj = nn.Linear(dim, 2 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(
        self, merged: torch.Tensor, tokens: torch.Tensor, token_mask: torch.Tensor, token_scores: torch.Tensor
    ) -> torch.Tensor:
        """
        Args:
            merged (`(batch, clusters, dim)`), tokens (`(batch, tokens, dim)`), token_mask (`(batch, tokens)`),
            token_scores (`(batch, tokens)`): log importance s of each token.

        Returns:
            `(batch, clusters, dim)`.
        """
        batch, clusters, dim = merged.shape
        query = self.q_proj(self.norm(merged)).view(batch, clusters, self.num_heads, self.head_dim).transpose(1, 2)
        key, value = self.kv_proj(self.norm(tokens)).chunk(2, dim=-1)
        key = key.view(batch, -1, self.num_heads, self.head_dim).transpose(1, 2)
        value = value.view(batch, -1, self.num_heads, self.head_dim).transpose(1, 2)
        logits = query @ key.transpose(-1, -2) / math.sqrt(self.head_dim)
        logits = logits + token_scores.masked_fill(~token_mask, 0.0)[:, None, None, :]
        attention = masked_softmax(logits, token_mask[:, None, None, :])
        attended = (attention @ value).transpose(1, 2).reshape(batch, clusters, dim)
        return merged + self.out_proj(attended)


class HBITokenMerge(nn.Module):
    r"""
    Token merge module (Sec. 3.2.2, Fig. 6), one step up the hierarchy (entity -> action or action -> event):

    1. temporal enhancement `x <- LayerNorm(x + Conv1d_k3(x))` along the token axis;
    2. token importance `s = MLP_w(x)`, merge weight `W = exp(s)`;
    3. DPC-KNN clustering of `x` ([`dpc_knn_cluster`], no gradient);
    4. each cluster's token is the `W`-weighted mean of its members;
    5. attention refinement of Eq. 11 ([`HBIMergeAttention`]).
    """

    def __init__(self, config: HBIConfig):
        super().__init__()
        dim = config.projection_dim
        self.k = config.dpc_knn_k
        self.merged_token_order = config.merged_token_order
        self.conv = nn.Conv1d(dim, dim, kernel_size=3, padding=1, bias=False)
        self.norm = nn.LayerNorm(dim)
        self.score = nn.Linear(dim, 1)
        self.refinement = HBIMergeAttention(config)

    def forward(
        self, tokens: torch.Tensor, mask: torch.Tensor, num_clusters: int, item_clusters: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Args:
            tokens (`torch.Tensor` of shape `(batch, tokens, dim)`), mask (`torch.BoolTensor` of shape
            `(batch, tokens)`), num_clusters (`int`), item_clusters (`torch.LongTensor` of shape `(batch,)`,
            *optional*): see [`dpc_knn_cluster`].

        Returns:
            merged (`(batch, num_clusters, dim)`, zeros for invalid clusters), merged_mask
            (`(batch, num_clusters)`), assignment (`(batch, tokens)`, -1 for padding).
        """
        tokens = tokens * mask.unsqueeze(-1)
        enhanced = self.norm(tokens + self.conv(tokens.transpose(1, 2)).transpose(1, 2))
        scores = self.score(enhanced).squeeze(-1)
        assignment, merged_mask = dpc_knn_cluster(
            enhanced, mask, num_clusters, self.k, item_clusters, self.merged_token_order
        )
        membership = assignment.unsqueeze(1) == torch.arange(num_clusters, device=tokens.device)[None, :, None]
        cluster_weights = masked_softmax(scores.unsqueeze(1).expand_as(membership), membership)
        merged = cluster_weights.to(enhanced.dtype) @ enhanced
        merged = self.refinement(merged, enhanced, mask, scores)
        return merged * merged_mask.unsqueeze(-1), merged_mask, assignment


def _top_three(lines: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The best, second and third values along `dim`, repeats counted (`[3, 3, 1]` gives 3, 3, 1), the lowest float
    where a line has fewer values. Maxima and tie counts only: no sort, and no index, whose branchy kernels cost
    several times as much here."""
    lowest = torch.finfo(lines.dtype).min
    best = lines.amax(dim)
    at_best = lines >= best.unsqueeze(dim)
    below_best = torch.where(at_best, lowest, lines)
    runner_up = below_best.amax(dim)
    at_runner_up = below_best >= runner_up.unsqueeze(dim)
    next_value = torch.where(at_runner_up, lowest, below_best).amax(dim)
    best_count = at_best.sum(dim)
    top_count = best_count + at_runner_up.sum(dim)
    second = torch.where(best_count >= 2, best, runner_up)
    third = torch.where(best_count >= 3, best, torch.where(top_count >= 3, runner_up, next_value))
    return best, second, third


def _line_statistics(
    similarity: torch.Tensor, cell_mask: torch.Tensor, ranked: torch.Tensor, dim: int
) -> torch.Tensor:
    """[`ROW_COLUMN_STATISTICS`] of the lines along `dim`, stacked last. `ranked` is `similarity` with the lowest
    float on padded cells, which then never make the top three."""
    valid = cell_mask.sum(dim)
    best = []
    for place, value in enumerate(_top_three(ranked, dim)):
        # a line with fewer valid cells than `place + 1` repeats its lowest one (a line without any: 0)
        best.append(torch.where(valid > place, value, best[-1] if best else 0.0))
    mean = similarity.sum(dim) / valid.clamp(min=1)
    return torch.stack([*best, mean], dim=-1)


def _frame_major_line_statistics(
    similarity: torch.Tensor, cell_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """[`banzhaf_line_statistics`] of a frame-major matrix `(batch, frames, words)` (0 on padded cells): the layout
    in which both reductions vectorise along the longer word axis. Returns the words' `(batch, words, 4)` and the
    frames' `(batch, frames, 4)`."""
    ranked = torch.where(cell_mask, similarity, torch.finfo(similarity.dtype).min)
    return _line_statistics(similarity, cell_mask, ranked, dim=1), _line_statistics(similarity, cell_mask, ranked, 2)


def banzhaf_line_statistics(similarity: torch.Tensor, cell_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""
    The best, second and third valid similarity and the mean of the valid similarities of every word's row and every
    frame's column ([`ROW_COLUMN_STATISTICS`]). The top three count repeated values (two equal best cells make the
    second best equal to the best); a line with fewer than three valid cells repeats its lowest one, a line without
    any gives zeros.

    Args:
        similarity (`torch.Tensor` of shape `(batch, words, frames)`): similarities, 0 on padded cells.
        cell_mask (`torch.BoolTensor` of shape `(batch, words, frames)`)

    Returns:
        rows (`torch.Tensor` of shape `(batch, words, 4)`) and columns (`torch.Tensor` of shape `(batch, frames, 4)`).
    """
    return _frame_major_line_statistics(similarity.mT.contiguous(), cell_mask.mT.contiguous())


def banzhaf_cell_features(similarity: torch.Tensor, cell_mask: torch.Tensor) -> torch.Tensor:
    r"""
    Where each cell stands in its row (word) and column (frame): the `"row_column"` input of the Banzhaf estimator.

    In the WTI game a (word, frame) pair cooperates when the frame is among the word's best frames and the word among
    the frame's best words in the coalitions that contain both; a coalition keeps each other player with probability
    1/2, so what decides the interaction is how far the cell is from the few best cells of its row and column. Per
    valid cell `a_ji`: `a_ji`, then `a_ji` minus each of [`banzhaf_line_statistics`] of its row (best, second, third,
    mean over the word's frames), then minus each of those of its column (over the frame's words).

    Args:
        similarity (`torch.Tensor` of shape `(batch, words, frames)`): similarities, 0 on padded cells.
        cell_mask (`torch.BoolTensor` of shape `(batch, words, frames)`)

    Returns:
        `torch.Tensor` of shape `(batch, 9, words, frames)`, 0 on padded cells.
    """
    rows, columns = banzhaf_line_statistics(similarity, cell_mask)
    channels = [
        similarity.unsqueeze(1),
        similarity.unsqueeze(1) - rows.permute(0, 2, 1).unsqueeze(-1),
        similarity.unsqueeze(1) - columns.permute(0, 2, 1).unsqueeze(-2),
    ]
    return torch.cat(channels, dim=1) * cell_mask.unsqueeze(1)


class HBIBanzhafHead(nn.Module):
    r"""
    Conv -> self-attention -> conv network over a `(words, frames)` similarity matrix (spec §2.3-2.4): the prediction
    head R of each level and the architecture of the Banzhaf-interaction estimator.

    `x = ReLU(Conv_{C->H}(input))`, cells flattened to `(words * frames, H)`, `x = x + softmax(x Q (x K)^T) x V`
    (single head, no 1/sqrt(d) scaling, as in the official module; skipped with `use_attention=False`),
    `out = Conv_{H->1}(x)`, both convolutions `kernel_size` square (3 in the paper). The input is the similarity
    (C = 1, the paper's) or [`banzhaf_cell_features`] (C = 9, `input_features="row_column"`). Padded cells never
    reach a valid cell: they are zeroed before every convolution that reads neighbours and never attended to.
    """

    def __init__(self, config: HBIBanzhafEstimatorConfig):
        super().__init__()
        hidden, kernel = config.hidden_size, config.kernel_size
        self.input_features = config.input_features
        self.use_attention = config.use_attention
        self.kernel_size = kernel
        channels = ESTIMATOR_INPUT_CHANNELS[config.input_features]
        self.encoder = nn.Conv2d(channels, hidden, kernel_size=kernel, padding=kernel // 2)
        if config.use_attention:
            self.query = nn.Parameter(torch.empty(hidden, hidden))
            self.key = nn.Parameter(torch.empty(hidden, hidden))
            self.value = nn.Parameter(torch.empty(hidden, hidden))
        self.decoder = nn.Conv2d(hidden, 1, kernel_size=kernel, padding=kernel // 2)

    def forward(self, similarity: torch.Tensor, cell_mask: torch.Tensor) -> torch.Tensor:
        """
        Args:
            similarity (`torch.Tensor` of shape `(batch, words, frames)`)
            cell_mask (`torch.BoolTensor` of shape `(batch, words, frames)`)

        Returns:
            `torch.Tensor` of shape `(batch, words, frames)`, 0 on padded cells.
        """
        similarity = torch.where(cell_mask, similarity, 0.0)
        if self.input_features == "row_column" and self.kernel_size == 1:
            # each cell is read alone (and attention ignores the order of the cells), so the network runs on the
            # frame-major matrix, where its reductions and broadcasts vectorise along the longer word axis
            frame_major = self._cell_network(similarity.mT.contiguous(), cell_mask.mT.contiguous())
            return torch.where(cell_mask, frame_major.mT, 0.0)
        hidden = self._zero_padded(F.relu(self._encode(similarity, cell_mask), inplace=True), cell_mask)
        if self.use_attention:
            hidden = self._zero_padded(self._attend(hidden, cell_mask), cell_mask)
        return torch.where(cell_mask, self._decode(hidden), 0.0)

    def _cell_network(self, similarity: torch.Tensor, cell_mask: torch.Tensor) -> torch.Tensor:
        """The 1x1 `"row_column"` network on a frame-major matrix `(batch, frames, words)`, 0 on padded cells;
        returns `(batch, frames, words)` with arbitrary values on padded cells."""
        hidden = F.relu(self._encode_line_statistics(similarity, cell_mask), inplace=True)
        if self.use_attention:
            hidden = self._attend(hidden, cell_mask)
        return self._decode(hidden)

    def _zero_padded(self, hidden: torch.Tensor, cell_mask: torch.Tensor) -> torch.Tensor:
        """Zero the padded cells of `(batch, hidden, words, frames)` where a `kernel_size` > 1 convolution follows
        (it reads neighbours); a 1x1 one reads each cell alone, and the output is masked at the end."""
        return hidden * cell_mask.unsqueeze(1) if self.kernel_size > 1 else hidden

    def _encode(self, similarity: torch.Tensor, cell_mask: torch.Tensor) -> torch.Tensor:
        """The encoding convolution: `(batch, words, frames)` -> `(batch, hidden, words, frames)`."""
        if self.input_features == "similarity":
            return self.encoder(similarity.unsqueeze(1))
        return self.encoder(banzhaf_cell_features(similarity, cell_mask))

    def _attend(self, hidden: torch.Tensor, cell_mask: torch.Tensor) -> torch.Tensor:
        """`x + softmax(x Q (x K)^T) x V` over the cells of each matrix `(batch, hidden, height, width)`, padded cells
        never attended to."""
        batch, channels, height, width = hidden.shape
        cells = hidden.flatten(2).transpose(1, 2)
        attention = masked_softmax(
            (cells @ self.query) @ (cells @ self.key).transpose(1, 2), cell_mask.flatten(1)[:, None, :]
        )
        cells = cells + attention @ (cells @ self.value)
        return cells.transpose(1, 2).reshape(batch, channels, height, width)

    def _decode(self, hidden: torch.Tensor) -> torch.Tensor:
        """The decoding convolution: `(batch, hidden, height, width)` -> `(batch, height, width)` (a 1x1 one as a
        product, which is faster on CPU than the convolution kernels at these channel counts)."""
        if self.kernel_size > 1:
            return self.decoder(hidden).squeeze(1)
        batch, _, height, width = hidden.shape
        weight = self.decoder.weight.flatten(1).expand(batch, -1, -1)
        return torch.baddbmm(self.decoder.bias.view(1, 1, 1), weight, hidden.flatten(2)).view(batch, height, width)

    def _encode_line_statistics(self, similarity: torch.Tensor, cell_mask: torch.Tensor) -> torch.Tensor:
        r"""
        The 1x1 encoding convolution over [`banzhaf_cell_features`] without building them: every channel but the
        first is the similarity minus a statistic of the cell's row or column, so with the weight `W = [w_a, W_r,
        W_c]` the encoding is `(w_a + sum W_r + sum W_c) a_ji - W_r r_j - W_c c_i + b`: one small product per line
        instead of per cell. Padded cells get finite values that the caller masks.

        Args:
            similarity (`torch.Tensor` of shape `(batch, frames, words)`): frame-major, 0 on padded cells.
            cell_mask (`torch.BoolTensor` of shape `(batch, frames, words)`)

        Returns:
            `torch.Tensor` of shape `(batch, hidden, frames, words)`.
        """
        per_word_statistics, per_frame_statistics = _frame_major_line_statistics(similarity, cell_mask)
        weight = self.encoder.weight.flatten(1)
        row_weight, column_weight = weight[:, 1:].split(len(ROW_COLUMN_STATISTICS), dim=1)
        batch = similarity.shape[0]
        # (batch, hidden, words) with the bias, and (batch, hidden, frames)
        per_word = torch.baddbmm(
            self.encoder.bias.view(1, -1, 1), row_weight.expand(batch, -1, -1), per_word_statistics.mT, alpha=-1
        )
        per_frame = torch.bmm(column_weight.expand(batch, -1, -1), per_frame_statistics.mT)
        hidden = per_word.unsqueeze(-2) - per_frame.unsqueeze(-1)
        return hidden.addcmul_(similarity.unsqueeze(1), weight.sum(1).view(1, -1, 1, 1))


def _player_counts(
    text_mask: torch.Tensor | None, video_mask: torch.Tensor | None, similarity: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Valid words and valid frames of each `(batch, words, frames)` matrix, `(batch,)` each; every word (frame) where
    its mask is not given."""
    batch, words, frames = similarity.shape

    def count(mask: torch.Tensor | None, length: int) -> torch.Tensor:
        return mask.bool().sum(-1) if mask is not None else torch.full((batch,), length, device=similarity.device)

    return count(text_mask, words), count(video_mask, frames)


def _cell_mask(text_mask: torch.Tensor | None, video_mask: torch.Tensor | None, similarity: torch.Tensor):
    batch, words, frames = similarity.shape
    if text_mask is None and video_mask is None:
        return torch.ones(batch, words, frames, dtype=torch.bool, device=similarity.device)
    if text_mask is None:
        text_mask = torch.ones(batch, words, dtype=torch.bool, device=similarity.device)
    if video_mask is None:
        video_mask = torch.ones(batch, frames, dtype=torch.bool, device=similarity.device)
    return text_mask.bool().unsqueeze(-1) & video_mask.bool().unsqueeze(-2)


# ---------------------------------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------------------------------


def contrastive_loss(logits_per_text: torch.Tensor) -> torch.Tensor:
    r"""Symmetric InfoNCE of Eq. 13 over a square `(texts, videos)` logit matrix whose matched pairs are on the
    diagonal: the mean of the text->video and video->text cross-entropies."""
    targets = torch.arange(logits_per_text.shape[0], device=logits_per_text.device)
    return 0.5 * (F.cross_entropy(logits_per_text, targets) + F.cross_entropy(logits_per_text.t(), targets))


def _distribution_kl(
    target_logits: torch.Tensor, student_logits: torch.Tensor, mask: torch.Tensor, dim: int
) -> torch.Tensor:
    """KL(softmax(target) || softmax(student)) along `dim` over the masked entries, averaged over the slices that have
    at least one entry."""
    target = masked_softmax(target_logits, mask, dim=dim)
    student_log = torch.log_softmax(student_logits.masked_fill(~mask, torch.finfo(student_logits.dtype).min), dim=dim)
    per_slice = (torch.xlogy(target, target) - target * student_log.masked_fill(~mask, 0.0)).sum(dim)
    has_entries = mask.any(dim)
    return per_slice[has_entries].mean() if has_entries.any() else per_slice.sum() * 0.0


def _elementwise_kl_sum(
    target_logits: torch.Tensor, student_logits: torch.Tensor, mask: torch.Tensor, dim: int
) -> torch.Tensor:
    """The sum over every masked entry of `p log(p / q)`, with `p = softmax(target)` and `q = softmax(student)` along
    `dim` over the masked entries only: `F.kl_div(log q, p, reduction="sum")` without the unmasked entries. The target
    is not detached."""
    target = masked_softmax(target_logits, mask, dim=dim)
    student_log = torch.log_softmax(student_logits.masked_fill(~mask, torch.finfo(student_logits.dtype).min), dim=dim)
    return (torch.xlogy(target, target) - target * student_log.masked_fill(~mask, 0.0)).sum()


def _check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}; got {objective!r}")


def banzhaf_interaction_loss(
    prediction: torch.Tensor,
    interaction: torch.Tensor,
    cell_mask: torch.Tensor,
    objective: str = "official",
    cells_per_item: int | None = None,
) -> torch.Tensor:
    r"""
    L_I of Eq. 8: `KL(D_v2t^I || D_v2t^R) + KL(D_t2v^I || D_t2v^R)`, the prediction head's distributions R matched to
    the teacher's Banzhaf interactions I, with `D_v2t` the softmax over words for each frame and `D_t2v` the softmax
    over frames for each word (not over the batch, the official code's `.T` bug). The teacher is the target
    distribution, as in the official code. Padded cells are in no softmax and contribute 0 (the official code lets
    them in).

    Reduction ([`HBIConfig`] `objective`):
    `"official"`: the per-cell terms of both directions summed over the valid cells and divided by
    `batch * cells_per_item`, as the official `F.kl_div(..., reduction="mean")` over `batch x words x frames`
    tensors padded to `cells_per_item` cells per item;
    `"sharpened"`: each KL summed within its distribution and averaged over the distributions (words for the
    over-frames term, frames for the over-words term) that have valid cells; `valid_frames` times the official
    over-frames term plus `valid_words` times the official over-words term.

    Args:
        prediction, interaction (`torch.Tensor` of shape `(batch, words, frames)`), cell_mask (same shape, bool).
        objective (`str`, defaults to `"official"`): `"official"` or `"sharpened"`.
        cells_per_item (`int`, *optional*): the official mean's cells per item, e.g. the level's
            [`HBIConfig.level_shape`] product; defaults to `words * frames` of the given tensors.

    Returns:
        `torch.Tensor` of shape `()`.
    """
    _check_objective(objective)
    if objective == "sharpened":
        over_words = _distribution_kl(interaction, prediction, cell_mask, dim=-2)
        over_frames = _distribution_kl(interaction, prediction, cell_mask, dim=-1)
        return over_words + over_frames
    batch, words, frames = prediction.shape
    cells = batch * (cells_per_item if cells_per_item is not None else words * frames)
    over_frames = _elementwise_kl_sum(interaction, prediction, cell_mask, dim=-1)
    over_words = _elementwise_kl_sum(interaction, prediction, cell_mask, dim=-2)
    return (over_frames + over_words) / cells


def self_distillation_loss(
    student_scores: torch.Tensor, teacher_scores: torch.Tensor, objective: str = "official"
) -> torch.Tensor:
    r"""
    One term of Eq. 15: `KL(D_v2t^teacher || D_v2t^student) + KL(D_t2v^teacher || D_t2v^student)` over the
    `(texts, videos)` scores of a batch, row-wise and column-wise ([`HBIConfig`] `objective`):

    `"official"` (give the raw similarities S, temperature 1): each direction is the mean over all `texts x videos`
    elements (the official `F.kl_div(..., reduction="mean")`), and the teacher is not detached: the entity level
    also moves towards the coarser levels, as in the official code.
    `"sharpened"` (give the logits S / tau): each KL summed within its row (column) and averaged over rows
    (columns), the teacher detached, so the coarser levels learn from the entity level and not the other way round.

    Returns:
        `torch.Tensor` of shape `()`.
    """
    _check_objective(objective)
    everywhere = torch.ones_like(student_scores, dtype=torch.bool)
    if objective == "sharpened":
        teacher_scores = teacher_scores.detach()
        return _distribution_kl(teacher_scores, student_scores, everywhere, dim=-1) + _distribution_kl(
            teacher_scores, student_scores, everywhere, dim=-2
        )
    rows = _elementwise_kl_sum(teacher_scores, student_scores, everywhere, dim=-1)
    columns = _elementwise_kl_sum(teacher_scores, student_scores, everywhere, dim=-2)
    return (rows + columns) / student_scores.numel()


def gather_world_size() -> int:
    """
    Number of processes whose features the alignment loss gathers: the size of the `torch.distributed` process
    group, 1 without one.

    Raises:
        `RuntimeError`: a process group of several processes exists but accelerate (hence the `Trainer`) runs this
            process as a single one. The models would then not be synchronised (no `DistributedDataParallel`): each
            process would train its own copy on its batch plus the others' batches as extra negatives. This is what
            `torchrun` on a machine without GPUs gives unless the script gets `--use_cpu`.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    world_size = dist.get_world_size()
    if world_size > 1 and PartialState._shared_state and PartialState().num_processes != world_size:
        raise RuntimeError(
            f"torch.distributed has {world_size} processes, but accelerate (and so the Trainer) runs this one as "
            f"{PartialState().num_processes} process ({PartialState().distributed_type}): the models would not be "
            "synchronised and each would train on every batch. On a machine without GPUs pass --use_cpu "
            "(TrainingArguments(use_cpu=True)) to the script that torchrun / accelerate launch starts; see "
            "docs/training.md"
        )
    return world_size


CLIP_VOCAB_SIZE = 49408
"""OpenAI CLIP's vocabulary (`hbi_hf.data.build_clip_tokenizer`): a text tower with another vocabulary gets no default
processor."""


def _save_loading_code(model: PreTrainedModel, save_directory: str | os.PathLike, auto_model_class: str) -> None:
    """Copy this file and `configuration_hbi.py` beside a saved model and point `auto_map["AutoModel"]` at
    `auto_model_class`, so that the folder loads without the package: `AutoModel.from_pretrained(folder,
    trust_remote_code=True)`. (`AutoConfig` is mapped by the config itself, see `hbi_hf/__init__.py`.) Call before
    the config is written."""
    model.config.auto_map = {**(getattr(model.config, "auto_map", None) or {}), "AutoModel": auto_model_class}
    os.makedirs(save_directory, exist_ok=True)
    custom_object_save(model, save_directory)


def default_processor(config: HBIConfig):
    """
    The processor a model built with `config` reads its inputs with: the HBI processor with OpenAI's CLIP tokenizer
    (built offline) padding to `max_words`, and an [`HBIVideoProcessor`] sampling `num_frames` frames at the vision
    tower's image size. This is the processor the training scripts build.

    Returns:
        `HBIProcessor`, or `None` when the text tower does not have CLIP's vocabulary ([`CLIP_VOCAB_SIZE`] ids) or the
        package is not installed (this file loaded as remote code).
    """
    if config.text_config.vocab_size != CLIP_VOCAB_SIZE:
        return None
    try:  # absolute import: this file is also copied beside saved models and loaded without the package
        from hbi_hf.retrieval_data import build_retrieval_processor
    except ImportError:
        return None
    return build_retrieval_processor(config)


class _ScaleGradient(torch.autograd.Function):
    """Identity whose backward multiplies the gradient by `factor`."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.factor, None


def gather_with_local_grad(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """
    Concatenate `tensor` `(local_batch, ...)` from every process along the batch axis ([`gather_world_size`]); only
    this process's slice keeps its gradient. Returns the global tensor and the offset of the local slice. Batches may
    differ in size. Without a process group (or with one process) the tensor is returned unchanged.

    Every process computes the loss of the whole global batch, but its gradient reaches only its own slice; the
    slice's gradient is multiplied by the number of processes, so that the average `DistributedDataParallel` (and
    FSDP, DeepSpeed) takes over processes is the gradient of the global-batch loss, as one process with the whole
    batch would compute it.

    Raises:
        `RuntimeError`: see [`gather_world_size`].
    """
    world_size = gather_world_size()
    if world_size == 1:
        return tensor, 0
    rank = dist.get_rank()
    local_size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(local_size) for _ in range(world_size)]
    dist.all_gather(sizes, local_size)
    sizes = [int(size) for size in sizes]
    payload = tensor.detach()
    if payload.dtype == torch.bool:
        payload = payload.to(torch.uint8)
    payload = F.pad(payload, (0,) * (2 * (payload.dim() - 1)) + (0, max(sizes) - tensor.shape[0])).contiguous()
    gathered = [torch.empty_like(payload) for _ in range(world_size)]
    dist.all_gather(gathered, payload)
    parts = [part[:size].to(tensor.dtype) for part, size in zip(gathered, sizes)]
    parts[rank] = _ScaleGradient.apply(tensor, float(world_size)) if tensor.requires_grad else tensor
    return torch.cat(parts), sum(sizes[:rank])


# ---------------------------------------------------------------------------------------------------------------------
# Pretrained models
# ---------------------------------------------------------------------------------------------------------------------


class HBIPreTrainedModel(PreTrainedModel):
    config: HBIConfig
    config_class = HBIConfig
    base_model_prefix = "hbi"
    main_input_name = "input_ids"
    input_modalities = ("video", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["CLIPEncoderLayer", "CLIPTextEmbeddings", "CLIPVisionEmbeddings"]
    # `attn_implementation` (eager, sdpa, flash attention, flex attention, a kernel) selects the attention of the CLIP
    # towers and of the temporal transformer, which dispatch through transformers' attention interface as CLIP does.
    # The other attentions have one implementation each, whatever is requested: the merge refinement of Eq. 11 (a
    # softmax with a per-key additive bias that flash kernels cannot take), the Banzhaf heads and estimator, and the
    # caption decoder (`torch.nn.functional.scaled_dot_product_attention`).
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        # transformers guesses from the module source, and HBI's merge attention (one implementation, see above) would
        # make it refuse: the towers and the temporal transformer read the implementation from their configs
        return True

    @property
    def is_gradient_checkpointing(self) -> bool:
        """`is_activation_checkpointing`, under the name PEFT (0.21) reads when it wraps a model: transformers 5
        deprecated this name with a `FutureWarning`, so every `get_peft_model` / `PeftModel.from_pretrained` of an HBI
        model warned."""
        return self.is_activation_checkpointing

    def set_attn_implementation(self, attn_implementation: str | dict, allow_all_kernels: bool = False) -> None:
        """Set the attention implementation of the CLIP towers (through the `text_config` / `vision_config`
        sub-configs, which the towers share: a `dict` can give each its own) and of the temporal transformer (the
        model's own implementation), as `PreTrainedModel.set_attn_implementation` does."""
        super().set_attn_implementation(attn_implementation, allow_all_kernels=allow_all_kernels)
        for module in self.modules():
            if isinstance(module, HBITemporalTransformer):
                module.config._attn_implementation = self.config._attn_implementation

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, HBIRepresentationReconstruction):
            for gate in (module.text_gate, module.video_gate):
                init.normal_(gate.weight, mean=0.0, std=self.config.initializer_range)
                init.ones_(gate.bias)
        elif isinstance(module, HBIBanzhafHead) and module.use_attention:
            gain = self.config.estimator_config.initializer_gain
            for matrix in (module.query, module.key, module.value):
                init.xavier_uniform_(matrix, gain=gain)

    def save_pretrained(self, save_directory: str | os.PathLike, *args, processor=None, **kwargs) -> None:
        r"""
        `PreTrainedModel.save_pretrained`, so that the folder is complete for inference:

        * **the processor**: `processor` when given, otherwise [`default_processor`] (the CLIP tokenizer and the video
          processor matching this config's `max_words`, `num_frames` and image size) unless the folder already holds
          a `processor_config.json`, which is left as it is. `AutoProcessor.from_pretrained(folder)` and the
          `hbi-hf` commands then read the model's inputs from the folder. A text tower without CLIP's vocabulary
          gets no default processor (a warning says so).
        * **the modeling code** (`modeling_hbi.py`, `configuration_hbi.py`) and `auto_map`, so that
          `AutoModel.from_pretrained(folder, trust_remote_code=True)` gives an [`HBIModel`] without `import hbi_hf`.

        Args:
            save_directory (`str` or `os.PathLike`): the folder (created if needed).
            processor (`HBIProcessor`, *optional*): the processor to save with the model.
            args, kwargs: `PreTrainedModel.save_pretrained`'s (`is_main_process`, ...). To upload, use
                `model.push_to_hub(repo_id)` or `hbi_hf.hub.push_to_hub` (model, processor and card in one commit):
                `save_pretrained(..., push_to_hub=True)` uploads only the files it changed itself, which leaves out
                the processor and the code written here.
        """
        if kwargs.get("is_main_process", True):
            _save_loading_code(self, save_directory, "modeling_hbi.HBIModel")
            if processor is None and not os.path.isfile(os.path.join(save_directory, "processor_config.json")):
                processor = default_processor(self.config)
                if processor is None:
                    logger.warning(
                        "%s: no processor saved (the text tower's %d-token vocabulary is not CLIP's): save yours with "
                        "processor.save_pretrained(%r) or model.save_pretrained(..., processor=processor)",
                        save_directory,
                        self.config.text_config.vocab_size,
                        str(save_directory),
                    )
            if processor is not None:
                processor.save_pretrained(save_directory)
        super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def from_clip(cls, clip_name_or_path: str = "openai/clip-vit-base-patch32", **config_overrides):
        r"""
        Build an HBI model around a pretrained CLIP (Hub id or local folder), initialising the temporal transformer
        from the first CLIP text layers and the frame positions from CLIP's text positions, as the official code
        does. With `estimator_name_or_path` in the config, the Banzhaf teacher is loaded from it. `save_pretrained`
        then writes the model and the processor for its `num_frames` / `max_words` in one call.

        Args:
            clip_name_or_path (`str`, *optional*, defaults to `"openai/clip-vit-base-patch32"`): recorded in
                `config.clip_name_or_path` (a model card's `base_model`).
            config_overrides: any [`HBIConfig`] field, e.g. `num_frames=64, representation_reconstruction=False`.
        """
        estimator_path = config_overrides.get("estimator_name_or_path")
        if estimator_path is not None:
            config_overrides.setdefault("banzhaf_teacher", "estimator")
        if config_overrides.get("banzhaf_teacher") == "estimator" and estimator_path is None:
            raise ValueError(
                "banzhaf_teacher='estimator' needs estimator_name_or_path (a trained HBIBanzhafEstimator, e.g. from "
                "scripts/train_estimator.py); or use banzhaf_teacher='exact'"
            )
        clip = CLIPModel.from_pretrained(clip_name_or_path)
        clip_config = clip.config
        if estimator_path is not None and "estimator_config" not in config_overrides:
            # the teacher and the heads R take the saved estimator's architecture
            config_overrides["estimator_config"] = HBIBanzhafEstimatorConfig.from_pretrained(estimator_path).to_dict()
        # any CLIP size: the temporal transformer takes the shape of its text layers unless overridden
        config = HBIConfig.from_clip_config(clip_config, clip_name_or_path=str(clip_name_or_path), **config_overrides)
        model = cls(config)
        hbi = model.base_model
        hbi.clip.load_state_dict(clip.state_dict())
        hbi.initialize_temporal_from_clip()
        if hasattr(model, "alignment") and config.estimator_name_or_path is not None:
            model.load_banzhaf_teacher(config.estimator_name_or_path)
        return model

    @classmethod
    def from_pretrained_encoder(cls, pretrained_model_name_or_path: str | os.PathLike, **config_overrides):
        r"""
        A new model of this class that starts from the encoder of a saved HBI checkpoint of any task: the
        checkpoint is loaded with its own class, then every tensor this model shares with it (the encoder `hbi.*`,
        and the Banzhaf heads and teacher `alignment.*` when both have them) is copied; this class's own head (e.g.
        the answer classifier of [`HBIForVideoQA`]) keeps its fresh initialisation, which is what starting a new
        task means, so no missing-weights report is printed. (`from_pretrained` on another task's checkpoint loads
        the same tensors, but reports the new head as missing weights.)

        Args:
            pretrained_model_name_or_path (`str` or `os.PathLike`): a folder or Hub id written by `save_pretrained`.
            config_overrides: [`HBIConfig`] fields to change, e.g. the answer vocabulary (`id2label`, `label2id`).

        Raises:
            `ValueError`: the checkpoint is not an HBI model of a known class, or its encoder does not have this
                model's shapes.
        """
        source_config = HBIConfig.from_pretrained(pretrained_model_name_or_path)
        architecture = (source_config.architectures or ["HBIModel"])[0]
        source_classes = {c.__name__: c for c in (HBIModel, HBIForRetrieval, HBIForVideoQA, HBIForCaptioning)}
        if architecture not in source_classes:
            raise ValueError(
                f"{pretrained_model_name_or_path}: expected a saved HBI model ({', '.join(source_classes)}); its "
                f"config names {architecture!r}"
            )
        source = source_classes[architecture].from_pretrained(pretrained_model_name_or_path).state_dict()
        config = HBIConfig.from_pretrained(pretrained_model_name_or_path, **config_overrides)
        model = cls(config)
        own = model.state_dict()
        shared = {key: tensor for key, tensor in source.items() if key in own}
        mismatched = sorted(key for key, tensor in shared.items() if tensor.shape != own[key].shape)
        missing_encoder = sorted(key for key in own if key.startswith("hbi.") and key not in shared)
        if mismatched or missing_encoder:
            raise ValueError(
                f"{pretrained_model_name_or_path}: the encoder does not fit {cls.__name__}"
                + (f"; other shapes: {mismatched[:5]}" if mismatched else "")
                + (f"; missing: {missing_encoder[:5]}" if missing_encoder else "")
            )
        model.load_state_dict(shared, strict=False)
        new = sorted({key.split(".")[0] for key in own if key not in shared})
        logger.info(
            "%s from the encoder of %s; newly initialised: %s", cls.__name__, pretrained_model_name_or_path, new
        )
        return model

    def load_banzhaf_teacher(self, estimator_name_or_path: str) -> None:
        """Load the frozen Banzhaf-interaction estimator (teacher of Eq. 8) from a saved, trained
        [`HBIBanzhafEstimator`] and select it (`config.banzhaf_teacher = "estimator"`).

        Raises:
            `ValueError`: the estimator was never trained (`is_trained` is `False` in its config), or its
                architecture differs from this model's `estimator_config`."""
        alignment = getattr(self, "alignment", None)
        if alignment is None:
            raise ValueError(f"{type(self).__name__} has no Banzhaf teacher to load into")
        estimator = HBIBanzhafEstimator.from_pretrained(estimator_name_or_path)
        if not estimator.config.is_trained:
            raise ValueError(
                f"the estimator {estimator_name_or_path} was never trained (is_trained is false in its config.json): "
                "as a teacher it would give random targets. Train one with scripts/train_estimator.py (or the "
                "training scripts' --fit_estimator), convert an official one, or use banzhaf_teacher='exact'"
            )
        different = [
            f"{name}: saved {getattr(estimator.config, name)!r}, model {getattr(self.config.estimator_config, name)!r}"
            for name in ESTIMATOR_ARCHITECTURE_FIELDS
            if getattr(estimator.config, name) != getattr(self.config.estimator_config, name)
        ]
        if different:
            raise ValueError(
                f"the estimator {estimator_name_or_path} has another architecture than this model's estimator_config "
                f"({'; '.join(different)}); build the model with estimator_config=HBIBanzhafEstimatorConfig."
                f"from_pretrained({str(estimator_name_or_path)!r}) (from_clip does this when given "
                "estimator_name_or_path)"
            )
        alignment.banzhaf_teacher.load_state_dict(estimator.state_dict())
        for name in (*ESTIMATOR_NORMALISATION_FIELDS, "is_trained"):
            value = getattr(estimator.config, name)
            setattr(alignment.banzhaf_teacher.config, name, value)
            setattr(self.config.estimator_config, name, value)
        self.config.estimator_name_or_path = str(estimator_name_or_path)
        self.config.banzhaf_teacher = "estimator"


class HBIModel(HBIPreTrainedModel):
    r"""
    The HBI encoder and scorer: CLIP towers, temporal transformer, token merges giving entity / action / event
    levels, and the (pairwise, for HBI V2) weighted token-wise similarity. Encode each modality once with
    [`get_text_features`] / [`get_video_features`], then score any texts against any videos with [`score`].
    Plain embeddings, one per item as CLIP's: [`get_text_embeddings`] / [`get_video_embeddings`].
    """

    # a task checkpoint (e.g. HBIForRetrieval) also holds the training objective's Banzhaf heads and teacher, which
    # the encoder never uses: AutoModel loads the encoder from it without listing them
    _keys_to_ignore_on_load_unexpected = [r"^alignment\."]

    def __init__(self, config: HBIConfig):
        super().__init__(config)
        # the towers share the sub-config objects, so `attn_implementation` (and any later change) reaches them; the
        # CLIP config is told their implementations, which it would otherwise reset
        self.clip = CLIPModel(
            CLIPConfig(
                text_config=config.text_config,
                vision_config=config.vision_config,
                projection_dim=config.projection_dim,
                logit_scale_init_value=config.logit_scale_init_value,
                attn_implementation={
                    "": config._attn_implementation,
                    "text_config": config.text_config._attn_implementation,
                    "vision_config": config.vision_config._attn_implementation,
                },
            )
        )
        self.temporal = HBITemporalTransformer(config)
        self.text_merges = nn.ModuleList([HBITokenMerge(config) for _ in range(NUM_LEVELS - 1)])
        self.video_merges = nn.ModuleList([HBITokenMerge(config) for _ in range(NUM_LEVELS - 1)])
        self.levels = nn.ModuleList([HBILevel(config) for _ in range(NUM_LEVELS)])
        self.clip.logit_scale.requires_grad_(config.learnable_temperature)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        """The text tower's token embedding `(vocab_size, hidden_size)`, as CLIP's text model gives it (used by
        `resize_token_embeddings` and by PEFT's `AutoPeftModel` when an adapter folder holds a tokenizer)."""
        return self.clip.text_model.embeddings.token_embedding

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.clip.text_model.embeddings.token_embedding = value

    def initialize_temporal_from_clip(self) -> None:
        """Copy the first CLIP text layers and text positions into the temporal transformer (official init). A
        temporal transformer of another shape than the text layers (width, feed-forward width) keeps its random
        initialisation, with a warning; so do frame positions past CLIP's text positions."""
        text_model = self.clip.text_model
        text_shape = (text_model.config.hidden_size, text_model.config.intermediate_size)
        temporal_shape = (self.config.projection_dim, self.config.temporal_intermediate_size)
        if text_shape != temporal_shape:
            logger.warning(
                "CLIP text layers (width %d, feed-forward %d) differ from the temporal transformer (projection_dim %d, "
                "temporal_intermediate_size %d): the temporal transformer keeps its random init.",
                *text_shape,
                *temporal_shape,
            )
            return
        for layer, source in zip(self.temporal.layers, text_model.encoder.layers):
            layer.load_state_dict(source.state_dict())
        positions = text_model.embeddings.position_embedding.weight
        table = self.temporal.frame_position_embeddings.num_embeddings
        rows = min(positions.shape[0], table)
        if table > rows:
            logger.warning(
                "the frame position table has %d rows (temporal_max_position_embeddings) and CLIP's text positions "
                "%d: frame positions %d to %d keep their random init and learn only from fine-tuning.",
                table,
                rows,
                rows,
                table - 1,
            )
        with torch.no_grad():
            self.temporal.frame_position_embeddings.weight[:rows].copy_(positions[:rows])

    # ----- encoding --------------------------------------------------------------------------------------------------

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> HBITextFeatures:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch, words)`): CLIP token ids, start and end tokens included.
            attention_mask (`torch.LongTensor` of shape `(batch, words)`, *optional*): 1 for real tokens.

        Returns:
            [`HBITextFeatures`]: word tokens T_w^s (every CLIP hidden state after the final norm and the projection),
            phrases and paragraphs, and the sentence embedding t_c (the end-of-text token's feature; also
            `.pooler_output`, as CLIP's).
        """
        tokens, mask, sentence, _ = self._encode_text(input_ids, attention_mask)
        return self._build_levels(tokens, mask, sentence, "text", HBITextFeatures)

    def get_text_embeddings(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, normalize: bool = False
    ) -> torch.Tensor:
        r"""
        One plain embedding per text, as CLIP's: the pooled, projected sentence embedding t_c (the end-of-text
        token's feature; what the outputs' `text_embeds` hold, normalised). The token merges do not run.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch, words)`), attention_mask (`(batch, words)`, *optional*)
            normalize (`bool`, defaults to `False`): L2-normalise each embedding.

        Returns:
            `torch.FloatTensor` of shape `(batch, projection_dim)`.
        """
        sentence = self._encode_text(input_ids, attention_mask)[2]
        return F.normalize(sentence, dim=-1) if normalize else sentence

    def _encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **tower_kwargs
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, BaseModelOutputWithPooling]:
        """The text tower on validated inputs: word tokens `(batch, words, dim)`, their mask `(batch, words)`, the
        sentence embedding `(batch, dim)` and the tower's output (`tower_kwargs`: `output_hidden_states`,
        `output_attentions`)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, words); got {tuple(input_ids.shape)}")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}; "
                f"got {tuple(attention_mask.shape)}"
            )
        mask = attention_mask.bool()
        if not mask.any(-1).all():
            raise ValueError("attention_mask has a row without any token: every text needs at least one token")
        tower = self.clip.text_model(input_ids=input_ids, attention_mask=attention_mask, **tower_kwargs)
        tokens = self.clip.text_projection(tower.last_hidden_state)
        last = mask.long().cumsum(-1).argmax(-1)
        sentence = tokens[torch.arange(tokens.shape[0], device=tokens.device), last]
        return tokens, mask, sentence, tower

    def get_video_features(
        self, pixel_values: torch.Tensor, video_mask: torch.Tensor | None = None
    ) -> HBIVideoFeatures:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch, frames, 3, height, width)`): CLIP-normalised frames.
            video_mask (`torch.LongTensor` of shape `(batch, frames)`, *optional*): 1 for real frames, 0 for padding.

        Returns:
            [`HBIVideoFeatures`]: frame tokens V_f^s (temporal transformer over the projected per-frame [CLS]),
            clips and segments, and the mean frame token (also `.pooler_output`).
        """
        tokens, mask, mean, _ = self._encode_video(pixel_values, video_mask)
        return self._build_levels(tokens, mask, mean, "video", HBIVideoFeatures)

    def get_video_embeddings(
        self, pixel_values: torch.Tensor, video_mask: torch.Tensor | None = None, normalize: bool = False
    ) -> torch.Tensor:
        r"""
        One plain embedding per video, as X-CLIP's: the mean of the valid frame tokens V_f^s (after the temporal
        transformer; what the outputs' `video_embeds` hold, normalised). The token merges do not run.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch, frames, 3, height, width)`), video_mask
            (`(batch, frames)`, *optional*)
            normalize (`bool`, defaults to `False`): L2-normalise each embedding.

        Returns:
            `torch.FloatTensor` of shape `(batch, projection_dim)`.
        """
        mean = self._encode_video(pixel_values, video_mask)[2]
        return F.normalize(mean, dim=-1) if normalize else mean

    def _encode_video(
        self, pixel_values: torch.Tensor, video_mask: torch.Tensor | None = None, **tower_kwargs
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, BaseModelOutputWithPooling]:
        """The image tower and the temporal transformer on validated inputs: frame tokens `(batch, frames, dim)`,
        their mask `(batch, frames)`, the mean frame token `(batch, dim)` and the image tower's output over the valid
        frames (`tower_kwargs`: `output_hidden_states`, `output_attentions`)."""
        if pixel_values.dim() != 5 or pixel_values.shape[2] != 3:
            raise ValueError(f"pixel_values must be (batch, frames, 3, H, W); got {tuple(pixel_values.shape)}")
        batch, frames = pixel_values.shape[:2]
        if frames > self.config.temporal_max_position_embeddings:
            raise ValueError(
                f"pixel_values has {frames} frames, more than temporal_max_position_embeddings="
                f"{self.config.temporal_max_position_embeddings} (the rows of the frame position table); sample at "
                f"most that many frames (the model's num_frames is {self.config.num_frames})"
            )
        if video_mask is None:
            video_mask = torch.ones(batch, frames, dtype=torch.long, device=pixel_values.device)
        if tuple(video_mask.shape) != (batch, frames):
            raise ValueError(f"video_mask must be (batch, frames) = {(batch, frames)}; got {tuple(video_mask.shape)}")
        mask = video_mask.bool()
        if not mask.any(-1).all():
            raise ValueError("video_mask has a row without any frame: every video needs at least one frame")
        valid_frames = pixel_values[mask]
        tower = self.clip.vision_model(pixel_values=valid_frames, **tower_kwargs)
        projected = self.clip.visual_projection(tower.pooler_output)
        frame_embeddings = projected.new_zeros(batch, frames, projected.shape[-1])
        frame_embeddings[mask] = projected
        tokens = self.temporal(frame_embeddings, mask)
        mean = (tokens * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        return tokens, mask, mean, tower

    def _encode_pair(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        video_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> tuple[HBITextFeatures, HBIVideoFeatures, dict]:
        """Features of texts and videos for a forward pass, and the CLIP-convention fields of its output
        (`text_embeds`, `video_embeds`, `text_model_output`, `vision_model_output`; see [`HBIModelOutput`])."""
        tower_kwargs = {"output_attentions": output_attentions, "output_hidden_states": output_hidden_states}
        tower_kwargs = {name: value for name, value in tower_kwargs.items() if value is not None}
        text_tokens, text_mask, sentence, text_tower = self._encode_text(input_ids, attention_mask, **tower_kwargs)
        video_tokens, frame_mask, mean, vision_tower = self._encode_video(pixel_values, video_mask, **tower_kwargs)
        text_features = self._build_levels(text_tokens, text_mask, sentence, "text", HBITextFeatures)
        video_features = self._build_levels(video_tokens, frame_mask, mean, "video", HBIVideoFeatures)
        conventions = dict(
            text_embeds=F.normalize(sentence, dim=-1),
            video_embeds=F.normalize(mean, dim=-1),
            text_model_output=text_tower,
            vision_model_output=vision_tower,
        )
        return text_features, video_features, conventions

    def _build_levels(self, tokens, mask, global_embeddings, modality, output_class):
        merges = self.text_merges if modality == "text" else self.video_merges
        level_tokens, level_masks, assignments = [tokens], [mask], []
        # the merged token counts follow the configured length (`max_words` / `num_frames`, to which the official
        # code pads every input), never the padded width of a batch: padding an input further changes no score
        reference_length = self.config.max_words if modality == "text" else self.config.num_frames
        for level, merge in enumerate(merges, start=1):
            num_clusters = self.config.num_merged_tokens(modality, level, reference_length)
            item_clusters = self.config.merged_token_counts(modality, level, level_masks[-1].sum(-1), reference_length)
            reference_length = num_clusters
            merged, merged_mask, assignment = merge(level_tokens[-1], level_masks[-1], num_clusters, item_clusters)
            level_tokens.append(merged)
            level_masks.append(merged_mask)
            assignments.append(assignment)
        weight_logits, gate_logits = [], []
        for level_module, level_token in zip(self.levels, level_tokens):
            weight_mlp = level_module.text_weight if modality == "text" else level_module.video_weight
            weight_logits.append(weight_mlp(level_token))
            if level_module.reconstruction is not None:
                gate_logits.append(level_module.reconstruction.gate_logits(level_token, modality))
        return output_class(
            level_tokens=tuple(level_tokens),
            level_masks=tuple(level_masks),
            level_weight_logits=tuple(weight_logits),
            level_gate_logits=tuple(gate_logits) if gate_logits else None,
            global_embeddings=global_embeddings,
            cluster_assignments=tuple(assignments),
        )

    # ----- scoring ---------------------------------------------------------------------------------------------------

    def level_inputs(self, features: HBIModalityFeatures, level: int) -> HBILevelInputs:
        """Everything pair-independent that scoring at `level` needs for one modality, computed once per item.

        Scoring runs in float32 whatever the dtype of the weights and features (bf16 / fp16 features are upcast
        here), so half-precision models rank with full-precision sums and create no ties that float32 would not."""
        tokens = features.level_tokens[level].float()
        mask = features.level_masks[level]
        inputs = HBILevelInputs(tokens=tokens, mask=mask, weight_logits=features.level_weight_logits[level].float())
        if self.config.representation_reconstruction:
            inputs.gate_logits = features.level_gate_logits[level].float()
            inputs.gram = tokens @ tokens.transpose(1, 2)
            if isinstance(features, HBITextFeatures):
                inputs.query = features.global_embeddings.float()
        return inputs

    def similarity_per_level(
        self,
        text_features: HBITextFeatures,
        video_features: HBIVideoFeatures,
        levels: tuple[int, ...] = (0, 1, 2),
        chunk_size: int | None = None,
    ) -> tuple[torch.Tensor | None, ...]:
        r"""
        S of Eq. 12 for every text against every video at the requested levels.

        Args:
            text_features ([`HBITextFeatures`]), video_features ([`HBIVideoFeatures`])
            levels (`tuple[int]`): levels to compute (0 entity, 1 action, 2 event); the others are returned as `None`.
            chunk_size (`int`, *optional*): score blocks of `chunk_size` texts x `chunk_size` videos at a time (at the
                coarser levels, with fewer tokens, as many more videos as keep the same number of token pairs), which
                bounds the memory by the chunk size instead of the gallery size. `None` scores everything at once.

        Returns:
            `tuple` of 3 `torch.FloatTensor` of shape `(n_text, n_video)` (or `None`).
        """
        n_text, n_video = len(text_features), len(video_features)
        step = chunk_size or max(n_text, n_video)
        # the memory of a block is bounded by the entity level's cells; coarser levels take more videos per block
        block_cells = step * step * text_features.level_tokens[0].shape[1] * video_features.level_tokens[0].shape[1]
        results: list[torch.Tensor | None] = []
        for level in range(NUM_LEVELS):
            if level not in levels:
                results.append(None)
                continue
            text, video = self.level_inputs(text_features, level), self.level_inputs(video_features, level)
            cells_per_text = step * text.tokens.shape[1] * video.tokens.shape[1]
            step_video = max(step, block_cells // max(cells_per_text, 1))
            results.append(self._all_pairs_similarity(level, text, video, step, step_video))
        return tuple(results)

    def _all_pairs_similarity(
        self, level: int, text: HBILevelInputs, video: HBILevelInputs, step_text: int, step_video: int
    ) -> torch.Tensor:
        """S at `level` for every text x video `(n_text, n_video)`, by blocks of `step_text` x `step_video` items.

        Items are ordered by how many token positions they use, and each block is cut to the positions its longest
        item uses: padding costs no work (a short caption meets every video with its own words only)."""
        text_extent, video_extent = text.extent(), video.extent()
        text_order = text_extent.argsort(descending=True, stable=True)
        video_order = video_extent.argsort(descending=True, stable=True)
        text_extent, video_extent = text_extent[text_order].tolist(), video_extent[video_order].tolist()
        similarity = None
        for t in range(0, len(text_extent), step_text):
            texts = text_order[t : t + step_text]
            text_block = text.take(texts, max(text_extent[t], 1))
            for v in range(0, len(video_extent), step_video):
                videos = video_order[v : v + step_video]
                block = self.levels[level].similarity(
                    text_block, video.take(videos, max(video_extent[v], 1)), ALL_PAIRS
                )
                if similarity is None:
                    similarity = block.new_empty(len(text_extent), len(video_extent))
                similarity[texts.unsqueeze(1), videos] = block
        return similarity

    def fuse_levels(self, similarity_per_level: tuple[torch.Tensor | None, ...]) -> torch.Tensor:
        """Weighted sum of the level similarities with `config.similarity_level_weights` (inference score)."""
        weights = self.config.similarity_level_weights
        return sum(w * s for w, s in zip(weights, similarity_per_level) if w != 0)

    def score(
        self,
        text_features: HBITextFeatures,
        video_features: HBIVideoFeatures,
        chunk_size: int | None = DEFAULT_SCORING_CHUNK_SIZE,
    ) -> torch.Tensor:
        """Retrieval score `(n_text, n_video)`: the fused similarity, computing only levels with a non-zero weight."""
        levels = tuple(i for i, w in enumerate(self.config.similarity_level_weights) if w != 0)
        return self.fuse_levels(self.similarity_per_level(text_features, video_features, levels, chunk_size))

    def matched_token_similarity(
        self, text_features: HBITextFeatures, video_features: HBIVideoFeatures, level: int
    ) -> torch.Tensor:
        """Word x frame cosine matrix of matched pairs (text i with video i) at `level`: `(batch, words, frames)`."""
        text, video = self.level_inputs(text_features, level), self.level_inputs(video_features, level)
        return self.levels[level].token_similarity(text, video, MATCHED_PAIRS)

    def logit_scale(self) -> torch.Tensor:
        """1 / tau: fixed from `config.temperature`, or CLIP's learnable scale clamped at 100."""
        if self.config.learnable_temperature:
            return self.clip.logit_scale.exp().clamp(max=100.0)
        return torch.tensor(1.0 / self.config.temperature, device=self.clip.logit_scale.device)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        video_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
    ) -> HBIModelOutput:
        r"""
        Args:
            input_ids (`(text_batch, words)`), pixel_values (`(video_batch, frames, 3, H, W)`),
            attention_mask (`(text_batch, words)`), video_mask (`(video_batch, frames)`).
            output_attentions (`bool`, *optional*): return the attentions of the CLIP towers' layers in
                `text_model_output` / `vision_model_output` (as CLIP: with `attn_implementation="eager"`).
            output_hidden_states (`bool`, *optional*): return the hidden states of the CLIP towers likewise.
            return_dict (`bool`, *optional*): `False` returns a tuple of the output's fields (nested outputs as
                tuples), as CLIP does.
        """
        text_features, video_features, conventions = self._encode_pair(
            input_ids, pixel_values, attention_mask, video_mask, output_attentions, output_hidden_states
        )
        levels = tuple(i for i, w in enumerate(self.config.similarity_level_weights) if w != 0)
        per_level = self.similarity_per_level(text_features, video_features, levels)
        logits_per_text = self.logit_scale() * self.fuse_levels(per_level)
        return HBIModelOutput(
            logits_per_text=logits_per_text,
            logits_per_video=logits_per_text.t(),
            similarity_per_level=per_level,
            text_features=text_features,
            video_features=video_features,
            **conventions,
        )


class HBIBanzhafEstimator(PreTrainedModel):
    r"""
    The Banzhaf-interaction estimator (spec §2.3): maps a `(words, frames)` similarity matrix to the Banzhaf
    interaction of every (word, frame) pair, trained with MSE on Monte-Carlo labels and then used, frozen, as the
    teacher of Eq. 8.
    """

    config: HBIBanzhafEstimatorConfig
    config_class = HBIBanzhafEstimatorConfig
    base_model_prefix = "estimator"
    main_input_name = "similarity"

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        return True

    def get_correct_attn_implementation(self, requested_attention: str | None, is_init_check: bool = False) -> str:
        """The estimator's single-head attention over the cells has one implementation (a masked softmax, run
        eagerly): whatever an HBI model around it is given as `attn_implementation`, the estimator accepts it and
        stays `"eager"`."""
        return "eager"

    def __init__(self, config: HBIBanzhafEstimatorConfig):
        super().__init__(config)
        self.head = HBIBanzhafHead(config)
        self.post_init()

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs) -> None:
        """`PreTrainedModel.save_pretrained`, with the modeling code and `auto_map` beside the weights:
        `AutoModel.from_pretrained(folder, trust_remote_code=True)` loads the estimator without `import hbi_hf`.
        (The estimator reads similarity matrices, so it has no processor.)"""
        if kwargs.get("is_main_process", True):
            _save_loading_code(self, save_directory, "modeling_hbi.HBIBanzhafEstimator")
        super().save_pretrained(save_directory, *args, **kwargs)

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, HBIBanzhafHead) and module.use_attention:
            for matrix in (module.query, module.key, module.value):
                init.xavier_uniform_(matrix, gain=self.config.initializer_gain)

    def forward(
        self,
        similarity: torch.Tensor,
        text_mask: torch.Tensor | None = None,
        video_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> HBIBanzhafEstimatorOutput:
        r"""
        Args:
            similarity (`torch.FloatTensor` of shape `(batch, words, frames)`): token similarity matrices.
            text_mask (`(batch, words)`), video_mask (`(batch, frames)`), *optional*: valid words and frames.
            labels (`torch.FloatTensor` of shape `(batch, words, frames)`, *optional*): target interactions.
        """
        if similarity.dim() != 3:
            raise ValueError(f"similarity must be (batch, words, frames); got {tuple(similarity.shape)}")
        cell_mask = _cell_mask(text_mask, video_mask, similarity)
        normalised = self._normalised_interaction(similarity, cell_mask)
        scale = self.output_scale(*_player_counts(text_mask, video_mask, similarity)).to(normalised.dtype)
        loss = None
        if labels is not None:
            if labels.shape != similarity.shape:
                raise ValueError(
                    f"labels must have the shape of similarity {tuple(similarity.shape)}; got {tuple(labels.shape)}"
                )
            target = labels.to(normalised.dtype) / scale
            loss = F.mse_loss(normalised[cell_mask], target[cell_mask])
        return HBIBanzhafEstimatorOutput(loss=loss, interaction=normalised * scale)

    def estimate(self, similarity: torch.Tensor, cell_mask: torch.Tensor) -> torch.Tensor:
        r"""
        The interactions in label units for a cell mask (what `forward(...).interaction` returns).

        Args:
            similarity (`torch.Tensor` of shape `(batch, words, frames)`)
            cell_mask (`torch.BoolTensor` of shape `(batch, words, frames)`): valid (word, frame) cells.

        Returns:
            `torch.Tensor` of shape `(batch, words, frames)`, 0 on padded cells.
        """
        scale = self.output_scale(cell_mask.any(-1).sum(-1), cell_mask.any(-2).sum(-1))
        return self._normalised_interaction(similarity, cell_mask) * scale

    def output_scale(self, valid_words: torch.Tensor, valid_frames: torch.Tensor) -> torch.Tensor:
        r"""
        `output_scale * valid_words ** -word_count_exponent * valid_frames ** -frame_count_exponent` of each matrix
        (see [`HBIBanzhafEstimatorConfig`]).

        Args:
            valid_words, valid_frames (`torch.LongTensor` of shape `(batch,)`): the game's players (counts below 1
                count as 1).

        Returns:
            `torch.Tensor` of shape `(batch, 1, 1)`.
        """
        valid_words = valid_words.clamp(min=1).float()
        valid_frames = valid_frames.clamp(min=1).float()
        scale = (
            self.config.output_scale
            * valid_words.pow(-self.config.word_count_exponent)
            * valid_frames.pow(-self.config.frame_count_exponent)
        )
        return scale.view(-1, 1, 1)

    def _normalised_interaction(self, similarity: torch.Tensor, cell_mask: torch.Tensor) -> torch.Tensor:
        standardised = (similarity - self.config.input_mean) / self.config.input_std
        return self.head(standardised, cell_mask)


ONLINE_EXACT_PLAYERS = 12
"""Games of at most this many word + frame positions are enumerated exactly by the Monte-Carlo teacher (4096
coalitions)."""


class HBIAlignmentLoss(nn.Module):
    r"""
    The alignment objective shared by every HBI task (Eq. 16 without the task loss): per level the contrastive loss
    (Eq. 13) plus alpha times the Banzhaf-interaction loss (Eq. 8), and beta times the entity->action and
    entity->event self-distillation (Eq. 15). Holds the per-level prediction heads R and the slot of the frozen
    estimator teacher. Under `torch.distributed`, in training mode, negatives come from every process (the local
    slice keeps its gradient); in evaluation mode the loss is that of the batch given, so an evaluation loss does not
    depend on the number of processes and runs no collective (processes may hold batches of different sizes and
    padded lengths).

    The teacher of Eq. 8 is `config.banzhaf_teacher` ([`HBIConfig`]): the exact (default) or Monte-Carlo
    interactions of the detached matched-pair similarity of each level (with the level's WTI weight logits and masks,
    game scale `config.banzhaf_game_scale`), a trained estimator, or none. With `banzhaf_loss_weight=0` or `"none"` no teacher
    runs and L_I is 0. The heads R read the similarity times `config.banzhaf_head_input_scale`, which sets how
    strongly L_I reaches the encoder (docs/banzhaf.md). `banzhaf_loss_factor` (runtime, not saved; default 1)
    multiplies alpha: [`~hbi_hf.training.HBITrainer`] ramps it from 0 to 1 over
    `HBITrainingArguments.banzhaf_loss_warmup_steps`. How L_I and L_D are reduced, and whether L_D reads the raw
    similarities with the entity teacher attached (the official objective, default) or the logits S / tau with it
    detached, is `config.objective` (see [`banzhaf_interaction_loss`], [`self_distillation_loss`]).

    Raises:
        `ValueError`: in `forward`, when `banzhaf_teacher="estimator"` and the estimator was never trained
            (`estimator_config.is_trained` is `False`).
    """

    def __init__(self, config: HBIConfig):
        super().__init__()
        self.config = config
        self.banzhaf_heads = nn.ModuleList([HBIBanzhafHead(config.estimator_config) for _ in range(NUM_LEVELS)])
        self.banzhaf_teacher = HBIBanzhafEstimator(config.estimator_config)
        self.banzhaf_teacher.requires_grad_(False)
        self.banzhaf_loss_factor = 1.0

    def banzhaf_weight(self) -> float:
        """The weight of L_I in the loss: alpha (`config.banzhaf_loss_weight`) times `banzhaf_loss_factor`."""
        return self.config.banzhaf_loss_weight * self.banzhaf_loss_factor

    def train(self, mode: bool = True) -> "HBIAlignmentLoss":
        super().train(mode)
        self.banzhaf_teacher.eval()
        return self

    def forward(
        self, model: HBIModel, text_features: HBITextFeatures, video_features: HBIVideoFeatures
    ) -> HBIAlignmentLossOutput:
        """Texts and videos are matched pairs: text i describes video i."""
        if len(text_features) != len(video_features):
            raise ValueError(
                f"the alignment loss needs matched pairs; got {len(text_features)} texts and "
                f"{len(video_features)} videos"
            )
        if self.training:  # negatives from every process: the loss of the step's global batch
            global_text = text_features.map(lambda t: gather_with_local_grad(t)[0])
            global_video = video_features.map(lambda t: gather_with_local_grad(t)[0])
            offset = gather_with_local_grad(text_features.global_embeddings[:, :1])[1]
        else:  # evaluation: the loss of the batch given, whatever the number of processes, with no collective
            global_text, global_video, offset = text_features, video_features, 0
        global_similarity = model.similarity_per_level(global_text, global_video)
        scale = model.logit_scale()
        logits = [scale * s for s in global_similarity]
        objective = self.config.objective
        # the official objective distils the raw similarities (temperature 1), the sharpened one the logits S / tau
        distilled = global_similarity if objective == "official" else logits

        contrastive = tuple(contrastive_loss(level_logits) for level_logits in logits)
        distillation = tuple(
            self_distillation_loss(distilled[level], distilled[0], objective) for level in range(1, NUM_LEVELS)
        )
        banzhaf = None
        if self.uses_banzhaf_term():
            banzhaf = tuple(
                self._banzhaf_loss(model, text_features, video_features, level) for level in range(NUM_LEVELS)
            )
        contrastive_total, distillation_total = sum(contrastive), sum(distillation)
        banzhaf_total = sum(banzhaf) if banzhaf is not None else contrastive_total.new_zeros(())
        local = slice(offset, offset + len(text_features))
        loss = (
            contrastive_total
            + self.banzhaf_weight() * banzhaf_total
            + self.config.distillation_loss_weight * distillation_total
        )
        return HBIAlignmentLossOutput(
            loss=loss,
            contrastive_loss=contrastive_total,
            banzhaf_loss=banzhaf_total,
            distillation_loss=distillation_total,
            similarity_per_level=tuple(s[local, local] for s in global_similarity),
            contrastive_loss_per_level=contrastive,
            banzhaf_loss_per_level=banzhaf,
            distillation_loss_per_level=distillation,
        )

    def _banzhaf_loss(self, model, text_features, video_features, level: int) -> torch.Tensor:
        # the similarities are float32 (see `HBIModel.level_inputs`); the networks read them in their weights'
        # dtype and the KL divergence is taken in float32
        similarity = model.matched_token_similarity(text_features, video_features, level)
        cell_mask = text_features.level_masks[level].unsqueeze(-1) & video_features.level_masks[level].unsqueeze(-2)
        interaction = self.teacher_interaction(similarity, text_features, video_features, level)
        head_input = self.config.banzhaf_head_input_scale * similarity
        prediction = self.banzhaf_heads[level](head_input.to(self.banzhaf_teacher.dtype), cell_mask)
        words, frames = self.config.level_shape(level)
        return banzhaf_interaction_loss(
            prediction.float(), interaction.float(), cell_mask, self.config.objective, cells_per_item=words * frames
        )

    def uses_banzhaf_term(self) -> bool:
        """Whether L_I is computed: a teacher is chosen and alpha is not 0 (the log says once when it is not)."""
        if self.config.banzhaf_teacher == "none":
            logger.warning_once("banzhaf_teacher='none': training without the Banzhaf-interaction loss L_I (Eq. 8)")
            return False
        return self.config.banzhaf_loss_weight != 0

    @torch.no_grad()
    def teacher_interaction(
        self, similarity: torch.Tensor, text_features: HBITextFeatures, video_features: HBIVideoFeatures, level: int
    ) -> torch.Tensor:
        r"""
        The teacher's Banzhaf interactions I of Eq. 8 for matched pairs at `level`, in the units of the game scaled by
        `config.banzhaf_game_scale` (what the softmaxes of Eq. 8 read as logits). The `"exact"` teacher computes them
        in closed form ([`~hbi_hf.banzhaf.closed_form_banzhaf_interaction`]); the `"monte_carlo"` teacher
        enumerates games of at most `ONLINE_EXACT_PLAYERS` positions exactly (e.g. the event level, cheaper than
        sampling and without its noise) and samples `config.banzhaf_num_samples` coalitions per pair otherwise.

        Args:
            similarity (`torch.Tensor` of shape `(batch, words, frames)`): matched-pair similarity at `level`
                (detached here).
            text_features ([`HBITextFeatures`]), video_features ([`HBIVideoFeatures`]): the pairs' features (masks
                and WTI weight logits of the level).
            level (`int`): 0 entity, 1 action, 2 event.

        Returns:
            `torch.FloatTensor` of shape `(batch, words, frames)`, 0 on padded cells.

        Raises:
            `ValueError`: `banzhaf_teacher="estimator"` with a never-trained estimator, or `"none"`.
        """
        text_mask, video_mask = text_features.level_masks[level], video_features.level_masks[level]
        similarity = similarity.detach().float()
        if self.config.banzhaf_teacher in ("exact", "monte_carlo"):
            from .banzhaf import (
                closed_form_banzhaf_interaction,
                exact_banzhaf_interaction,
                sampled_banzhaf_interaction,
            )

            game = dict(
                text_weight_logits=text_features.level_weight_logits[level].detach().float(),
                video_weight_logits=video_features.level_weight_logits[level].detach().float(),
                text_mask=text_mask,
                video_mask=video_mask,
                logit_scale=self.config.banzhaf_game_scale,
            )
            if self.config.banzhaf_teacher == "exact":
                return closed_form_banzhaf_interaction(similarity, **game)
            if sum(similarity.shape[1:]) <= ONLINE_EXACT_PLAYERS:
                return exact_banzhaf_interaction(similarity, **game)
            return sampled_banzhaf_interaction(similarity, self.config.banzhaf_num_samples, **game)
        if self.config.banzhaf_teacher == "estimator":
            self.check_estimator_teacher()
            cell_mask = text_mask.unsqueeze(-1) & video_mask.unsqueeze(-2)
            return self.banzhaf_teacher.estimate(similarity.to(self.banzhaf_teacher.dtype), cell_mask).float()
        raise ValueError("banzhaf_teacher='none' has no interactions; choose 'exact', 'monte_carlo' or 'estimator'")

    def check_estimator_teacher(self) -> None:
        """Refuse a never-trained estimator as the teacher, naming the fixes."""
        if not self.banzhaf_teacher.config.is_trained:
            raise ValueError(
                "banzhaf_teacher='estimator' but the model's Banzhaf estimator was never trained "
                "(estimator_config.is_trained is False): its targets would be random. Load a trained one with "
                "estimator_name_or_path=... (scripts/train_estimator.py, the training scripts' --fit_estimator, or "
                "a converted official estimator), or use banzhaf_teacher='exact' (no estimator needed)"
            )


class HBIForRetrieval(HBIPreTrainedModel):
    r"""
    HBI for text-video retrieval: [`HBIModel`] plus the training objective of Eq. 16 ([`HBIAlignmentLoss`]). The
    Banzhaf heads and the teacher are used only for the loss; inference uses [`HBIModel.score`].
    """

    def __init__(self, config: HBIConfig):
        super().__init__(config)
        self.hbi = HBIModel(config)
        self.alignment = HBIAlignmentLoss(config)
        self.post_init()

    def get_text_features(self, input_ids, attention_mask=None) -> HBITextFeatures:
        """See [`HBIModel.get_text_features`]."""
        return self.hbi.get_text_features(input_ids, attention_mask)

    def get_video_features(self, pixel_values, video_mask=None) -> HBIVideoFeatures:
        """See [`HBIModel.get_video_features`]."""
        return self.hbi.get_video_features(pixel_values, video_mask)

    def get_text_embeddings(self, input_ids, attention_mask=None, normalize: bool = False) -> torch.Tensor:
        """See [`HBIModel.get_text_embeddings`]: `(batch, projection_dim)`."""
        return self.hbi.get_text_embeddings(input_ids, attention_mask, normalize)

    def get_video_embeddings(self, pixel_values, video_mask=None, normalize: bool = False) -> torch.Tensor:
        """See [`HBIModel.get_video_embeddings`]: `(batch, projection_dim)`."""
        return self.hbi.get_video_embeddings(pixel_values, video_mask, normalize)

    def score(
        self, text_features, video_features, chunk_size: int | None = DEFAULT_SCORING_CHUNK_SIZE
    ) -> torch.Tensor:
        """See [`HBIModel.score`]."""
        return self.hbi.score(text_features, video_features, chunk_size)

    @can_return_tuple
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
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch, words)`): caption i describes video i.
            pixel_values (`torch.FloatTensor` of shape `(batch, frames, 3, H, W)`)
            attention_mask (`torch.LongTensor` of shape `(batch, words)`, *optional*)
            video_mask (`torch.LongTensor` of shape `(batch, frames)`, *optional*)
            return_loss (`bool`, *optional*): compute the loss of Eq. 16 (default: in training mode).
            output_attentions (`bool`, *optional*): return the attentions of the CLIP towers' layers in
                `text_model_output` / `vision_model_output` (as CLIP: with `attn_implementation="eager"`).
            output_hidden_states (`bool`, *optional*): return the hidden states of the CLIP towers likewise.
            return_dict (`bool`, *optional*): `False` returns a tuple of the output's fields (nested outputs as
                tuples), as CLIP does.
        """
        if return_loss is None:
            return_loss = self.training
        text_features, video_features, conventions = self.hbi._encode_pair(
            input_ids, pixel_values, attention_mask, video_mask, output_attentions, output_hidden_states
        )
        parts = HBIAlignmentLossOutput()
        if return_loss:
            parts = self.alignment(self.hbi, text_features, video_features)
            per_level = parts.similarity_per_level
        else:
            levels = tuple(i for i, w in enumerate(self.config.similarity_level_weights) if w != 0)
            per_level = self.hbi.similarity_per_level(text_features, video_features, levels)
        logits_per_text = self.hbi.logit_scale() * self.hbi.fuse_levels(per_level)
        return HBIRetrievalOutput(
            loss=parts.loss,
            contrastive_loss=parts.contrastive_loss,
            banzhaf_loss=parts.banzhaf_loss,
            distillation_loss=parts.distillation_loss,
            logits_per_text=logits_per_text,
            logits_per_video=logits_per_text.t(),
            similarity_per_level=per_level,
            text_features=text_features,
            video_features=video_features,
            **conventions,
        )


# ---------------------------------------------------------------------------------------------------------------------
# Video question answering
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class HBIVideoQAOutput(ModelOutput):
    r"""
    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned with `return_loss=True` and `labels`):
            Eq. 16: `alignment_loss + qa_loss_weight * task_loss`.
        task_loss (`torch.FloatTensor` of shape `()`, *optional*):
            Sum over the three levels of the answer cross-entropy; labels of -1 (answers outside the vocabulary) are
            ignored.
        alignment_loss (`torch.FloatTensor` of shape `()`, *optional*):
            The alignment part of Eq. 16 between questions and videos, see [`HBIAlignmentLossOutput`].
        contrastive_loss, banzhaf_loss, distillation_loss (`torch.FloatTensor` of shape `()`, *optional*):
            The parts of `alignment_loss`.
        logits (`torch.FloatTensor` of shape `(batch, num_labels)`):
            Answer logits fused over the levels with `config.qa_level_weights`.
        logits_per_level (`tuple(torch.FloatTensor)` of length 3):
            Answer logits of the entity, action and event levels, each `(batch, num_labels)`.
    """

    loss: torch.FloatTensor | None = None
    task_loss: torch.FloatTensor | None = None
    alignment_loss: torch.FloatTensor | None = None
    contrastive_loss: torch.FloatTensor | None = None
    banzhaf_loss: torch.FloatTensor | None = None
    distillation_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    logits_per_level: tuple[torch.FloatTensor, ...] | None = None


class HBITokenPooling(nn.Module):
    """Attention pooling of a token set with learned weights: `softmax(MLP(x))` over the valid tokens, with
    `MLP = Linear(D, D) -> ReLU -> Linear(D, 1)` (official QA head)."""

    def __init__(self, config: HBIConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.projection_dim, config.projection_dim)
        self.fc2 = nn.Linear(config.projection_dim, 1)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`(batch, tokens, dim)`, `(batch, tokens)` -> `(batch, dim)`."""
        weights = masked_softmax(self.fc2(F.relu(self.fc1(tokens))).squeeze(-1), mask)
        return (weights.unsqueeze(-1) * tokens).sum(1)


class HBIVideoQAHead(nn.Module):
    r"""
    Answer classifier of one level (Sec. 3.3, official MSRVTT-QA head): pool the video tokens and the question tokens
    ([`HBITokenPooling`]), project each to `qa_projection_dim`, concatenate, then
    `Dropout -> Linear(2P, qa_hidden_size) -> ReLU -> Linear(qa_hidden_size, num_labels)`.
    """

    def __init__(self, config: HBIConfig):
        super().__init__()
        self.video_pooling = HBITokenPooling(config)
        self.text_pooling = HBITokenPooling(config)
        self.video_projection = nn.Linear(config.projection_dim, config.qa_projection_dim)
        self.text_projection = nn.Linear(config.projection_dim, config.qa_projection_dim)
        self.dropout = nn.Dropout(config.qa_dropout)
        self.fc1 = nn.Linear(2 * config.qa_projection_dim, config.qa_hidden_size)
        self.fc2 = nn.Linear(config.qa_hidden_size, config.num_labels)

    def forward(
        self, video_tokens: torch.Tensor, video_mask: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor
    ) -> torch.Tensor:
        """Tokens `(batch, tokens, dim)` and masks `(batch, tokens)` of one level -> logits `(batch, num_labels)`."""
        video = self.video_projection(self.video_pooling(video_tokens, video_mask))
        text = self.text_projection(self.text_pooling(text_tokens, text_mask))
        hidden = self.dropout(torch.cat([video, text], dim=-1))
        return self.fc2(F.relu(self.fc1(hidden)))


class HBIForVideoQA(HBIPreTrainedModel):
    r"""
    HBI for open-ended video question answering (Sec. 3.3; spec §6): classification over an answer vocabulary
    (`config.id2label`, `config.num_labels`).

    At each level an [`HBIVideoQAHead`] reads the *single-modal* question tokens (words / phrases / paragraphs) and
    video tokens (frames / clips / segments); no answer depends on a representation reconstructed against another
    item of the batch. The levels' logits are fused with `config.qa_level_weights` (official 0.4 / 0.4 / 0.2).

    Training objective, Eq. 16: `L = sum_levels (L_C + alpha L_I) + beta L_D + lambda L_task`, the alignment part from
    [`HBIAlignmentLoss`] with the questions and videos as matched pairs, and `L_task` the sum over the three levels of
    the answer cross-entropy (each level supervised, as in the official code); lambda is `config.qa_loss_weight`
    (paper 2.5). `scripts/train_videoqa.py` uses the official MSRVTT-QA run's alpha = `--skl` 1 and beta = `--kl` 2
    (the paper's text says alpha = 2, beta = 1).
    Questions labelled -1 (answer outside the vocabulary) do not enter `L_task`.
    """

    def __init__(self, config: HBIConfig):
        super().__init__(config)
        self.hbi = HBIModel(config)
        self.alignment = HBIAlignmentLoss(config)
        self.qa_heads = nn.ModuleList([HBIVideoQAHead(config) for _ in range(NUM_LEVELS)])
        self.post_init()

    def answer_logits_per_level(
        self, text_features: HBITextFeatures, video_features: HBIVideoFeatures
    ) -> tuple[torch.Tensor, ...]:
        """Answer logits of every level for matched questions and videos: 3 tensors `(batch, num_labels)`."""
        return tuple(
            head(
                video_features.level_tokens[level],
                video_features.level_masks[level],
                text_features.level_tokens[level],
                text_features.level_masks[level],
            )
            for level, head in enumerate(self.qa_heads)
        )

    def fuse_answer_logits(self, logits_per_level: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """`sum_l qa_level_weights[l] * logits_l`: `(batch, num_labels)`."""
        return sum(w * logits for w, logits in zip(self.config.qa_level_weights, logits_per_level))

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        video_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_loss: bool | None = None,
    ) -> HBIVideoQAOutput:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch, words)`): question i is about video i.
            pixel_values (`torch.FloatTensor` of shape `(batch, frames, 3, H, W)`)
            attention_mask (`torch.LongTensor` of shape `(batch, words)`, *optional*)
            video_mask (`torch.LongTensor` of shape `(batch, frames)`, *optional*)
            labels (`torch.LongTensor` of shape `(batch,)`, *optional*): answer ids, -1 for an answer outside the
                vocabulary.
            return_loss (`bool`, *optional*): compute the loss of Eq. 16 (default: in training mode, given labels).
            return_dict (`bool`, *optional*): `False` returns a tuple of the output's fields, as transformers models do.
        """
        if return_loss is None:
            return_loss = self.training and labels is not None
        if return_loss and labels is None:
            raise ValueError("HBIForVideoQA needs `labels` (batch,) to compute the loss")
        text_features = self.hbi.get_text_features(input_ids, attention_mask)
        video_features = self.hbi.get_video_features(pixel_values, video_mask)
        logits_per_level = self.answer_logits_per_level(text_features, video_features)
        logits = self.fuse_answer_logits(logits_per_level)
        if not return_loss:
            return HBIVideoQAOutput(logits=logits, logits_per_level=logits_per_level)
        if labels.shape != (input_ids.shape[0],):
            raise ValueError(f"labels must be (batch,) = ({input_ids.shape[0]},); got {tuple(labels.shape)}")
        task_loss = sum(answer_cross_entropy(level_logits, labels) for level_logits in logits_per_level)
        parts = self.alignment(self.hbi, text_features, video_features)
        return HBIVideoQAOutput(
            loss=parts.loss + self.config.qa_loss_weight * task_loss,
            task_loss=task_loss,
            alignment_loss=parts.loss,
            contrastive_loss=parts.contrastive_loss,
            banzhaf_loss=parts.banzhaf_loss,
            distillation_loss=parts.distillation_loss,
            logits=logits,
            logits_per_level=logits_per_level,
        )


def answer_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the answer vocabulary, ignoring negative labels (-1 or -100: answers outside the
    vocabulary); 0 (with gradient graph) when no label of the batch is known."""
    known = labels >= 0
    if not known.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[known], labels[known])


# ---------------------------------------------------------------------------------------------------------------------
# Video captioning
# ---------------------------------------------------------------------------------------------------------------------

CACHE_NAME = "cache" if "cache" in {field.name for field in fields(Seq2SeqLMOutput)} else "past_key_values"
"""The name the installed transformers gives the generation key/value cache, read from its own encoder-decoder output
(`Seq2SeqLMOutput`): `cache` from transformers 5.24 on (there `past_key_values` is a deprecated alias), and
`past_key_values` before. `generate` passes the cache to `forward` and reads it back from the output under this name."""


@dataclass
class HBICaptioningEncoderOutput(ModelOutput):
    r"""
    The video memory the caption decoder attends to.

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch, memory_tokens, dim)`):
            The single-modal video tokens of the entity, action and event levels, concatenated along the token axis
            (frames, then clips, then segments), each with its level embedding added.
        attention_mask (`torch.BoolTensor` of shape `(batch, memory_tokens)`): valid memory tokens.
    """

    last_hidden_state: torch.FloatTensor | None = None
    attention_mask: torch.BoolTensor | None = None


@dataclass
class HBICaptioningOutput(ModelOutput):
    r"""
    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Eq. 16 `alignment_loss + caption_loss_weight * task_loss` when the alignment part is computed (training
            with `input_ids`), else `task_loss` alone.
        task_loss (`torch.FloatTensor` of shape `()`, *optional*): teacher-forced next-token cross-entropy.
        alignment_loss, contrastive_loss, banzhaf_loss, distillation_loss (`torch.FloatTensor` of shape `()`,
            *optional*): the alignment part of Eq. 16 between captions and videos and its parts.
        logits (`torch.FloatTensor` of shape `(batch, decoder_length, vocab_size)`): next-token logits.
        cache / past_key_values ([`~cache_utils.Cache`], *optional*, returned when `use_cache=True`): the decoder's
            key/value cache during generation, under the installed transformers' name ([`CACHE_NAME`]: `cache` from
            5.24 on, `past_key_values` before).
        encoder_last_hidden_state (`torch.FloatTensor` of shape `(batch, memory_tokens, dim)`): the video memory.
    """

    loss: torch.FloatTensor | None = None
    task_loss: torch.FloatTensor | None = None
    alignment_loss: torch.FloatTensor | None = None
    contrastive_loss: torch.FloatTensor | None = None
    banzhaf_loss: torch.FloatTensor | None = None
    distillation_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    if CACHE_NAME == "cache":
        cache: Cache | None = None
    else:
        past_key_values: Cache | None = None
    encoder_last_hidden_state: torch.FloatTensor | None = None


class HBICaptionAttention(nn.Module):
    """Multi-head attention of the caption decoder (scaled dot product); self-attention keeps its keys and values in
    the generation cache."""

    def __init__(self, config: HBIConfig, layer_idx: int):
        super().__init__()
        dim = config.projection_dim
        self.num_heads = config.caption_decoder_num_attention_heads
        self.head_dim = dim // self.num_heads
        self.layer_idx = layer_idx
        self.dropout = config.caption_dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _heads(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.view(tensor.shape[0], tensor.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        hidden: torch.Tensor,
        key_value_states: torch.Tensor,
        attention_mask: torch.Tensor,
        cache: Cache | None = None,
    ) -> torch.Tensor:
        """
        Args:
            hidden (`(batch, queries, dim)`), key_value_states (`(batch, keys, dim)`),
            attention_mask (`torch.BoolTensor` broadcastable to `(batch, heads, queries, all_keys)`): True = attend.
            cache: self-attention cache; the new keys / values are appended and all of them are attended to.
        """
        query = self._heads(self.q_proj(hidden))
        key = self._heads(self.k_proj(key_value_states))
        value = self._heads(self.v_proj(key_value_states))
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)
        attended = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out_proj(attended.transpose(1, 2).reshape(hidden.shape))


class HBICaptionDecoderLayer(nn.Module):
    """Pre-LayerNorm transformer decoder layer: causal self-attention, cross-attention over the video memory, MLP."""

    def __init__(self, config: HBIConfig, layer_idx: int):
        super().__init__()
        dim = config.projection_dim
        self.self_attn_norm = nn.LayerNorm(dim)
        self.self_attn = HBICaptionAttention(config, layer_idx)
        self.cross_attn_norm = nn.LayerNorm(dim)
        self.cross_attn = HBICaptionAttention(config, layer_idx)
        self.mlp_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, config.caption_decoder_intermediate_size)
        self.fc2 = nn.Linear(config.caption_decoder_intermediate_size, dim)
        self.dropout = nn.Dropout(config.caption_dropout)

    def forward(
        self,
        hidden: torch.Tensor,
        causal_mask: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        cache: Cache | None = None,
    ) -> torch.Tensor:
        """`hidden` `(batch, new_tokens, dim)`, `causal_mask` `(new_tokens, all_tokens)`, `memory`
        `(batch, memory_tokens, dim)`, `memory_mask` `(batch, memory_tokens)` -> `(batch, new_tokens, dim)`."""
        normed = self.self_attn_norm(hidden)
        hidden = hidden + self.dropout(self.self_attn(normed, normed, causal_mask, cache))
        hidden = hidden + self.dropout(
            self.cross_attn(self.cross_attn_norm(hidden), memory, memory_mask[:, None, None, :])
        )
        return hidden + self.dropout(self.fc2(F.gelu(self.fc1(self.mlp_norm(hidden)))))


class HBICaptionDecoder(nn.Module):
    """Token and position embeddings over the CLIP vocabulary, `caption_decoder_num_layers` decoder layers (paper:
    one), a final LayerNorm and the projection to the vocabulary."""

    def __init__(self, config: HBIConfig):
        super().__init__()
        dim = config.projection_dim
        self.token_embedding = nn.Embedding(config.text_config.vocab_size, dim)
        self.position_embedding = nn.Embedding(config.text_config.max_position_embeddings, dim)
        self.layers = nn.ModuleList(
            [HBICaptionDecoderLayer(config, layer_idx) for layer_idx in range(config.caption_decoder_num_layers)]
        )
        self.final_norm = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, config.text_config.vocab_size, bias=False)

    def forward(
        self,
        decoder_input_ids: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        cache: Cache | None = None,
    ) -> torch.Tensor:
        """
        Args:
            decoder_input_ids (`torch.LongTensor` of shape `(batch, new_tokens)`): the tokens after those in `cache`.
            memory (`(batch, memory_tokens, dim)`), memory_mask (`(batch, memory_tokens)`).
            cache: self-attention cache of the tokens decoded so far (generation), or `None`.

        Returns:
            Next-token logits `(batch, new_tokens, vocab_size)`.
        """
        past = cache.get_seq_length() if cache is not None else 0
        new_tokens = decoder_input_ids.shape[1]
        if past + new_tokens > self.position_embedding.num_embeddings:
            raise ValueError(
                f"captions are limited to text_config.max_position_embeddings={self.position_embedding.num_embeddings}"
                f" tokens; got {past + new_tokens}"
            )
        positions = torch.arange(past, past + new_tokens, device=decoder_input_ids.device)
        hidden = self.token_embedding(decoder_input_ids) + self.position_embedding(positions)
        all_positions = torch.arange(past + new_tokens, device=decoder_input_ids.device)
        causal_mask = all_positions.unsqueeze(0) <= positions.unsqueeze(1)
        for layer in self.layers:
            hidden = layer(hidden, causal_mask, memory, memory_mask, cache)
        return self.lm_head(self.final_norm(hidden))


class HBICaptioningVideoEncoder:
    """What [`HBIForCaptioning.get_encoder`] hands to `generate`: encodes `pixel_values` once into the decoder's
    video memory. A thin view on the model (it owns no weights)."""

    main_input_name = "pixel_values"

    def __init__(self, model: "HBIForCaptioning"):
        self.model = model

    def forward(
        self, pixel_values: torch.Tensor, video_mask: torch.Tensor | None = None, **kwargs
    ) -> HBICaptioningEncoderOutput:
        return self.model.encode_video(pixel_values, video_mask)

    __call__ = forward


def caption_token_ids(tokenizer: PreTrainedTokenizerBase | ProcessorMixin) -> dict[str, int]:
    """
    The start, end and padding ids that caption generation takes from a tokenizer (or a processor holding one, such
    as [`HBIProcessor`]): the tokens the captions were tokenised with, hence the ones the decoder learned. For CLIP's
    tokenizer: `<|startoftext|>` (49406) starts, `<|endoftext|>` (49407) ends and pads.

    Returns:
        `dict` with `bos_token_id`, `decoder_start_token_id` (the same), `eos_token_id` and `pad_token_id` (the end
        token when the tokenizer has no padding token): keyword arguments of `generate` / `GenerationConfig`.

    Raises:
        `ValueError`: the tokenizer has no start or no end token.
    """
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    if bos is None or eos is None:
        raise ValueError(
            f"caption generation needs the tokenizer's start and end tokens; {type(tokenizer).__name__} has "
            f"bos_token={tokenizer.bos_token!r}, eos_token={tokenizer.eos_token!r}"
        )
    return {
        "bos_token_id": bos,
        "decoder_start_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": eos if pad is None else pad,
    }


class HBICaptioningGenerationConfig(GenerationConfig):
    """Generation defaults of [`HBIForCaptioning`]: caption start / end / padding tokens and captions of at most
    `max_words` tokens.

    The tokens belong to the tokenizer ([`caption_token_ids`]; [`HBIForCaptioning.set_caption_tokens`],
    [`HBIForCaptioning.from_clip`] and the task training set them from it). A model built from a config alone has no
    tokenizer, so `from_model_config` falls back on `text_config`'s start and end ids and pads with the end id, as
    CLIP's tokenizer does: `text_config.pad_token_id` is not a CLIP padding token (transformers' default 1 is the BPE
    token `"`). It reads nothing else: the default `from_model_config` would copy the contrastive `temperature` of
    [`HBIConfig`] into the sampling temperature (and warn that it is set without sampling)."""

    @classmethod
    def from_model_config(cls, model_config: HBIConfig) -> "HBICaptioningGenerationConfig":
        text_config = model_config.text_config
        return cls(
            bos_token_id=text_config.bos_token_id,
            decoder_start_token_id=text_config.bos_token_id,
            eos_token_id=text_config.eos_token_id,
            pad_token_id=text_config.eos_token_id,
            max_new_tokens=model_config.max_words - 1,
        )


class HBIForCaptioning(HBIPreTrainedModel, GenerationMixin):
    r"""
    HBI for video captioning (Sec. 3.3; spec §6): an encoder-decoder whose encoder is [`HBIModel`]'s video stream and
    whose decoder is a one-layer transformer decoder over the CLIP vocabulary (`text_config.vocab_size`; captions start
    and end with the tokenizer's start and end tokens, see [`HBIForCaptioning.set_caption_tokens`]).

    The decoder cross-attends to the *single-modal* video tokens of all three levels, concatenated (frames, clips,
    segments, each with a learned level embedding), in training and at inference alike: no text exists at inference,
    so no reconstructed (text-conditioned) representation can feed the decoder. The reconstructed representations
    still enter the alignment losses during training.

    Training objective, Eq. 16: `L = sum_levels (L_C + alpha L_I) + beta L_D + lambda L_task` with `L_task` the
    teacher-forced cross-entropy of the next caption token and lambda `config.caption_loss_weight` (paper 3.3). The
    paper freezes CLIP for captioning (lr 5e-4): that is a training choice (`hbi_hf.training.freeze_clip_towers`).

    Generation goes through [`~generation.GenerationMixin.generate`] (greedy, sampling, beam search):
    `model.generate(pixel_values=..., video_mask=..., num_beams=3, max_new_tokens=20)`.
    """

    main_input_name = "pixel_values"
    generation_config_class = HBICaptioningGenerationConfig

    def __init__(self, config: HBIConfig):
        config.is_encoder_decoder = True
        super().__init__(config)
        self.hbi = HBIModel(config)
        self.alignment = HBIAlignmentLoss(config)
        self.level_embedding = nn.Embedding(NUM_LEVELS, config.projection_dim)
        self.decoder = HBICaptionDecoder(config)
        self.post_init()

    @classmethod
    def from_clip(
        cls,
        clip_name_or_path: str = "openai/clip-vit-base-patch32",
        tokenizer: PreTrainedTokenizerBase | ProcessorMixin | None = None,
        **config_overrides,
    ) -> "HBIForCaptioning":
        r"""
        [`HBIPreTrainedModel.from_clip`], with the generation tokens of the CLIP checkpoint's tokenizer: CLIP configs
        on the Hub carry the legacy ids bos 0 / eos 2 / pad 1 (`!`, `#`, `"`), which are no caption tokens.

        Args:
            clip_name_or_path (`str`, *optional*, defaults to `"openai/clip-vit-base-patch32"`)
            tokenizer ([`PreTrainedTokenizerBase`] or a processor holding one, *optional*): the tokenizer the captions
                will be tokenised with; by default the one saved with `clip_name_or_path`.
            config_overrides: any [`HBIConfig`] field.

        Raises:
            `ValueError`: no tokenizer was given and `clip_name_or_path` has none that covers its vocabulary.
        """
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(clip_name_or_path)
        model = super().from_clip(clip_name_or_path, **config_overrides)
        model.set_caption_tokens(tokenizer)
        return model

    def set_caption_tokens(self, tokenizer: PreTrainedTokenizerBase | ProcessorMixin) -> None:
        """
        Make generation start, end and pad with `tokenizer`'s tokens ([`caption_token_ids`]): they are set in
        `self.generation_config` and, as transformers' `Trainer` does when it trains with a tokenizer
        (`align_special_tokens`), in `config.text_config` (both saved with the model). The Trainer's own alignment
        leaves `decoder_start_token_id`, the token an encoder-decoder's generation starts from, as it was.

        Raises:
            `ValueError`: the tokenizer's vocabulary is not the decoder's (`text_config.vocab_size` ids), e.g. a
            folder without tokenizer files, from which `AutoTokenizer` builds a tokenizer of only its special tokens.
        """
        text_tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
        vocab_size = self.config.text_config.vocab_size
        if len(text_tokenizer) != vocab_size:
            raise ValueError(
                f"the tokenizer {text_tokenizer.name_or_path!r} has {len(text_tokenizer)} tokens, the caption decoder "
                f"predicts text_config.vocab_size={vocab_size}: give the tokenizer the captions are tokenised with "
                "(for from_clip: tokenizer=...)"
            )
        for name, token_id in caption_token_ids(text_tokenizer).items():
            setattr(self.generation_config, name, token_id)
            if name != "decoder_start_token_id":
                setattr(self.config.text_config, name, token_id)

    def get_encoder(self, modality: str | None = None) -> HBICaptioningVideoEncoder:
        return HBICaptioningVideoEncoder(self)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.decoder.token_embedding

    def get_output_embeddings(self) -> nn.Linear:
        return self.decoder.lm_head

    def _prepare_special_tokens(
        self, generation_config: GenerationConfig, kwargs_has_attention_mask: bool | None = None, **kwargs
    ) -> None:
        # `generate`'s check for an `attention_mask` concerns padded *token* inputs; the encoder input here is a video,
        # whose padding `video_mask` marks, so its "pad token is the eos token" warning never applies.
        super()._prepare_special_tokens(generation_config, None, **kwargs)

    def video_memory(self, video_features: HBIVideoFeatures) -> HBICaptioningEncoderOutput:
        """The decoder memory from video features: the three levels' single-modal tokens, concatenated."""
        tokens = [
            level_tokens + self.level_embedding.weight[level]
            for level, level_tokens in enumerate(video_features.level_tokens)
        ]
        return HBICaptioningEncoderOutput(
            last_hidden_state=torch.cat(tokens, dim=1), attention_mask=torch.cat(video_features.level_masks, dim=1)
        )

    def encode_video(
        self, pixel_values: torch.Tensor, video_mask: torch.Tensor | None = None
    ) -> HBICaptioningEncoderOutput:
        """`pixel_values` `(batch, frames, 3, H, W)` -> the decoder memory ([`HBICaptioningEncoderOutput`])."""
        return self.video_memory(self.hbi.get_video_features(pixel_values, video_mask))

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        video_mask: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        encoder_outputs: HBICaptioningEncoderOutput | None = None,
        cache: Cache | None = None,
        past_key_values: Cache | None = None,
        use_cache: bool | None = None,
        return_loss: bool | None = None,
        **kwargs,
    ) -> HBICaptioningOutput:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch, frames, 3, H, W)`, *optional*): needed unless
                `encoder_outputs` is given.
            video_mask (`torch.LongTensor` of shape `(batch, frames)`, *optional*)
            input_ids (`torch.LongTensor` of shape `(batch, words)`, *optional*): tokenised reference captions
                (start token, words, end token, padding), caption i of video i. Teacher forcing: the decoder reads
                `input_ids[:, :-1]` and predicts `input_ids[:, 1:]` (padding ignored); the alignment losses use them
                as the text side.
            attention_mask (`torch.LongTensor` of shape `(batch, words)`, *optional*): 1 for real caption tokens.
            decoder_input_ids (`torch.LongTensor` of shape `(batch, length)`, *optional*): decoder tokens given
                directly (generation); overrides the teacher-forcing input.
            labels (`torch.LongTensor` of shape `(batch, length)`, *optional*): next-token targets aligned with the
                decoder input, -100 = ignored; by default derived from `input_ids`.
            encoder_outputs ([`HBICaptioningEncoderOutput`], *optional*): a precomputed video memory.
            cache ([`~cache_utils.Cache`], *optional*): the decoder's self-attention cache of the tokens decoded so
                far (generation): `decoder_input_ids` then holds only the tokens after them. A plain `Cache` or
                `generate`'s `EncoderDecoderCache` (its self-attention part is used; the video memory is not cached).
            past_key_values ([`~cache_utils.Cache`], *optional*): the same cache under the name transformers used
                before 5.24 (its `generate` passes this keyword); give one of the two.
            use_cache (`bool`, *optional*): return the cache in the output (under [`CACHE_NAME`]).
            return_loss (`bool`, *optional*): compute the loss (default: in training mode when targets exist).
        """
        if encoder_outputs is None and pixel_values is None:
            raise ValueError("HBIForCaptioning needs pixel_values (batch, frames, 3, H, W) or encoder_outputs")
        if decoder_input_ids is None:
            if input_ids is None:
                raise ValueError("HBIForCaptioning needs input_ids (teacher forcing) or decoder_input_ids")
            decoder_input_ids = input_ids[:, :-1]
            if labels is None:
                labels = caption_labels(input_ids, attention_mask)
        if return_loss is None:
            return_loss = self.training and labels is not None
        if return_loss and labels is None:
            raise ValueError("HBIForCaptioning needs input_ids or labels to compute the loss")

        video_features = None
        if encoder_outputs is None:
            video_features = self.hbi.get_video_features(pixel_values, video_mask)
            encoder_outputs = self.video_memory(video_features)
        if cache is not None and past_key_values is not None:
            raise ValueError("HBIForCaptioning got both cache and past_key_values (its older name); give one of them")
        cache = cache if cache is not None else past_key_values
        self_attention_cache = cache.self_attention_cache if isinstance(cache, EncoderDecoderCache) else cache
        logits = self.decoder(
            decoder_input_ids, encoder_outputs.last_hidden_state, encoder_outputs.attention_mask, self_attention_cache
        )
        output = HBICaptioningOutput(
            logits=logits,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            **{CACHE_NAME: cache if use_cache else None},
        )
        if not return_loss:
            return output
        if labels.shape != decoder_input_ids.shape:
            raise ValueError(
                f"labels must have the shape of the decoder input {tuple(decoder_input_ids.shape)}; "
                f"got {tuple(labels.shape)}"
            )
        output.task_loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        output.loss = self.config.caption_loss_weight * output.task_loss
        if input_ids is not None and video_features is not None:
            text_features = self.hbi.get_text_features(input_ids, attention_mask)
            parts = self.alignment(self.hbi, text_features, video_features)
            output.loss = parts.loss + output.loss
            output.alignment_loss = parts.loss
            output.contrastive_loss = parts.contrastive_loss
            output.banzhaf_loss = parts.banzhaf_loss
            output.distillation_loss = parts.distillation_loss
        return output


def caption_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Teacher-forcing targets of tokenised captions: `input_ids[:, 1:]` with padding set to -100,
    `(batch, words - 1)`."""
    labels = input_ids[:, 1:].clone()
    if attention_mask is not None:
        labels = labels.masked_fill(attention_mask[:, 1:] == 0, -100)
    return labels


__all__ = [
    "HBIAlignmentLoss",
    "HBICaptioningEncoderOutput",
    "HBICaptioningGenerationConfig",
    "HBICaptioningOutput",
    "HBIForCaptioning",
    "HBIForVideoQA",
    "HBIVideoQAOutput",
    "answer_cross_entropy",
    "caption_labels",
    "caption_token_ids",
    "HBIBanzhafEstimator",
    "HBIBanzhafHead",
    "HBIForRetrieval",
    "HBIModel",
    "HBIPreTrainedModel",
    "HBITextFeatures",
    "HBIVideoFeatures",
    "HBIModalityFeatures",
    "HBIModelOutput",
    "HBIRetrievalOutput",
    "HBIAlignmentLossOutput",
    "HBIBanzhafEstimatorOutput",
    "banzhaf_interaction_loss",
    "contrastive_loss",
    "dpc_knn_cluster",
    "gather_with_local_grad",
    "gather_world_size",
    "masked_softmax",
    "self_distillation_loss",
    "banzhaf_cell_features",
    "banzhaf_line_statistics",
    "weighted_token_interaction",
]
