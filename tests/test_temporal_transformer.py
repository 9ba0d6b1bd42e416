"""The temporal transformer over frame embeddings: padded frames never move the valid frames' outputs, however the
module is built and whichever attention implementation runs it; and a clip longer than the frame position table is
refused early, naming both numbers, wherever the frame count is set (config, `from_pretrained` overrides, inputs)."""

import logging

import pytest
import torch
from conftest import tiny_batch, tiny_hbi_config

from hbi_hf import HBIConfig, HBIModel
from hbi_hf.modeling_hbi import HBITemporalTransformer

CPU_ATTENTION = (None, "eager", "sdpa")  # None: the config names no implementation (the default of a bare config)


def padded_frames_shift(transformer: HBITemporalTransformer) -> float:
    """Largest change of the valid frames' outputs when the padded frames' embeddings are replaced by random ones."""
    generator = torch.Generator().manual_seed(0)
    frames = torch.randn(3, 6, 32, generator=generator)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    noisy = torch.where(mask.unsqueeze(-1), frames, 5 * torch.randn(frames.shape, generator=generator))
    with torch.no_grad():
        clean, moved = transformer(frames, mask), transformer(noisy, mask)
    return float((clean - moved)[mask].abs().max())


@pytest.mark.parametrize("attention", CPU_ATTENTION)
def test_a_bare_temporal_transformer_ignores_padded_frames(attention):
    config = tiny_hbi_config() if attention is None else tiny_hbi_config(attn_implementation=attention)
    assert config._attn_implementation == attention
    torch.manual_seed(0)
    assert padded_frames_shift(HBITemporalTransformer(config).eval()) == 0.0


@pytest.mark.parametrize("attention", CPU_ATTENTION)
def test_the_temporal_transformer_of_a_model_and_of_a_loaded_model_ignores_padded_frames(attention, tmp_path):
    config = tiny_hbi_config() if attention is None else tiny_hbi_config(attn_implementation=attention)
    torch.manual_seed(0)
    model = HBIModel(config).eval()
    assert padded_frames_shift(model.temporal) == 0.0
    model.save_pretrained(tmp_path)
    kwargs = {} if attention is None else {"attn_implementation": attention}
    assert padded_frames_shift(HBIModel.from_pretrained(tmp_path, **kwargs).eval().temporal) == 0.0


def test_switching_the_attention_implementation_keeps_padded_frames_out():
    torch.manual_seed(0)
    model = HBIModel(tiny_hbi_config()).eval()
    for attention in ("eager", "sdpa"):
        model.set_attn_implementation(attention)
        assert model.temporal.config._attn_implementation == attention
        assert padded_frames_shift(model.temporal) == 0.0


def test_num_frames_beyond_the_position_table_is_refused_by_the_config_naming_both_numbers():
    with pytest.raises(ValueError, match=r"num_frames \(8\) must be in \[1, temporal_max_position_embeddings=6\]"):
        tiny_hbi_config(num_frames=8, temporal_max_position_embeddings=6)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (dict(num_frames=100), r"num_frames \(100\) must be in \[1, temporal_max_position_embeddings=77\]"),
        (dict(temporal_max_position_embeddings=4), r"num_frames \(6\) .*temporal_max_position_embeddings=4\]"),
    ],
)
def test_from_pretrained_overrides_are_checked_as_a_new_config(tmp_path, override, message):
    HBIModel(tiny_hbi_config()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=message):
        HBIConfig.from_pretrained(tmp_path, **override)
    with pytest.raises(ValueError, match=message):  # before any weight is loaded
        HBIModel.from_pretrained(tmp_path, **override)
    assert HBIModel.from_pretrained(tmp_path, num_frames=4).config.num_frames == 4  # a valid override is kept


def test_a_clip_longer_than_the_position_table_is_refused_naming_both_numbers():
    config = tiny_hbi_config(num_frames=6, temporal_max_position_embeddings=6)
    model = HBIModel(config).eval()
    batch = tiny_batch(batch_size=2, frames=7)
    with pytest.raises(ValueError, match=r"pixel_values has 7 frames, more than temporal_max_position_embeddings=6"):
        model.get_video_features(batch["pixel_values"], batch["video_mask"])
    with pytest.raises(ValueError, match=r"frame_embeddings has 7 frames, more than the 6 rows"):
        model.temporal(torch.zeros(2, 7, 32), torch.ones(2, 7, dtype=torch.bool))


def test_frame_positions_past_clips_text_positions_start_random_with_a_warning(caplog):
    config = tiny_hbi_config(temporal_max_position_embeddings=20)  # the tiny text tower has 16 positions
    model = HBIModel(config)
    with caplog.at_level(logging.WARNING, logger="hbi_hf.modeling_hbi"):
        model.initialize_temporal_from_clip()
    assert "frame positions 16 to 19 keep their random init" in caplog.text
    text_positions = model.clip.text_model.embeddings.position_embedding.weight
    torch.testing.assert_close(model.temporal.frame_position_embeddings.weight[:16], text_positions)


def test_evaluation_refuses_a_processor_sampling_more_frames_than_the_table_before_decoding(tmp_path):
    from datasets import Dataset

    from hbi_hf import HBIForRetrieval, HBIProcessor, HBIVideoProcessor
    from hbi_hf.data import build_clip_tokenizer
    from hbi_hf.retrieval_evaluation import evaluate_retrieval

    model = HBIForRetrieval(tiny_hbi_config(num_frames=6, temporal_max_position_embeddings=8))
    processor = HBIProcessor(HBIVideoProcessor(num_frames=9), build_clip_tokenizer(), max_words=10)
    rows = Dataset.from_list([{"video_id": "a", "video_path": str(tmp_path / "missing.mp4"), "caption": "a dog"}])
    with pytest.raises(ValueError, match=r"num_frames=9 .* more than the model's temporal_max_position_embeddings=8"):
        evaluate_retrieval(model, rows, processor)  # refused before the (missing) video is looked at
