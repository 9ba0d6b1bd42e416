"""Specification of HBIVideoProcessor, HBIProcessor and the offline CLIP tokenizer."""

import importlib.util

import numpy as np
import pytest
import torch
from transformers import AutoProcessor
from transformers.models.auto.video_processing_auto import AutoVideoProcessor

import hbi_hf  # noqa: F401 - registers the Auto classes
from hbi_hf import HBIProcessor, HBIVideoProcessor
from hbi_hf.data import build_clip_tokenizer
from hbi_hf.data.synthetic import write_video
from hbi_hf.video_processing_hbi import HBIVideoDecodeError, read_video, sample_frame_indices

DECORD = pytest.mark.skipif(importlib.util.find_spec("decord") is None, reason="decord has no wheel here")
SMALL = {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}}


@pytest.fixture(scope="module")
def tokenizer():
    return build_clip_tokenizer()


@pytest.fixture(scope="module")
def ramp_video(tmp_path_factory):
    """40 frames at 8 fps (5 s); frame i is a flat grey of level 6 * i, so decoded frames reveal their index."""
    path = tmp_path_factory.mktemp("videos") / "ramp.mp4"
    frames = np.repeat(np.arange(40, dtype=np.uint8)[:, None, None, None] * 6, 48, axis=1)
    write_video(np.repeat(np.repeat(frames, 64, axis=2), 3, axis=3), path, fps=8)
    return path


def test_clip_tokenizer_gives_openai_ids(tokenizer):
    assert len(tokenizer) == 49408
    assert tokenizer("a cat")["input_ids"] == [49406, 320, 2368, 49407]


def test_fps_sampling_takes_one_frame_per_second_then_uniform():
    assert sample_frame_indices(40, num_frames=12, video_fps=8.0).tolist() == [0, 8, 16, 24, 32]
    assert sample_frame_indices(80, num_frames=4, video_fps=8.0).tolist() == [0, 24, 48, 72]
    assert sample_frame_indices(300, num_frames=3, video_fps=30.0, sampling_fps=2.0).tolist() == [0, 150, 285]


def test_uniform_sampling_spreads_frames_over_the_whole_video():
    assert sample_frame_indices(40, num_frames=4, video_fps=8.0, sampling_mode="uniform").tolist() == [0, 13, 26, 39]
    assert sample_frame_indices(3, num_frames=5, sampling_mode="uniform").tolist() == [0, 1, 2]


def test_fps_sampling_without_a_known_frame_rate_is_uniform_over_the_given_frames():
    assert sample_frame_indices(10, num_frames=4).tolist() == [0, 3, 6, 9]


def test_unknown_sampling_mode_is_rejected():
    with pytest.raises(ValueError, match="sampling_mode"):
        sample_frame_indices(10, 4, sampling_mode="random")
    with pytest.raises(ValueError, match="sampling_mode"):
        HBIVideoProcessor(sampling_mode="random")


@pytest.mark.parametrize("backend", ["pyav", pytest.param("decord", marks=DECORD)])
def test_decoders_return_the_sampled_frames(ramp_video, backend):
    frames, metadata = read_video(ramp_video, lambda m: sample_frame_indices(m.total_num_frames, 3, m.fps), backend)
    assert metadata.total_num_frames == 40 and metadata.fps == pytest.approx(8.0)
    assert frames.shape == (3, 48, 64, 3)
    np.testing.assert_allclose(frames[..., 0].mean(axis=(1, 2)), [0, 6 * 16, 6 * 32], atol=3)


def test_video_processor_outputs_pixel_values_and_video_mask(ramp_video):
    processor = HBIVideoProcessor(num_frames=8, **SMALL)
    batch = processor([str(ramp_video), str(ramp_video)], return_tensors="pt")
    assert batch["pixel_values"].shape == (2, 8, 3, 32, 32)
    assert batch["video_mask"].tolist() == [[1] * 5 + [0] * 3] * 2
    assert torch.all(batch["pixel_values"][:, 5:] == 0)


def test_video_processor_normalises_with_clip_mean_and_std():
    processor = HBIVideoProcessor(num_frames=2, **SMALL)
    frames = np.full((2, 40, 50, 3), 255, dtype=np.uint8)
    pixel_values = processor(frames, return_tensors="pt")["pixel_values"]
    expected = (1 - torch.tensor(processor.image_mean)) / torch.tensor(processor.image_std)
    torch.testing.assert_close(pixel_values[0, :, :, 16, 16], expected.expand(2, 3), atol=1e-4, rtol=0)


def test_video_processor_accepts_decoded_frames_and_pads_short_videos():
    processor = HBIVideoProcessor(num_frames=4, **SMALL)
    videos = [np.zeros((2, 30, 40, 3), np.uint8), np.zeros((9, 30, 40, 3), np.uint8)]
    batch = processor(videos, return_tensors="pt")
    assert batch["pixel_values"].shape == (2, 4, 3, 32, 32)
    assert batch["video_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]


def test_resize_keeps_aspect_ratio_and_centre_crop_is_square():
    processor = HBIVideoProcessor(num_frames=1, size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    frame = np.zeros((1, 20, 40, 3), np.uint8)
    frame[:, :, 15:25] = 255
    pixel_values = processor(frame, do_normalize=False, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 1, 3, 16, 16)
    assert pixel_values[0, 0, 0, 8, 8] > 0.9 and pixel_values[0, 0, 0, 8, 0] < 0.1


def test_processor_pads_and_truncates_text_to_max_words(tokenizer, ramp_video):
    processor = HBIProcessor(HBIVideoProcessor(num_frames=3, **SMALL), tokenizer, max_words=6)
    batch = processor(text=["a cat", "a very long caption about many things"], videos=[str(ramp_video)] * 2)
    assert batch["input_ids"].shape == (2, 6)
    assert batch["input_ids"][0].tolist() == [49406, 320, 2368, 49407, 49407, 49407]
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 1, 0, 0]
    assert batch["input_ids"][1, -1].item() == 49407
    assert batch["pixel_values"].shape == (2, 3, 3, 32, 32)


def test_processor_rejects_non_text_captions(tokenizer):
    processor = HBIProcessor(HBIVideoProcessor(), tokenizer)
    with pytest.raises(TypeError, match=r"text\[1\]"):
        processor(text=["fine", None])


def test_processor_round_trips_through_auto_processor(tokenizer, tmp_path):
    processor = HBIProcessor(HBIVideoProcessor(num_frames=5, sampling_mode="uniform", **SMALL), tokenizer, max_words=9)
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, HBIProcessor) and isinstance(loaded.video_processor, HBIVideoProcessor)
    assert loaded.max_words == 9
    assert loaded.video_processor.to_dict() == processor.video_processor.to_dict()
    assert loaded.tokenizer("a cat")["input_ids"] == [49406, 320, 2368, 49407]
    assert isinstance(AutoVideoProcessor.from_pretrained(tmp_path), HBIVideoProcessor)


def test_missing_video_raises_an_error_naming_the_file(tmp_path):
    with pytest.raises(HBIVideoDecodeError, match="nope.mp4: file not found"):
        HBIVideoProcessor()(str(tmp_path / "nope.mp4"))


def test_text_keywords_reach_the_tokenizer(tokenizer, ramp_video):
    processor = HBIProcessor(HBIVideoProcessor(num_frames=3, **SMALL), tokenizer, max_words=16)
    captions = ["a cat", "a dog runs"]
    longest = processor(text=captions, videos=[str(ramp_video)] * 2, padding="longest")
    assert longest["input_ids"].shape == (2, 5) and longest["pixel_values"].shape == (2, 3, 3, 32, 32)
    short = processor(text=["a very long caption about many things"], truncation=True, max_length=4)
    assert short["input_ids"].tolist() == [[49406, 320, 1070, 49407]]


def test_unknown_keywords_are_refused_with_the_accepted_ones_named(tokenizer):
    processor = HBIProcessor(HBIVideoProcessor(num_frames=2, **SMALL), tokenizer)
    frames = np.zeros((3, 40, 40, 3), np.uint8)
    with pytest.raises(TypeError, match=r"unknown keyword\(s\) \['frame_rate'\].*video keywords"):
        processor(videos=frames, frame_rate=2)
    with pytest.raises(TypeError, match=r"unknown keyword\(s\) \['padding'\].*HBIProcessor"):
        processor.video_processor(frames, padding="longest")
    with pytest.raises(ValueError, match="without videos"):
        processor(text=["a cat"], num_frames=4)


def test_video_keywords_the_processor_would_ignore_are_refused():
    processor = HBIVideoProcessor(num_frames=2, **SMALL)
    frames = np.zeros((3, 40, 40, 3), np.uint8)
    with pytest.raises(ValueError, match="do_pad"):
        processor(frames, do_pad=True)
    with pytest.raises(ValueError, match="data_format"):
        processor(frames, data_format="channels_last")
    with pytest.raises(ValueError, match="do_sample_frames=False"):
        processor(frames, do_sample_frames=False, fps=2)


def test_fps_is_transformers_name_for_sampling_fps(ramp_video):
    def indices(**kwargs):
        batch = HBIVideoProcessor(num_frames=12, **SMALL)(str(ramp_video), return_metadata=True, **kwargs)
        return batch["video_metadata"][0].frames_indices

    assert indices(fps=2) == indices(sampling_fps=2) == list(range(0, 40, 4))
    assert indices() == list(range(0, 40, 8))
    assert HBIVideoProcessor(fps=2).sampling_fps == 2.0
    with pytest.raises(ValueError, match="fps .* sampling_fps"):
        HBIVideoProcessor(num_frames=2)(str(ramp_video), fps=2, sampling_fps=1)
    with pytest.raises(ValueError, match="sampling_fps"):
        HBIVideoProcessor(fps=0)


def test_do_sample_frames_false_keeps_every_frame_as_in_transformers(ramp_video):
    processor = HBIVideoProcessor(num_frames=4, **SMALL)
    frames = np.repeat(np.arange(9, dtype=np.uint8)[:, None, None, None] * 20, 40, axis=1)
    frames = np.repeat(np.repeat(frames, 40, axis=2), 3, axis=3)
    batch = processor([frames, frames[:2]], do_sample_frames=False, do_normalize=False)
    assert batch["pixel_values"].shape == (2, 9, 3, 32, 32)
    assert batch["video_mask"].tolist() == [[1] * 9, [1, 1] + [0] * 7]
    levels = batch["pixel_values"][0, :, 0, 16, 16] * 255
    torch.testing.assert_close(levels, torch.arange(9.0) * 20, atol=0.5, rtol=0)
    decoded = processor(str(ramp_video), do_sample_frames=False)
    assert decoded["pixel_values"].shape == (1, 40, 3, 32, 32)


@pytest.mark.skipif(importlib.util.find_spec("decord") is None, reason="decord has no wheel here")
def test_per_call_video_backend_is_used(ramp_video):
    processor = HBIVideoProcessor(num_frames=2, **SMALL)
    for backend in ("pyav", "decord"):
        batch = processor(str(ramp_video), video_backend=backend, return_metadata=True)
        assert batch["video_metadata"][0].video_backend == backend


@pytest.mark.parametrize("height, width", [(144, 176), (176, 144), (64, 64), (240, 320), (480, 640), (223, 225)])
def test_resizing_matches_clip_pillow_image_processor(height, width):
    """CLIP's Pillow image processor (pretrained CLIP's and the official code's preprocessing) is the reference, for
    upscaling and downscaling: within 0.05 normalised units (measured: 0)."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    rng = np.random.default_rng(0)
    smooth = rng.integers(0, 256, size=(3, height // 8 + 2, width // 8 + 2, 3)).astype(np.float32)
    frames = np.repeat(np.repeat(smooth, 8, axis=1), 8, axis=2)[:, :height, :width]
    frames = np.clip(frames + rng.normal(0, 20, frames.shape), 0, 255).astype(np.uint8)
    ours = HBIVideoProcessor(num_frames=3)(frames, return_tensors="pt")["pixel_values"][0]
    clip = CLIPImageProcessorPil()(list(frames), return_tensors="pt")["pixel_values"]
    assert ours.shape == clip.shape == (3, 3, 224, 224)
    assert (ours - clip).abs().max() < 0.05
