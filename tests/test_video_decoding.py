"""Specification of video decoding: every backend returns the frames a player shows at the sampled indices.

Each clip has its frame index painted into the pixels (`hbi_hf.data.painted_video`), so the frame a decoder returns
can be read back. The set covers the containers, codecs and GOP structures where seeking decoders go wrong: H.264 in
mp4 / mkv with B-frames, MPEG-4 Part 2 AVI with B-frames (plain and XVID-tagged) and without, short-GOP HEVC (open
GOP), VP9 webm, MJPEG and variable frame rate.
"""

import importlib.util
import tracemalloc

import av
import numpy as np
import pytest

from hbi_hf import video_processing_hbi
from hbi_hf.data.painted_video import (
    paint_frame_index,
    painted_frame_times,
    read_painted_index,
    write_painted_test_set,
    write_painted_video,
)
from hbi_hf.video_processing_hbi import (
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
