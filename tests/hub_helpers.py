"""Tiny HBI models and inputs for the sharing tests (Hub, model cards, PEFT)."""

import torch

from hbi_hf import HBIConfig

TINY_TEXT = dict(
    hidden_size=32,
    intermediate_size=64,
    num_attention_heads=4,
    num_hidden_layers=2,
    vocab_size=100,
    max_position_embeddings=16,
    bos_token_id=98,
    eos_token_id=99,
    pad_token_id=0,
)
TINY_VISION = dict(
    hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2, image_size=32, patch_size=16
)


def tiny_hbi_config(**overrides) -> HBIConfig:
    """A complete HBI configuration small enough for unit tests (6 frames of 32 px, 10 words, width 32)."""
    settings = dict(
        text_config=dict(TINY_TEXT),
        vision_config=dict(TINY_VISION),
        projection_dim=32,
        temporal_num_attention_heads=4,
        temporal_intermediate_size=64,
        merge_num_attention_heads=4,
        num_frames=6,
        max_words=10,
        video_cluster_counts=[3, 2],
        text_cluster_counts=[4, 2],
        estimator_config=dict(hidden_size=8),
    )
    settings.update(overrides)
    return HBIConfig(**settings)


def tiny_batch(batch_size: int = 3, frames: int = 6, words: int = 10, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random matched text/video inputs, the last text and video padded."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, 98, (batch_size, words), generator=generator)
    input_ids[:, 0] = 98
    input_ids[:, -1] = 99
    attention_mask = torch.ones(batch_size, words, dtype=torch.long)
    video_mask = torch.ones(batch_size, frames, dtype=torch.long)
    input_ids[-1, words - 3] = 99
    input_ids[-1, words - 2 :] = 0
    attention_mask[-1, words - 2 :] = 0
    video_mask[-1, frames - 2 :] = 0
    pixel_values = torch.randn(batch_size, frames, 3, 32, 32, generator=generator)
    return dict(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values, video_mask=video_mask)
