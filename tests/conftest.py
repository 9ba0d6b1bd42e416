"""Shared fixtures: tiny random HBI / CLIP configurations and inputs, fast on a CPU."""

import pytest
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
TINY_TEXT_CLIP_VOCABULARY = dict(
    TINY_TEXT, vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407
)
"""The tiny text tower over the real CLIP vocabulary, for inputs tokenised by `build_clip_tokenizer()`."""
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


def tiny_batch(batch_size: int = 4, frames: int = 6, words: int = 10, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random matched text/video inputs with some padded words and frames."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, 98, (batch_size, words), generator=generator)
    attention_mask = torch.ones(batch_size, words, dtype=torch.long)
    video_mask = torch.ones(batch_size, frames, dtype=torch.long)
    for row in range(batch_size):
        length = words - (row * 3) % (words - 2)
        input_ids[row, 0] = 98
        input_ids[row, length - 1] = 99
        input_ids[row, length:] = 0
        attention_mask[row, length:] = 0
        video_mask[row, frames - row % 3 :] = 0
    pixel_values = torch.randn(batch_size, frames, 3, 32, 32, generator=generator)
    return dict(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values, video_mask=video_mask)


@pytest.fixture
def config() -> HBIConfig:
    return tiny_hbi_config()


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    return tiny_batch()


@pytest.fixture(scope="session")
def tiny_synthetic_root(tmp_path_factory):
    """A tiny embedded dataset (6 train and 3 test scenes), generated once per test session."""
    from hbi_hf.data.synthetic import generate_synthetic_dataset

    return generate_synthetic_dataset(
        tmp_path_factory.mktemp("synthetic") / "tiny",
        seed=3,
        num_train_videos=6,
        num_test_videos=3,
        captions_per_train_video=2,
    )


@pytest.fixture(scope="session")
def trusted_index(tmp_path_factory):
    """`(videos, model, index)`: coloured clips, a tiny model trained until it ranks each clip first for its caption,
    saved with the package's real processor, and its index (tests/serve_fixtures.py)."""
    from serve_fixtures import build_trusted_index

    return build_trusted_index(tmp_path_factory.mktemp("trusted"))
