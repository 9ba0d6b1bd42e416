"""A plain per-pair implementation of HBI's similarity, to check [`HBIModel.similarity_per_level`] against.

It follows the paper's equations literally for one (text, video) pair at one level: the reconstructed tokens of
Eqs. 2-5 are materialised (HBI V2), normalised, their cosine matrix taken over the valid tokens only, and Eq. 12 evaluated on it, one pair at a time.
It is slow by design and used only by tests and `benchmarks/eval_similarity.py`.
"""

import torch
import torch.nn.functional as F

from .modeling_hbi import HBIModel, HBITextFeatures, HBIVideoFeatures


def _masked_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = torch.zeros_like(logits)
    weights[mask] = torch.softmax(logits[mask], dim=0)
    return weights


def reconstruct_pair(
    model: HBIModel, level: int, text_tokens, text_mask, text_query, video_tokens, video_mask
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reconstructed word tokens T' `(words, dim)` and frame tokens V' `(frames, dim)` of one pair (Eqs. 2-5)."""
    reconstruction = model.levels[level].reconstruction
    pooled_video = video_tokens[video_mask].mean(dim=0)
    video_cross = _masked_softmax(video_tokens @ text_query, video_mask) @ video_tokens  # Eq. 2, v^c
    text_cross = _masked_softmax(text_tokens @ pooled_video, text_mask) @ text_tokens  # Eq. 4, t^c
    gamma = reconstruction.video_gate(video_tokens - video_cross)  # (frames, 1)
    delta = reconstruction.text_gate(text_tokens - text_cross)  # (words, 1)
    video = gamma * video_tokens + (1 - gamma) * video_cross  # Eq. 3
    text = delta * text_tokens + (1 - delta) * text_cross  # Eq. 5
    return text, video


def pair_similarity(
    model: HBIModel, text: HBITextFeatures, video: HBIVideoFeatures, text_index: int, video_index: int, level: int
) -> torch.Tensor:
    """S of Eq. 12 between text `text_index` and video `video_index` at `level`, one pair at a time."""
    text_mask = text.level_masks[level][text_index]
    video_mask = video.level_masks[level][video_index]
    text_tokens = text.level_tokens[level][text_index]
    video_tokens = video.level_tokens[level][video_index]
    if model.config.representation_reconstruction:
        text_tokens, video_tokens = reconstruct_pair(
            model, level, text_tokens, text_mask, text.global_embeddings[text_index], video_tokens, video_mask
        )
    words = F.normalize(text_tokens[text_mask], dim=-1)
    frames = F.normalize(video_tokens[video_mask], dim=-1)
    alignment = words @ frames.T  # (valid words, valid frames)
    word_weights = torch.softmax(text.level_weight_logits[level][text_index][text_mask], dim=0)
    frame_weights = torch.softmax(video.level_weight_logits[level][video_index][video_mask], dim=0)
    text_to_video = (word_weights * alignment.amax(dim=1)).sum()
    video_to_text = (frame_weights * alignment.amax(dim=0)).sum()
    return 0.5 * (text_to_video + video_to_text)


def reference_similarity(
    model: HBIModel,
    text: HBITextFeatures,
    video: HBIVideoFeatures,
    level: int,
    pairs: list[tuple[int, int]] | None = None,
) -> torch.Tensor:
    """S at `level` for every pair `(n_text, n_video)`, or for the listed `(text, video)` pairs `(len(pairs),)`."""
    with torch.no_grad():
        if pairs is not None:
            return torch.stack([pair_similarity(model, text, video, t, v, level) for t, v in pairs])
        return torch.stack(
            [
                torch.stack([pair_similarity(model, text, video, t, v, level) for v in range(len(video))])
                for t in range(len(text))
            ]
        )


__all__ = ["pair_similarity", "reconstruct_pair", "reference_similarity"]
