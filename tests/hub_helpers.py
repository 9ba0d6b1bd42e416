"""Tiny HBI models and inputs for the sharing tests (Hub, model cards, PEFT)."""

import torch
from conftest import tiny_hbi_config

__all__ = ["tiny_batch", "tiny_hbi_config"]


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
