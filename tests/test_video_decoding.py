"""Specification of video decoding: every backend returns the frames a player shows at the sampled indices.

Each clip has its frame index painted into the pixels (`hbi_hf.data.painted_video`), so the frame a decoder returns
can be read back. The set covers the containers, codecs and GOP structures where seeking decoders go wrong: H.264 in
mp4 / mkv with B-frames, MPEG-4 Part 2 AVI with B-frames (plain and XVID-tagged) and without, short-GOP HEVC (open
GOP), VP9 webm, MJPEG and variable frame rate.
"""

import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
import tracemalloc
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from hbi_hf import HBIProcessor, video_processing_hbi
from hbi_hf.data import HBIBadInputError, HBIVideoCollator, build_clip_tokenizer
from hbi_hf.data.painted_video import (
    marked_corner,
    paint_frame_index,
    painted_frame_times,
    read_painted_index,
    write_painted_test_set,
    write_painted_video,
)
from hbi_hf.video_processing_hbi import (
    HBIDisplayTransform,
    HBIVideoDecodeError,
    HBIVideoProcessor,
    default_video_backend,
    read_video,
    sample_frame_indices,
)

DECORD = pytest.mark.skipif(importlib.util.find_spec("decord") is None, reason="decord has no wheel here")
BACKENDS = ["pyav", pytest.param("decord", marks=DECORD)]


@pytest.fixture(scope="module")
def painted(tmp_path_factory):
    return write_painted_test_set(tmp_path_factory.mktemp("painted"), num_frames=90)


def reference_frames(path) -> list[np.ndarray]:
    """Sequential decode of every frame, in the order a player shows them."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(container.streams.video[0])]


def test_painted_index_survives_lossy_codecs_and_any_size():
    for index in (0, 1, 77, 1234, 65535):
        assert read_painted_index(paint_frame_index(index)) == index
        assert read_painted_index(paint_frame_index(index, 144, 176)) == index


def test_the_test_set_covers_every_kind_and_its_reference_decode_is_in_order(painted):
    expected = {"h264_bframes.mp4", "mpeg4_bframes.avi", "xvid_bframes.avi", "hevc_short_gop.mp4", "vp9.webm"}
    assert expected <= set(painted)
    for path in painted.values():
        frames = reference_frames(path)
        assert [read_painted_index(frame) for frame in frames] == list(range(len(frames))), path.name


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("step", [1, 4, 7, 13, 29])
def test_every_backend_returns_the_frames_asked_for(painted, backend, step):
    """Strided indices jump over keyframes (where seeking happens), for every clip of the set."""
    wrong = {}
    for name, path in painted.items():
        frames, metadata = read_video(path, lambda m: np.arange(step // 2, m.total_num_frames, step), backend)
        asked = list(range(step // 2, metadata.total_num_frames, step))
        returned = [read_painted_index(frame) for frame in frames]
        if returned != asked:
            wrong[name] = [(a, r) for a, r in zip(asked, returned, strict=True) if a != r]
        assert metadata.frames_indices == asked and metadata.video_backend in (backend, "pyav")
    assert not wrong, f"wrong frames (asked, returned) on {backend}: {wrong}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_match_the_sequential_reference_decode(painted, backend):
    for name, path in painted.items():
        reference = reference_frames(path)
        indices = sample_frame_indices(len(reference), num_frames=5, sampling_mode="uniform")
        frames, metadata = read_video(path, lambda m, indices=indices: indices, backend)
        assert metadata.total_num_frames == len(reference), name
        for frame, index in zip(frames, indices, strict=True):
            if backend == "pyav":  # the same decoder: identical pixels
                np.testing.assert_array_equal(frame, reference[index], err_msg=name)
            else:  # another build of FFmpeg and another colour conversion: within lossy-codec noise
                assert np.abs(frame.astype(int) - reference[index]).mean() < 4, name


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_raw_stream_without_timestamps_is_decoded_sequentially_and_right(tmp_path, backend):
    path = tmp_path / "raw.h264"
    write_painted_video(path, 60, "libx264", {"g": "12", "bf": "2", "threads": "1"})
    frames, metadata = read_video(path, lambda m: [5, 17, 40, 59], backend)
    assert [read_painted_index(frame) for frame in frames] == [5, 17, 40, 59]
    assert metadata.total_num_frames == 60


def test_pyav_falls_back_to_sequential_decoding_when_a_seek_misses(painted, monkeypatch):
    def missed(*args, **kwargs):
        raise video_processing_hbi._HBISeekFailed("seek landed after the keyframe")

    monkeypatch.setattr(video_processing_hbi, "_seek_to", missed)
    for name in ("mpeg4_bframes.avi", "hevc_short_gop.mp4"):
        frames, _ = read_video(painted[name], lambda m: [2, 13, 31], "pyav")
        assert [read_painted_index(frame) for frame in frames] == [2, 13, 31], name


@pytest.mark.parametrize("backend", BACKENDS)
def test_unsorted_and_repeated_indices_come_back_in_the_order_asked(painted, backend):
    frames, _ = read_video(painted["mpeg4_bframes.avi"], lambda m: [61, 3, 61, 89, 30], backend)
    assert [read_painted_index(frame) for frame in frames] == [61, 3, 61, 89, 30]


@pytest.mark.parametrize("backend", BACKENDS)
def test_processor_default_sampling_gives_the_right_frames(painted, backend):
    """The paper's protocol (1 frame per second, then uniform) end to end, on the default and the other backend."""
    processor = HBIVideoProcessor(num_frames=12, video_backend=backend)
    for name in ("mpeg4_bframes.avi", "xvid_bframes.avi", "hevc_short_gop.mp4"):
        frames, metadata = read_video(painted[name], processor.sample_frames, backend)
        assert [read_painted_index(frame) for frame in frames] == metadata.frames_indices, name


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_variable_frame_rate_samples_the_frames_shown_at_each_second(tmp_path, backend, suffix):
    """25 frames of 40 ms then 4 of 250 ms, three times (6 s): counting frames at the average rate (14.5 fps) would
    drift by up to half a second; the frames shown at 0, 1, 2, ... s are sampled instead."""
    durations = (40,) * 25 + (250,) * 4
    path = tmp_path / f"vfr{suffix}"
    write_painted_video(path, 87, "libx264", {"g": "30", "bf": "2", "threads": "1"}, frame_durations_ms=durations)
    times = np.asarray(painted_frame_times(87, durations))
    shown = [int(np.searchsorted(times, second + 1e-9, side="right") - 1) for second in range(6)]
    assert shown == [0, 25, 29, 54, 58, 83]
    processor = HBIVideoProcessor(num_frames=12)
    frames, metadata = read_video(path, processor.sample_frames, backend)
    assert [read_painted_index(frame) for frame in frames] == metadata.frames_indices == shown


def test_constant_frame_rate_keeps_the_papers_count_based_sampling(painted):
    frames, metadata = read_video(painted["h264_bframes.mp4"], HBIVideoProcessor(num_frames=12).sample_frames)
    assert metadata.frame_times is None and metadata.frames_indices == [0, 30, 60]


def test_default_backend_is_pyav():
    assert default_video_backend() == "pyav"
    assert HBIVideoProcessor().video_backend in (None, "pyav")


@pytest.fixture(scope="module")
def truncated_mp4(tmp_path_factory):
    """A 150-frame H.264 mp4 with its index at the front (faststart), cut at 60% of its size."""
    folder = tmp_path_factory.mktemp("truncated")
    whole = folder / "whole.mp4"
    write_painted_video(
        whole, 150, "libx264", {"g": "30", "bf": "2", "threads": "1"}, container_options={"movflags": "faststart"}
    )
    data = whole.read_bytes()
    cut = folder / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    return cut


def test_a_tail_truncated_mp4_gives_its_good_frames_on_every_backend(truncated_mp4):
    results = {}
    for backend in ["pyav"] + (["decord"] if importlib.util.find_spec("decord") else []):
        frames, metadata = read_video(truncated_mp4, lambda m: np.arange(m.total_num_frames), backend)
        assert 0 < metadata.total_num_frames < 150
        assert [read_painted_index(frame) for frame in frames] == list(range(metadata.total_num_frames)), backend
        results[backend] = metadata.total_num_frames
    assert len(set(results.values())) == 1, results


def test_pyav_keeps_only_the_sampled_frames_in_memory(tmp_path):
    """Decoding 3 frames of a 240-frame 256x256 clip allocates a few frames' worth, not the clip's."""
    path = tmp_path / "long.mp4"
    write_painted_video(path, 240, "libx264", {"g": "60", "bf": "2", "threads": "1"}, height=256, width=256)
    frame_bytes = 256 * 256 * 3
    tracemalloc.start()
    try:
        frames, _ = read_video(path, lambda m: [10, 120, 230], "pyav")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [read_painted_index(frame) for frame in frames] == [10, 120, 230]
    assert peak < 12 * frame_bytes, f"peak {peak / frame_bytes:.1f} frames"


@pytest.mark.parametrize("backend", BACKENDS)
def test_indices_outside_the_video_are_refused(painted, backend):
    with pytest.raises(ValueError, match=r"\[0, 90\)"):
        read_video(painted["h264_bframes.mp4"], lambda m: [0, 90], backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_file_that_is_not_a_video_gives_a_decode_error_naming_it(tmp_path, backend):
    path = tmp_path / "notes.mp4"
    path.write_bytes(b"not a video at all" * 100)
    with pytest.raises(HBIVideoDecodeError, match="notes.mp4: unreadable or corrupt video"):
        read_video(path, lambda m: [0], backend)


def test_unknown_backend_is_refused_when_the_processor_is_built():
    with pytest.raises(ValueError, match="video_backend"):
        HBIVideoProcessor(video_backend="opencv")


# ---------------------------------------------------------------------------------------------------------------------
# Display metadata: the frames as a player shows them (turned, mirrored, stretched)
# ---------------------------------------------------------------------------------------------------------------------


def shown_as(frame: np.ndarray, rotation: int = 0, hflip: bool = False, vflip: bool = False) -> np.ndarray:
    """The reference picture of a stored frame: turned `rotation` degrees counter-clockwise, then mirrored (numpy, so
    independent of the decoder's code; checked against FFmpeg 5.1's `ffmpeg` autorotate for every case below)."""
    frame = np.rot90(frame, rotation // 90)
    return frame[:, ::-1] if hflip else frame[::-1] if vflip else frame


def unturned(frame: np.ndarray, rotation: int = 0, hflip: bool = False, vflip: bool = False) -> np.ndarray:
    """Inverse of `shown_as`: the stored frame back, to read its painted index."""
    frame = frame[:, ::-1] if hflip else frame[::-1] if vflip else frame
    return np.rot90(frame, -(rotation // 90))


def check_shown_frames(path, backend, rotation=0, hflip=False, vflip=False, stored=(96, 128)):
    frames, metadata = read_video(path, lambda m: [0, 7, 19], backend)
    expected = shown_as(paint_frame_index(0, *stored, marker=True), rotation, hflip, vflip)
    assert frames.shape[1:] == expected.shape, (frames.shape, expected.shape)
    assert {marked_corner(frame) for frame in frames} == {marked_corner(expected)}
    assert [read_painted_index(unturned(frame, rotation, hflip, vflip)) for frame in frames] == [0, 7, 19]
    return metadata


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv"])
@pytest.mark.parametrize(
    "rotation, corner", [(90, "bottom left"), (180, "bottom right"), (270, "top right")], ids=["90", "180", "270"]
)
def test_a_rotated_phone_video_is_decoded_upright(tmp_path, backend, suffix, rotation, corner):
    """A display matrix turning the stored 128x96 picture counter-clockwise: the frames come back turned as a player
    turns them (shape, the corner of the orientation marker, and the painted index read after turning back)."""
    path = tmp_path / f"rotated{suffix}"
    write_painted_video(path, 20, "libx264", {"g": "10", "bf": "2", "threads": "1"}, height=96, width=128,
                        marker=True, display_rotation=rotation)  # fmt: skip
    assert marked_corner(shown_as(paint_frame_index(0, 96, 128, marker=True), rotation)) == corner
    check_shown_frames(path, backend, rotation)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("clockwise, rotation", [("90", 270), ("180", 180), ("270", 90)])
def test_the_legacy_rotate_tag_turns_frames_clockwise(tmp_path, backend, clockwise, rotation):
    """A Matroska `rotate` tag (older FFmpeg's way, degrees clockwise) and no display matrix."""
    path = tmp_path / "tagged.mkv"
    write_painted_video(path, 20, "libx264", {"g": "10", "bf": "2", "threads": "1"}, height=96, width=128,
                        marker=True, rotate_tag=clockwise)  # fmt: skip
    with av.open(str(path)) as container:
        assert container.streams.video[0].metadata.get("ROTATE") == clockwise
    check_shown_frames(path, backend, rotation)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
@pytest.mark.parametrize(
    "rotation, hflip, vflip, corner",
    [(0, True, False, "top right"), (0, False, True, "bottom left"), (90, True, False, "bottom right"),
     (270, False, True, "bottom right")],
    ids=["hflip", "vflip", "90-hflip", "270-vflip"],
)  # fmt: skip
def test_a_mirrored_video_is_decoded_mirrored_as_a_player_shows_it(tmp_path, backend, suffix, rotation, hflip, vflip,
                                                                   corner):  # fmt: skip
    path = tmp_path / f"mirrored{suffix}"
    write_painted_video(path, 20, "libx264", {"g": "10", "bf": "2", "threads": "1"}, height=96, width=128,
                        marker=True, display_rotation=rotation, hflip=hflip, vflip=vflip)  # fmt: skip
    assert marked_corner(shown_as(paint_frame_index(0, 96, 128, marker=True), rotation, hflip, vflip)) == corner
    check_shown_frames(path, backend, rotation, hflip, vflip)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
@pytest.mark.parametrize("ratio, shown", [(Fraction(2), (96, 256)), (Fraction(1, 2), (192, 128))], ids=["2:1", "1:2"])
def test_anamorphic_video_is_stretched_to_its_display_aspect_ratio(tmp_path, backend, suffix, ratio, shown):
    """Stored 128x96 with pixels twice as wide (or tall) as high: a player shows 256x96 (or 128x192)."""
    path = tmp_path / f"anamorphic{suffix}"
    write_painted_video(path, 20, "libx264", {"g": "10", "bf": "2", "threads": "1"}, height=96, width=128,
                        marker=True, sample_aspect_ratio=ratio)  # fmt: skip
    frames, _ = read_video(path, lambda m: [0, 7, 19], backend)
    assert frames.shape[1:3] == shown
    assert [read_painted_index(frame) for frame in frames] == [0, 7, 19]
    assert {marked_corner(frame) for frame in frames} == {"top left"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_rotated_anamorphic_video_is_stretched_along_its_stored_width_then_turned(tmp_path, backend):
    path = tmp_path / "both.mp4"
    write_painted_video(path, 20, "libx264", {"g": "10", "bf": "2", "threads": "1"}, height=96, width=128,
                        marker=True, display_rotation=90, sample_aspect_ratio=Fraction(2))  # fmt: skip
    frames, _ = read_video(path, lambda m: [0, 7, 19], backend)
    assert frames.shape[1:3] == (256, 96)
    assert [read_painted_index(unturned(frame, 90)) for frame in frames] == [0, 7, 19]


@pytest.mark.parametrize("backend", BACKENDS)
def test_codec_level_cropping_is_applied(tmp_path, backend):
    """H.264 codes whole 16x16 macroblocks: a 64x40 picture is stored as 64x48 with a crop in its header."""
    path = tmp_path / "cropped.mp4"
    write_painted_video(path, 20, "libx264", {"g": "10", "bf": "2", "threads": "1"}, height=40, width=64)
    frames, _ = read_video(path, lambda m: [0, 7, 19], backend)
    assert frames.shape[1:3] == (40, 64)
    assert [read_painted_index(frame) for frame in frames] == [0, 7, 19]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("hidden", [1, 5])
@pytest.mark.parametrize("suffix", [".mp4", ".mov"])
def test_frames_an_edit_list_hides_are_not_counted(tmp_path, backend, hidden, suffix):
    """The first `hidden` frames sit before the edit list's start: a player shows frame `hidden` first and
    30 - hidden frames in all (decord lists all 30 and returns the last frame again in place of the hidden ones)."""
    path = tmp_path / f"edit_list{suffix}"
    write_painted_video(path, 30, "libx264", {"g": "10", "bf": "2", "threads": "1"}, fps=10,
                        hidden_leading_frames=hidden)  # fmt: skip
    frames, metadata = read_video(path, lambda m: np.arange(m.total_num_frames), backend)
    assert metadata.total_num_frames == 30 - hidden
    assert [read_painted_index(frame) for frame in frames] == list(range(hidden, 30))


def overstate_avi_frame_count(path, extra: int = 1) -> None:
    """Adds `extra` to the frame counts an AVI's headers list (`avih.dwTotalFrames`, `strh.dwLength`)."""
    data = bytearray(path.read_bytes())
    for chunk, offset in ((b"avih", 16), (b"strh", 32)):
        at = data.index(chunk) + 8 + offset
        struct.pack_into("<I", data, at, struct.unpack_from("<I", data, at)[0] + extra)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_container_that_over_counts_its_frames_gives_the_real_last_frame(tmp_path, backend):
    """decord#54: the headers list 31 frames, the file holds 30. Every frame, the last one included, comes back once
    and right (the previous PyAV reader took the header's count as a sign of a cut-off file and dropped 2)."""
    path = tmp_path / "overcount.avi"
    write_painted_video(path, 30, "mpeg4", {"qscale": "3"}, max_b_frames=2, gop_size=12)
    overstate_avi_frame_count(path)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 31
    frames, metadata = read_video(path, lambda m: np.arange(m.total_num_frames), backend)
    assert metadata.total_num_frames == 30
    assert [read_painted_index(frame) for frame in frames] == list(range(30))
    processor = HBIVideoProcessor(num_frames=4, sampling_mode="uniform")
    frames, metadata = read_video(path, processor.sample_frames, backend)
    assert [read_painted_index(frame) for frame in frames] == metadata.frames_indices == [0, 10, 19, 29]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("width", [16, 24, 48])
@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".avi"])
def test_small_videos_give_their_frames(tmp_path, backend, width, suffix):
    """Widths that are not a multiple of 32 (decord returns 4- or 6-channel garbage for them)."""
    path = tmp_path / f"small{suffix}"
    write_painted_video(path, 12, "libx264", {"g": "6", "bf": "2", "threads": "1"}, height=32, width=width)
    frames, _ = read_video(path, lambda m: [0, 5, 11], backend)
    assert frames.shape == (3, 32, width, 3)
    assert [read_painted_index(frame) for frame in frames] == [0, 5, 11]


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_lenient_collator_keeps_small_videos_and_skips_and_counts_a_corrupt_one(tmp_path, backend):
    """Last month's behaviour on decord, kept on every backend: a small video is decoded (it used to fail the whole
    batch with a bare `ValueError`), a corrupt one is skipped and counted."""
    small, good, corrupt = tmp_path / "small.mp4", tmp_path / "good.mp4", tmp_path / "corrupt.mp4"
    write_painted_video(small, 12, "libx264", {"g": "6", "bf": "2", "threads": "1"}, height=32, width=16)
    write_painted_video(good, 12, "libx264", {"g": "6", "bf": "2", "threads": "1"})
    corrupt.write_bytes(good.read_bytes()[:300])
    processor = HBIProcessor(
        HBIVideoProcessor(num_frames=2, size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16},
                          video_backend=backend),
        build_clip_tokenizer(),
    )  # fmt: skip
    collator = HBIVideoCollator(processor, return_ids=True)
    rows = [{"video_id": path.stem, "video_path": str(path)} for path in (small, corrupt, good)]
    batch = collator(rows)
    assert batch["video_id"] == ["small", "good"] and batch["pixel_values"].shape == (2, 2, 3, 16, 16)
    assert collator.skipped["unreadable video"] == 1 and sum(collator.skipped.values()) == 1
    with pytest.raises(HBIBadInputError, match="corrupt.mp4: unreadable video"):
        HBIVideoCollator(processor, strict=True)(rows)


def test_float_frames_already_in_0_1_are_rescaled_as_clip_does_with_a_warning(caplog):
    """CLIP's image processor multiplies float input by 1/255 whatever its range (transformers 5, silently); the
    processor gives the same numbers and says, once, that `do_rescale=False` is wanted for frames in [0, 1]."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.utils import logging as transformers_logging

    rng = np.random.default_rng(0)
    unit = rng.random((2, 32, 32, 3), dtype=np.float32)
    processor = HBIVideoProcessor(num_frames=2, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    clip = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    transformers_logging.warning_once.cache_clear()
    with caplog.at_level("WARNING"):
        ours = processor(unit, return_tensors="pt")["pixel_values"][0]
    assert "already rescaled" in caplog.text and "do_rescale=False" in caplog.text
    torch.testing.assert_close(ours, clip(list(unit), return_tensors="pt")["pixel_values"], atol=1e-4, rtol=0)
    caplog.clear()
    with caplog.at_level("WARNING"):
        rescaled = processor(unit, do_rescale=False, return_tensors="pt")["pixel_values"][0]
        processor(unit * 255, return_tensors="pt")
        processor((unit * 255).astype(np.uint8), return_tensors="pt")
    assert "already rescaled" not in caplog.text
    expected = processor((unit * 255).astype(np.float32), return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(rescaled, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_frames_resized_as_they_are_decoded_equal_the_processors_resize_of_whole_frames(tmp_path, backend):
    path = tmp_path / "clip.mp4"
    write_painted_video(path, 30, "libx264", {"g": "10", "bf": "2", "threads": "1"}, height=144, width=176)
    processor = HBIVideoProcessor(num_frames=3, video_backend=backend)
    from_file = processor([path], return_tensors="pt")["pixel_values"]
    frames, _ = read_video(path, processor.sample_frames, backend)
    assert frames.shape[1:3] == (144, 176)  # no resize asked: stored size
    torch.testing.assert_close(from_file, processor(frames, return_tensors="pt")["pixel_values"], atol=0, rtol=0)


# ---------------------------------------------------------------------------------------------------------------------
# Many files: memory stays bounded, containers are always closed
# ---------------------------------------------------------------------------------------------------------------------

# Runs in a fresh process: decodes every file of argv[1] (a JSON list) through the lenient video collator on backend
# argv[2], with the open-file limit set to the descriptors already open plus argv[3] (0: no limit); prints JSON with
# the resident MiB after each file, the kept and skipped counts and the descriptors open before and after.
MANY_FILES_WORKER = """
import json, os, resource, sys
from pathlib import Path
from hbi_hf import HBIProcessor, HBIVideoProcessor
from hbi_hf.data import HBIVideoCollator, build_clip_tokenizer

def resident_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

paths, backend, spare = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
processor = HBIVideoProcessor(num_frames=12, sampling_mode="uniform", video_backend=backend)
collator = HBIVideoCollator(HBIProcessor(processor, build_clip_tokenizer()), return_ids=True, allow_empty_batch=True)
collator([{"video_id": "warm-up", "video_path": paths[0]}])  # lazy imports and first allocations
open_before = len(os.listdir("/proc/self/fd"))
if spare:
    resource.setrlimit(resource.RLIMIT_NOFILE, (open_before + spare, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
kept, resident = [], []
for path in paths:
    kept += collator([{"video_id": Path(path).name, "video_path": path}]).get("video_id", [])
    resident.append(resident_mib())
print(json.dumps({"resident": resident, "kept": kept, "skipped": collator.skipped,
                  "open_before": open_before, "open_after": len(os.listdir("/proc/self/fd"))}))
"""


def run_many_files(paths, backend: str, spare_descriptors: int = 0) -> dict:
    command = [sys.executable, "-c", MANY_FILES_WORKER, json.dumps([str(path) for path in paths]), backend]
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command + [str(spare_descriptors)], capture_output=True, text=True, env=environment)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_memory_stays_bounded_while_decoding_many_large_files(tmp_path, backend):
    """12 files of 1280x720, 12 frames taken from each: the resident memory after the 4th file is where it stays
    (a decoded frame left behind per file adds 16 MiB per file here: measured 572 -> 717 MiB with such a leak).
    `benchmarks/data.py --sections many_files` measures 20 4K files."""
    first = tmp_path / "clip00.mp4"
    write_painted_video(first, 24, "libx264", {"preset": "ultrafast", "g": "8", "threads": "1"}, height=720,
                        width=1280)  # fmt: skip
    paths = [first] + [shutil.copy(first, tmp_path / f"clip{index:02d}.mp4") for index in range(1, 12)]
    result = run_many_files(paths, backend)
    assert len(result["kept"]) == 12
    resident = result["resident"]
    assert max(resident[4:]) - resident[3] < 40, f"resident MiB after each file: {[round(r) for r in resident]}"


def corrupt_files(folder, good) -> list:
    """Damaged files of several kinds, made from the good clip `good`."""
    data = good.read_bytes()
    kinds = {
        "garbage.mp4": b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8,
        "header_only.mp4": data[:200],
        "no_picture.mp4": data[: len(data) // 2].replace(b"mdat", b"free"),
        "text.avi": b"RIFF this is not a video " * 40,
        "empty.mkv": b"",
    }
    paths = []
    for name, content in kinds.items():
        (folder / name).write_bytes(content)
        paths.append(folder / name)
    return paths


@pytest.mark.parametrize("backend", BACKENDS)
def test_containers_are_closed_under_a_low_open_file_limit(tmp_path, backend):
    """20 good files and 10 corrupt ones, interleaved, with 8 file descriptors to spare: a container left open per
    file would run out after 8 files (and every later file would count as unreadable). Every good file is decoded,
    every corrupt one counted, and as many descriptors are open after as before."""
    good = tmp_path / "good.mp4"
    write_painted_video(good, 20, "libx264", {"g": "10", "bf": "2", "threads": "1"})
    bad = corrupt_files(tmp_path, good)
    paths = []
    for index in range(20):
        paths.append(shutil.copy(good, tmp_path / f"good{index:02d}.mp4"))
        if index in (0, 12):
            paths += [shutil.copy(path, tmp_path / f"{index:02d}{path.name}") for path in bad]
    result = run_many_files(paths, backend, spare_descriptors=8)
    assert result["kept"] == [f"good{index:02d}.mp4" for index in range(20)]
    assert sum(result["skipped"].values()) == 10
    assert result["open_after"] == result["open_before"]


def test_display_metadata_a_player_could_not_apply_as_a_right_angle_is_left_out_with_a_warning(caplog):
    """A 45-degree display matrix or rotate tag keeps the frames as stored; a sample aspect ratio outside [1/8, 8]
    (damaged metadata: a sliver) is ignored. Each is logged with the file's name."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.warning_once.cache_clear()
    half = round(0.7071 * 65536)
    with caplog.at_level("WARNING"):
        by_matrix = HBIDisplayTransform.from_metadata("m.mp4", [half, half, 0, -half, half, 0, 0, 0, 1 << 30])
        by_tag = HBIDisplayTransform.from_metadata("t.mkv", rotate_tag="45")
        by_ratio = HBIDisplayTransform.from_metadata("s.mp4", sample_aspect_ratio=Fraction(20))
    assert by_matrix == by_tag == by_ratio == HBIDisplayTransform()
    for name in ("m.mp4", "t.mkv", "s.mp4"):
        assert name in caplog.text
    frame = paint_frame_index(5, 48, 64, marker=True)
    np.testing.assert_array_equal(HBIDisplayTransform().apply(frame), frame)
