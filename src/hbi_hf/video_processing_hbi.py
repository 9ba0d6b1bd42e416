"""Video processor for HBI: decode, sample frames as the paper does, resize and centre-crop to CLIP's input size.

Frames are decoded with PyAV (default) or decord; on both, frame `i` is the `i`-th frame a player shows, turned,
mirrored and stretched as the player shows it ([`read_video`] says how, and where each backend falls back). The
default sampling follows the official code (CLIP4Clip-style loaders): frames are taken at 1 frame per second, then,
if more than `num_frames` remain, uniformly down-sampled to `num_frames`. Videos with fewer frames are padded with
zero frames, and `video_mask` marks the real ones.
"""

import gc
import importlib.util
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from os import PathLike
from pathlib import Path

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ChannelDimension, PILImageResampling, SizeDict
from transformers.processing_utils import Unpack, VideosKwargs
from transformers.utils import TensorType, logging
from transformers.video_processing_utils import BaseVideoProcessor
from transformers.video_utils import VideoMetadata, is_valid_video, make_batched_metadata, make_batched_videos

from .errors import HBIInputError

logger = logging.get_logger(__name__)

FRAME_SAMPLING_MODES = ("fps", "uniform")
FILE_NOT_FOUND = "file not found"
ZERO_FRAMES = "the video has zero frames"
_TORCH_INTERPOLATION = {
    PILImageResampling.NEAREST: "nearest",
    PILImageResampling.BILINEAR: "bilinear",
    PILImageResampling.BICUBIC: "bicubic",
}


@dataclass
class HBIVideoMetadata(VideoMetadata):
    """transformers' `VideoMetadata` plus `frame_times`: the start of each frame in seconds from the first, set by
    [`read_video`] when the frame rate is variable (frame durations differ by more than half), so that `"fps"`
    sampling takes the frames a player shows at the sampled times."""

    frame_times: list[float] | None = None


class HBIVideoDecodeError(HBIInputError):
    """A video file that cannot be used: missing, unreadable or corrupt, or without any frame.

    Args:
        path (`str`): the file.
        reason (`str`): what is wrong with it.
    """

    def __init__(self, path: str | PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def sample_frame_indices(
    total_num_frames: int,
    num_frames: int,
    video_fps: float | None = None,
    sampling_mode: str = "fps",
    sampling_fps: float = 1.0,
    frame_times: Sequence[float] | None = None,
) -> np.ndarray:
    """Indices of the frames to keep, in temporal order.

    * `"fps"` (the paper's protocol): one frame every `video_fps / sampling_fps` frames (1 fps by default), then, if
      more than `num_frames` remain, `num_frames` of them spread uniformly (first and last included). Without a known
      `video_fps` the frames are taken as already at the sampling rate. With `frame_times` (a variable frame rate),
      the first stage takes the frame a player shows at 0, 1 / sampling_fps, 2 / sampling_fps, ... seconds instead
      (each frame once).
    * `"uniform"`: `num_frames` frames spread uniformly over the whole video (first and last included).

    A video with fewer frames than asked for gives all the frames it has (never a repeated frame).

    Args:
        total_num_frames (`int`): frames in the video.
        num_frames (`int`): the most frames to return.
        video_fps (`float`, *optional*): the video's frame rate.
        sampling_mode (`str`, *optional*, defaults to `"fps"`): `"fps"` or `"uniform"`.
        sampling_fps (`float`, *optional*, defaults to 1.0): the rate of the first stage of `"fps"` sampling.
        frame_times (`Sequence[float]`, *optional*): start of each frame in seconds, increasing, `total_num_frames`
            of them.

    Returns:
        `np.ndarray` of shape `(min(num_frames, available),)` and dtype int64.
    """
    if sampling_mode not in FRAME_SAMPLING_MODES:
        raise ValueError(f"sampling_mode must be one of {FRAME_SAMPLING_MODES}; got {sampling_mode!r}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1; got {num_frames}")
    if total_num_frames < 1:
        return np.zeros((0,), dtype=np.int64)
    if sampling_mode == "fps" and frame_times is not None:
        if len(frame_times) != total_num_frames:
            raise ValueError(
                f"frame_times must hold total_num_frames={total_num_frames} times; got {len(frame_times)}"
            )
        times = np.asarray(frame_times, dtype=np.float64) - frame_times[0]
        targets = np.arange(0.0, times[-1] + 1e-9, 1.0 / sampling_fps)
        shown = np.searchsorted(times, targets + 1e-9, side="right") - 1
        candidates = np.unique(shown).astype(np.int64)
    elif sampling_mode == "fps" and video_fps:
        step = max(1, int(round(video_fps / sampling_fps)))
        candidates = np.arange(0, total_num_frames, step, dtype=np.int64)
    else:
        candidates = np.arange(total_num_frames, dtype=np.int64)
    if len(candidates) <= num_frames:
        return candidates
    positions = np.linspace(0, len(candidates) - 1, num=num_frames).round().astype(np.int64)
    return candidates[positions]


VIDEO_BACKENDS = ("pyav", "decord")


def default_video_backend() -> str:
    """`"pyav"`: the backend that returned the right frames for every container and codec of the painted-index test
    set (`tests/test_video_decoding.py`), seeking to the keyframes it needs. decord's seeking returns wrong frames for
    MPEG-4 Part 2 with B-frames and HEVC, so `video_backend="decord"` decodes sequentially (see `read_video`)."""
    return "pyav"


_IDENTITY = (1, 0, 0, 1)
# a sample aspect ratio outside this range is taken as damaged metadata (a player would show a sliver)
_SANE_SAMPLE_ASPECT_RATIO = (Fraction(1, 8), Fraction(8))


@dataclass(frozen=True)
class HBIDisplayTransform:
    """
    What a player does to a decoded frame before showing it, from the stream's display metadata.

    Args:
        orientation (`tuple[int, int, int, int]`, *optional*, defaults to `(1, 0, 0, 1)`):
            `(a, b, c, d)`, the signs of the 2x2 part of the display matrix in FFmpeg's layout (a stored pixel
            `(x, y)` is shown at `(a x + c y, b x + d y)`, up to a translation): a rotation by a multiple of 90
            degrees and / or a mirror. From the container's display matrix (mp4 / mov `tkhd`, Matroska projection),
            else the legacy `rotate` tag (degrees clockwise), else none.
        sample_aspect_ratio (`Fraction`, *optional*, defaults to 1): the width / height of a stored pixel; a player
            shows a `height x width` frame as `height x width * sample_aspect_ratio` (anamorphic video). It applies
            to the stored axes, so it is applied before the orientation.
    """

    orientation: tuple[int, int, int, int] = _IDENTITY
    sample_aspect_ratio: Fraction = Fraction(1)

    @classmethod
    def from_metadata(
        cls,
        where: str,
        display_matrix: Sequence[int] | None = None,
        rotate_tag: str | None = None,
        sample_aspect_ratio: Fraction | None = None,
    ) -> "HBIDisplayTransform":
        """The transform of a stream with this metadata. A matrix that is not a multiple of 90 degrees, a `rotate`
        tag that is not a multiple of 90, and a sample aspect ratio outside [1/8, 8] are left out, with a warning
        naming `where` (the file)."""
        orientation = _IDENTITY
        if display_matrix is not None:
            a, b, _, c, d = (int(value) for value in display_matrix[:5])
            if (b == c == 0 and a and d) or (a == d == 0 and b and c):
                orientation = tuple(int(np.sign(value)) for value in (a, b, c, d))
            else:
                logger.warning_once(
                    f"{where}: the display matrix is not a right-angle rotation; frames kept as stored"
                )
        elif rotate_tag:
            try:
                clockwise = float(rotate_tag)
            except ValueError:
                clockwise = float("nan")
            if clockwise % 90 == 0:
                turns = int(-clockwise // 90) % 4  # counter-clockwise quarter turns
                cosine, sine = ((1, 0), (0, 1), (-1, 0), (0, -1))[turns]
                orientation = (cosine, -sine, sine, cosine)
            else:
                logger.warning_once(
                    f"{where}: rotate tag {rotate_tag!r} is not a multiple of 90; frames kept as stored"
                )
        ratio = Fraction(1)
        if sample_aspect_ratio:
            if _SANE_SAMPLE_ASPECT_RATIO[0] <= sample_aspect_ratio <= _SANE_SAMPLE_ASPECT_RATIO[1]:
                ratio = Fraction(sample_aspect_ratio)
            else:
                logger.warning_once(f"{where}: sample aspect ratio {sample_aspect_ratio} ignored (outside [1/8, 8])")
        return cls(orientation, ratio)

    @property
    def is_oriented(self) -> bool:
        """Whether the frames are turned or mirrored."""
        return self.orientation != _IDENTITY

    def shown_size(self, height: int, width: int) -> tuple[int, int]:
        """`(height, width)` of a stored `height x width` frame as a player shows it."""
        if self.sample_aspect_ratio > 1:
            width = round(width * self.sample_aspect_ratio)
        elif self.sample_aspect_ratio < 1:
            height = round(height / self.sample_aspect_ratio)
        return (width, height) if self.orientation[0] == 0 else (height, width)

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """A stored `(height, width, 3)` uint8 frame as a player shows it: stretched to the display aspect ratio
        (the short side of the pixel grid is stretched, bicubic, so no stored pixel is lost), then turned."""
        if self.sample_aspect_ratio != 1:
            height, width = frame.shape[:2]
            stretched = HBIDisplayTransform(sample_aspect_ratio=self.sample_aspect_ratio).shown_size(height, width)
            image = PIL.Image.fromarray(frame).resize(stretched[::-1], resample=PIL.Image.Resampling.BICUBIC)
            frame = np.asarray(image)
        a, b, c, d = self.orientation
        if b == 0:
            frame = frame[:, ::a, :][::d]
        else:  # shown x comes from stored y, shown y from stored x
            frame = frame.transpose(1, 0, 2)[::b][:, ::c]
        return np.ascontiguousarray(frame)


def _display_matrix(frame) -> np.ndarray | None:
    """The 9 int32 of a PyAV frame's display matrix side data (FFmpeg's layout), or None."""
    import av.sidedata.sidedata

    for side_data in frame.side_data:
        if side_data.type == av.sidedata.sidedata.Type.DISPLAYMATRIX:
            return np.frombuffer(bytes(side_data), dtype=np.int32).copy()
    return None


def _pyav_display(path: str) -> HBIDisplayTransform:
    """The display transform of a file's first video stream, read with PyAV: the display matrix FFmpeg attaches to
    its first decoded frame, else the stream's `rotate` tag; the stream's sample aspect ratio.

    PyAV exposes the matrix only through `frame.side_data`, which ties the frame (and its picture buffers) into a
    reference cycle; it is read on one frame per file, which is then collected at once (`gc.collect(0)`), else every
    file would leave a decoded frame (25 MiB at 4K) to the cyclic collector's rare full passes.
    """
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        try:
            frame = next(container.decode(stream), None)
        except av.FFmpegError:  # a damaged start: the reader decides whether the sampled frames decode
            frame = None
        matrix = _display_matrix(frame) if frame is not None else None
        del frame
        gc.collect(0)
        rotate_tag = next((value for key, value in stream.metadata.items() if key.lower() == "rotate"), None)
        sample_aspect_ratio = stream.sample_aspect_ratio
    return HBIDisplayTransform.from_metadata(path, matrix, rotate_tag, sample_aspect_ratio)


class _HBIPacketIndex:
    """Where each frame of a video stream is, read from its packets without decoding them (demuxing is cheap).

    Frames are counted as a player shows them: in presentation order, one per packet, leaving out the packets the
    demuxer marks as discarded (frames an edit list hides: they are decoded, as later frames may refer to them, but
    not counted). A packet cut off by the end of the file (a truncated
    download: it ends past the file's end, or at its end marked corrupt) and the frames shown after it are left out,
    so a truncated file gives its good frames. The frame count a container's header lists is not used (it can be one
    or more too high).
    `frame_pts` is None when the packets do not give every frame a distinct timestamp (then the reader decodes
    sequentially and counts the frames it gets).
    """

    def __init__(self, container, stream, file_size: int):
        pts, dts, keyframe, discarded = [], [], [], set()
        lost_pts = None
        try:
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                if packet.is_discard:  # decoded (later frames may refer to it), never shown
                    discarded.add(packet.pts)
                end = packet.pos + packet.size if packet.pos is not None and packet.pos >= 0 else None
                if end is not None and (end > file_size or (packet.is_corrupt and end == file_size)):
                    lost_pts = packet.pts
                    break
                pts.append(packet.pts)
                dts.append(packet.dts)
                keyframe.append(bool(packet.is_keyframe))
        except Exception as error:  # a damaged container: keep the packets read before the damage
            if not pts:
                raise
            logger.warning(f"{container.name}: container damaged after {len(pts)} packets ({error}); using those")
        self.pts, self.dts, self.keyframe = pts, dts, keyframe
        self.frame_pts = None
        if pts and None not in pts and len(set(pts)) == len(pts):
            shown = sorted(set(pts) - discarded)
            if lost_pts is not None:
                shown = [value for value in shown if value < lost_pts]
            self.frame_pts = shown
            self.position = {value: position for position, value in enumerate(pts)}
        self.total_num_frames = len(self.frame_pts) if self.frame_pts is not None else len(pts) - len(discarded)
        self.time_base = stream.time_base

    def variable_frame_times(self) -> list[float] | None:
        """Start of each frame in seconds from the first when the frame durations vary (the longest more than 1.5
        times the shortest), else None (a constant rate: frames are sampled by count, as the paper's code does)."""
        if self.frame_pts is None or self.total_num_frames < 3 or self.time_base is None:
            return None
        durations = np.diff(self.frame_pts)
        if durations.max() <= 1.5 * durations.min():
            return None
        return [float((value - self.frame_pts[0]) * self.time_base) for value in self.frame_pts]

    def anchor(self, target_pts: int) -> int:
        """Decode position of the keyframe to start from for the frame shown at `target_pts`: the last keyframe
        before it in decode order that is not shown after it (later keyframes of an open GOP cannot rebuild it)."""
        target_position = self.position[target_pts]
        for position in range(target_position, -1, -1):
            if self.keyframe[position] and self.pts[position] <= target_pts:
                return position
        return 0


class _HBISeekFailed(Exception):
    """Seeking did not give the frames the packet index promised: decode sequentially instead."""


def _frames_by_seeking(
    container, stream, index: _HBIPacketIndex, wanted_pts: list[int], convert: Callable
) -> dict[int, np.ndarray]:
    """RGB frames `{pts: (H, W, 3)}` for `wanted_pts`, seeking to a keyframe only where it skips decoding; only the
    wanted frames are kept and converted (`convert(frame)`)."""
    frames: dict[int, np.ndarray] = {}
    wanted = set(wanted_pts)
    packets, position = None, -1
    for target in sorted(wanted):
        if target in frames:
            continue
        anchor = index.anchor(target)
        if packets is None or anchor > position:
            packets, position = _seek_to(container, stream, index, anchor), -1
        found = False
        for packet in packets:
            if packet.size:
                if packet.pts not in index.position:  # a packet cut off by the end of the file
                    continue
                position = index.position[packet.pts]
            for frame in packet.decode():
                if frame.pts is None or (frame.pts > target and target not in frames):
                    raise _HBISeekFailed(f"frame at pts {target} not returned after seeking")
                if frame.pts in wanted:
                    frames[frame.pts] = convert(frame)
            if target in frames:
                found = True
                break
        if not found:
            raise _HBISeekFailed(f"frame at pts {target} not returned before the end of the stream")
    return frames


def _seek_to(container, stream, index: _HBIPacketIndex, anchor: int):
    """A packet iterator that starts at or before the packet at decode position `anchor`: seeks to the keyframe's
    timestamp, then (demuxers that index by decode time) to its decode timestamp; `_HBISeekFailed` if neither lands
    at or before it."""
    offsets = [index.pts[anchor]]
    if index.dts[anchor] is not None and index.dts[anchor] < index.pts[anchor]:
        offsets.append(index.dts[anchor])
    for offset in offsets:
        container.seek(offset, backward=True, any_frame=False, stream=stream)
        packets = container.demux(stream)
        first = next(packets, None)
        if first is None or not first.size or first.pts not in index.position:
            continue
        if index.position[first.pts] <= anchor:
            return itertools.chain([first], packets)
    raise _HBISeekFailed(f"could not seek to the keyframe at decode position {anchor}")


def _frames_sequentially(
    path: str, index: _HBIPacketIndex, wanted: list[int], convert: Callable
) -> dict[int, np.ndarray]:
    """RGB frames `{index: (H, W, 3)}` for the wanted frame indices (`convert(frame)`), decoding from the start and
    counting frames in presentation order (the reference: what a player shows); stops after the last wanted frame."""
    import av

    wanted_set, last = set(wanted), max(wanted)
    shown = set(index.frame_pts) if index.frame_pts is not None else None
    frames: dict[int, np.ndarray] = {}
    count = 0
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        for packet in container.demux(stream):
            if packet.size and shown is not None and packet.pts not in index.position:
                continue
            for frame in packet.decode():
                if shown is not None and frame.pts not in shown:
                    continue
                if count in wanted_set:
                    frames[count] = convert(frame)
                count += 1
            if count > last:
                break
    return frames


def _pyav_converter(display: HBIDisplayTransform, resize: Callable | None) -> Callable:
    """`convert(frame)`: a PyAV frame as a `(H, W, 3)` uint8 RGB array as a player shows it ([`HBIDisplayTransform`]),
    then `resize`d; only the converted frame is kept, so a 4K frame is held once, briefly."""

    def convert(frame) -> np.ndarray:
        image = display.apply(frame.to_ndarray(format="rgb24"))
        return resize(image) if resize is not None else image

    return convert


def _read_video_pyav(path: str, sample_indices, resize: Callable | None = None) -> tuple[np.ndarray, VideoMetadata]:
    import av

    try:
        container = av.open(path)
    except Exception as error:
        raise HBIVideoDecodeError(path, f"unreadable or corrupt video ({type(error).__name__})") from error
    with container:
        if not container.streams.video:
            raise HBIVideoDecodeError(path, ZERO_FRAMES + " (no video stream)")
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        try:
            index = _HBIPacketIndex(container, stream, Path(path).stat().st_size)
        except Exception as error:
            raise HBIVideoDecodeError(path, f"unreadable or corrupt video ({type(error).__name__})") from error
        if index.total_num_frames == 0:
            raise HBIVideoDecodeError(path, ZERO_FRAMES)
        fps = float(stream.average_rate) if stream.average_rate else None
        metadata = HBIVideoMetadata(
            total_num_frames=index.total_num_frames,
            fps=fps,
            duration=index.total_num_frames / fps if fps else None,
            video_backend="pyav",
            frame_times=index.variable_frame_times(),
        )
        indices = [int(i) for i in sample_indices(metadata)]
        _check_indices(path, indices, index.total_num_frames)
        try:
            display = _pyav_display(path)
        except Exception as error:
            raise HBIVideoDecodeError(path, f"decoding failed ({type(error).__name__}: {error})") from error
        convert = _pyav_converter(display, resize)
        frames = None
        if index.frame_pts is None:
            logger.info(f"{path}: decoding sequentially (the packets carry no distinct timestamps)")
        else:
            wanted_pts = [index.frame_pts[i] for i in indices]
            try:
                by_pts = _frames_by_seeking(container, stream, index, wanted_pts, convert)
                frames = [by_pts[pts] for pts in wanted_pts]
            except _HBISeekFailed as reason:
                logger.info(f"{path}: decoding sequentially ({reason})")
            except Exception as error:
                raise HBIVideoDecodeError(path, f"decoding failed ({type(error).__name__}: {error})") from error
    if frames is None:
        try:
            by_index = _frames_sequentially(path, index, indices, convert)
        except Exception as error:
            raise HBIVideoDecodeError(path, f"decoding failed ({type(error).__name__}: {error})") from error
        missing = sorted(set(indices) - set(by_index))
        if missing:
            raise HBIVideoDecodeError(
                path, f"decoding failed: frames {missing[:5]} of the {index.total_num_frames} listed were not decoded"
            )
        frames = [by_index[i] for i in indices]
    return _finish(path, frames, indices, metadata)


@dataclass
class _HBIPyAVProbe:
    """What PyAV reads of a file without decoding more than its first frame: the frames a player shows, their times
    when the rate varies, the stored frame size and the display transform."""

    total_num_frames: int
    frame_times: list[float] | None
    height: int
    width: int
    display: HBIDisplayTransform


def _pyav_probe(path: str) -> _HBIPyAVProbe | None:
    """[`_HBIPyAVProbe`] of a file, or None where PyAV cannot read it."""
    import av

    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            index = _HBIPacketIndex(container, stream, Path(path).stat().st_size)
            display = _pyav_display(path)
            return _HBIPyAVProbe(
                index.total_num_frames, index.variable_frame_times(), stream.height, stream.width, display
            )
    except Exception:  # decord may still read it
        return None


def _read_video_decord(path: str, sample_indices, resize: Callable | None = None) -> tuple[np.ndarray, VideoMetadata]:
    """decord, decoding sequentially from the first frame up to the last sampled one: its seeking (`get_batch` on
    non-consecutive indices, `seek_accurate`, `skip_frames`) returns other frames than the ones asked for on MPEG-4
    Part 2 with B-frames and on HEVC.

    The file is read with PyAV instead (logged) where decord would return other frames than a player shows: a file
    decord cannot open or decode; a turned or mirrored one (decord turns 90 / 270 degrees into garbage when the
    turned width is not a multiple of 32, mirrors as a 180-degree turn, and ignores a Matroska display matrix); one
    where decord counts other frames than the player does (an edit list hiding frames: decord lists them and
    returns the last frame again in their place); and one where decord returns a frame of another shape than the
    video's (frames under 32 px wide, or not a multiple of 32, come back as 4- or 6-channel garbage). Frame times
    (variable frame rate), the display transform and the frame count come from PyAV's packet index ([`_pyav_probe`]).
    """
    import decord

    probe = _pyav_probe(path)
    if probe is not None and probe.display.is_oriented:
        logger.info(
            f"{path}: turned or mirrored by its display metadata, which decord misapplies; reading it with PyAV"
        )
        return _read_video_pyav(path, sample_indices, resize)
    try:
        reader = decord.VideoReader(path, num_threads=1)
        total = len(reader)
    except Exception as error:
        logger.warning(f"{path}: decord cannot read it ({type(error).__name__}); reading it with PyAV")
        return _read_video_pyav(path, sample_indices, resize)
    if probe is not None and probe.total_num_frames != total:
        del reader
        logger.warning(
            f"{path}: decord counts {total} frames, a player shows {probe.total_num_frames} (an edit list or a "
            "damaged index); reading it with PyAV"
        )
        return _read_video_pyav(path, sample_indices, resize)
    if total == 0:
        raise HBIVideoDecodeError(path, ZERO_FRAMES)
    fps = float(reader.get_avg_fps()) or None
    metadata = HBIVideoMetadata(
        total_num_frames=total,
        fps=fps,
        duration=total / fps if fps else None,
        video_backend="decord",
        frame_times=probe.frame_times if probe is not None else None,
    )
    indices = [int(i) for i in sample_indices(metadata)]
    _check_indices(path, indices, total)
    display = probe.display if probe is not None else HBIDisplayTransform()
    wanted = set(indices)
    by_index = {}
    problem = None
    try:
        for position in range(max(indices) + 1):
            frame = reader.next()
            if position in wanted:
                image = frame.asnumpy()
                stored = (probe.height, probe.width, 3) if probe is not None else (*image.shape[:2], 3)
                if image.shape != stored:
                    problem = f"decord returned a {image.shape} frame for a {stored} video"
                    break
                image = display.apply(image)
                by_index[position] = resize(image) if resize is not None else image
    except Exception as error:
        problem = f"decord failed at frame {position} ({type(error).__name__})"
    finally:
        del reader
    if problem is not None:
        logger.warning(f"{path}: {problem}; reading it with PyAV")
        return _read_video_pyav(path, sample_indices, resize)
    return _finish(path, [by_index[i] for i in indices], indices, metadata)


def _check_indices(path: str, indices: list[int], total: int) -> None:
    if not indices:
        raise HBIVideoDecodeError(path, ZERO_FRAMES + " (no frame sampled)")
    if min(indices) < 0 or max(indices) >= total:
        raise ValueError(f"{path}: sampled frame indices must be in [0, {total}); got {indices}")


def _finish(path: str, frames: list[np.ndarray], indices: list[int], metadata: VideoMetadata):
    shapes = {frame.shape for frame in frames}
    if len(shapes) != 1:
        raise HBIVideoDecodeError(path, f"frames change size within the video: {sorted(shapes)}")
    video = np.stack(frames)
    metadata.frames_indices = indices
    metadata.height, metadata.width = video.shape[1:3]
    return video, metadata


def read_video(
    path: str | PathLike, sample_indices, backend: str | None = None, resize: Callable | None = None
) -> tuple[np.ndarray, VideoMetadata]:
    """Decodes the frames of a video file that `sample_indices(metadata)` selects, as a player shows them: frame `i`
    is the `i`-th frame a player shows (presentation order), turned, mirrored and stretched by the stream's display
    metadata ([`HBIDisplayTransform`]: display matrix or `rotate` tag, sample aspect ratio), on both backends.

    * `"pyav"` (default): reads the packet index (no decoding), then seeks to the keyframe before each sampled frame
      where that skips decoding, and decodes forward to it; only the sampled frames are converted and kept, so memory
      is bounded by the sampled frames. Where the packets carry no distinct timestamps, or a seek does not land where
      the index says, it decodes sequentially from the start instead (logged). A file truncated at its tail gives
      the frames shown before the first cut-off packet. Frames an edit list hides are not counted.
    * `"decord"`: decodes sequentially from the first frame to the last sampled one (its seeking returns wrong frames
      for MPEG-4 Part 2 with B-frames and HEVC); a file decord cannot open or decode, or would return other frames
      than a player shows, is read with PyAV (logged; see [`_read_video_decord`]).

    Args:
        path (`str` or `PathLike`): the video file.
        sample_indices (`Callable[[VideoMetadata], np.ndarray]`): picks frame indices (in `[0, total_num_frames)`)
            from the video's metadata.
        backend (`str`, *optional*, defaults to `"pyav"`): `"pyav"` or `"decord"`.
        resize (`Callable[[np.ndarray], np.ndarray]`, *optional*): applied to each kept frame as soon as it is
            decoded and turned (the processor passes its resize, so only small frames are held).

    Returns:
        `(frames, metadata)`: frames of shape `(sampled, height, width, 3)` (uint8 RGB) and the video's metadata
        (`height` / `width` are those of the returned frames).

    Raises:
        `HBIVideoDecodeError`: the file is missing, unreadable, corrupt, or has zero frames.
        `ValueError`: an unknown backend, or sampled indices outside the video.
    """
    path = str(path)
    if not Path(path).is_file():
        raise HBIVideoDecodeError(path, FILE_NOT_FOUND)
    if Path(path).stat().st_size == 0:
        raise HBIVideoDecodeError(path, ZERO_FRAMES + " (empty file)")
    backend = backend or default_video_backend()
    if backend == "decord":
        return _read_video_decord(path, sample_indices, resize)
    if backend == "pyav":
        return _read_video_pyav(path, sample_indices, resize)
    raise ValueError(f"video_backend must be one of {VIDEO_BACKENDS}; got {backend!r}")


class HBIVideoProcessorKwargs(VideosKwargs, total=False):
    r"""
    sampling_mode (`str`, *optional*, defaults to `"fps"`):
        `"fps"`: 1 frame per second, then uniformly down to `num_frames` (the paper's protocol); `"uniform"`:
        `num_frames` frames spread over the whole video.
    sampling_fps (`float`, *optional*, defaults to 1.0):
        The rate of the first stage of `"fps"` sampling; transformers' name `fps` is accepted for it.
    video_backend (`str`, *optional*, defaults to `"pyav"`):
        `"pyav"` or `"decord"` (see [`read_video`]).
    """

    sampling_mode: str | None
    sampling_fps: float | None
    video_backend: str | None


# keywords of transformers' `VideosKwargs` that this processor cannot honour, with the value that leaves them unused
_UNSUPPORTED_VIDEO_KWARGS = {"do_pad": (None, False)}
_CHANNELS_FIRST = (None, "channels_first", ChannelDimension.FIRST)
_SAMPLING_KWARGS = ("fps", "sampling_fps", "sampling_mode")


class HBIVideoProcessor(BaseVideoProcessor):
    r"""
    Constructs an HBI video processor. Takes video files or decoded frames, samples `num_frames` frames, resizes the
    shortest edge to 224 (bicubic, with Pillow: CLIP's image processor), centre-crops to 224x224 and normalises with
    CLIP's mean and standard deviation. Videos shorter than `num_frames` are padded with zero frames.

    Args:
        num_frames (`int`, *optional*, defaults to 12):
            The most frames per video (the paper: 12 for MSR-VTT and QA, 32 for DiDeMo, 64 for ActivityNet).
        sampling_mode (`str`, *optional*, defaults to `"fps"`):
            `"fps"` (1 fps then uniformly down to `num_frames`) or `"uniform"`.
        sampling_fps (`float`, *optional*, defaults to 1.0):
            The rate of the first stage of `"fps"` sampling. `fps` (transformers' name) sets it too.
        video_backend (`str`, *optional*, defaults to `"pyav"`):
            `"pyav"` or `"decord"`; both return the frames a player shows at the sampled indices ([`read_video`]).
        do_sample_frames (`bool`, *optional*, defaults to `True`):
            As in transformers: `False` takes every frame (every decoded frame of a file; decoded frames as given),
            and the batch is padded to the longest video (at least `num_frames` frames).
        size (`dict[str, int]`, *optional*, defaults to `{"shortest_edge": 224}`):
            The resize target.
        crop_size (`dict[str, int]`, *optional*, defaults to `{"height": 224, "width": 224}`):
            The centre-crop size.

    Returns (from `__call__`): a `BatchFeature` with `pixel_values` `(batch, num_frames, 3, height, width)` and
    `video_mask` `(batch, num_frames)` (1 for a real frame, 0 for padding).

    Raises:
        `TypeError`: a keyword this processor does not know. `ValueError`: a keyword it would ignore (`do_pad=True`,
        a channels-last `data_format`, sampling keywords with `do_sample_frames=False`, `fps` and `sampling_fps`
        that disagree), an unknown `sampling_mode` or `video_backend`.

    Example:

    ```python
    >>> from hbi_hf import HBIVideoProcessor

    >>> processor = HBIVideoProcessor(num_frames=12)
    >>> batch = processor(["video0.mp4", "video1.mp4"], return_tensors="pt")
    >>> batch["pixel_values"].shape, batch["video_mask"].shape
    (torch.Size([2, 12, 3, 224, 224]), torch.Size([2, 12]))
    ```
    """

    valid_kwargs = HBIVideoProcessorKwargs
    model_input_names = ["pixel_values", "video_mask"]
    resample = PILImageResampling.BICUBIC
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    size = {"shortest_edge": 224}
    crop_size = {"height": 224, "width": 224}
    default_to_square = False
    do_resize = True
    do_center_crop = True
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    do_convert_rgb = True
    do_sample_frames = True
    num_frames = 12
    sampling_mode = "fps"
    sampling_fps = 1.0
    video_backend = None

    def __init__(self, **kwargs: Unpack[HBIVideoProcessorKwargs]) -> None:
        fps = kwargs.pop("fps", None)
        if fps is not None:
            kwargs["sampling_fps"] = _merge_fps(fps, kwargs.get("sampling_fps"))
        super().__init__(**kwargs)
        self.fps = None
        _check_sampling(self.num_frames, self.sampling_mode, self.sampling_fps, self.video_backend)

    def preprocess(self, videos, **kwargs: Unpack[HBIVideoProcessorKwargs]) -> BatchFeature:
        """Decodes (paths), samples, resizes, crops and normalises `videos`; the keywords override the processor's
        settings for this call. See the class docstring for what is returned and raised."""
        accepted = set(self.valid_kwargs.__annotations__) | {"return_tensors"}
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise TypeError(
                f"HBIVideoProcessor got unknown keyword(s) {unknown}; it accepts {sorted(accepted)} (text keywords "
                "such as padding or max_length go to HBIProcessor, which passes them to the tokenizer)"
            )
        for name, unused in _UNSUPPORTED_VIDEO_KWARGS.items():
            if kwargs.get(name) not in unused:
                raise ValueError(f"HBIVideoProcessor does not support {name}={kwargs[name]!r}")
        if kwargs.get("data_format") not in _CHANNELS_FIRST:
            raise ValueError(
                f"data_format must be channels_first (pixel_values are (batch, frames, 3, H, W)); got "
                f"{kwargs['data_format']!r}"
            )
        do_sample_frames = kwargs.pop("do_sample_frames", None)
        do_sample_frames = self.do_sample_frames if do_sample_frames is None else do_sample_frames
        given_sampling = sorted(name for name in _SAMPLING_KWARGS if kwargs.get(name) is not None)
        if not do_sample_frames and given_sampling:
            raise ValueError(f"{given_sampling} have no effect with do_sample_frames=False (every frame is taken)")
        if kwargs.get("fps") is not None:
            kwargs["sampling_fps"] = _merge_fps(kwargs.pop("fps"), kwargs.get("sampling_fps"))
        for name in self.valid_kwargs.__annotations__:
            if kwargs.get(name) is None:
                kwargs[name] = getattr(self, name, None)
        _check_sampling(kwargs["num_frames"], kwargs["sampling_mode"], kwargs["sampling_fps"], kwargs["video_backend"])
        sample_indices_fn = None
        if do_sample_frames:
            sample_indices_fn = partial(
                self.sample_frames,
                num_frames=kwargs["num_frames"],
                sampling_mode=kwargs["sampling_mode"],
                sampling_fps=kwargs["sampling_fps"],
            )
        video_metadata, video_backend = kwargs.pop("video_metadata"), kwargs.pop("video_backend")
        do_convert_rgb, input_data_format = kwargs.pop("do_convert_rgb"), kwargs.pop("input_data_format")
        device = kwargs.pop("device")
        for name in ("fps", "sampling_fps", "sampling_mode", "data_format", "do_sample_frames"):
            kwargs.pop(name)
        return_metadata = kwargs.pop("return_metadata")
        kwargs = self._standardize_kwargs(**kwargs)
        self._validate_preprocess_kwargs(**kwargs)
        # files: each frame is resized as it is decoded (the same Pillow resize as below, which then has nothing to do)
        resize_frame = partial(self.resize_frame, size=kwargs["size"], resample=kwargs["resample"])
        videos, video_metadata = self._decode_and_sample_videos(
            videos,
            video_metadata=video_metadata,
            do_sample_frames=do_sample_frames,
            sample_indices_fn=sample_indices_fn,
            video_backend=video_backend,
            resize=resize_frame if kwargs["do_resize"] else None,
        )
        videos = self._prepare_input_videos(
            videos=videos, do_convert_rgb=do_convert_rgb, input_data_format=input_data_format, device=device
        )
        processed = self._preprocess(videos=videos, **kwargs)
        if return_metadata:
            processed["video_metadata"] = video_metadata
        return processed

    def sample_frames(
        self,
        metadata: VideoMetadata,
        num_frames: int | None = None,
        sampling_mode: str | None = None,
        sampling_fps: float | None = None,
    ) -> np.ndarray:
        """Frame indices for one video; see [`sample_frame_indices`]."""
        return sample_frame_indices(
            total_num_frames=metadata.total_num_frames,
            num_frames=num_frames or self.num_frames,
            video_fps=metadata.fps,
            sampling_mode=sampling_mode or self.sampling_mode,
            sampling_fps=sampling_fps or self.sampling_fps,
            frame_times=getattr(metadata, "frame_times", None),
        )

    def _decode_and_sample_videos(
        self,
        videos,
        video_metadata,
        do_sample_frames: bool | None = None,
        sample_indices_fn=None,
        video_backend: str | None = None,
        resize: Callable | None = None,
    ) -> tuple[list[np.ndarray], list[VideoMetadata]]:
        """Decodes paths ([`read_video`], each kept frame `resize`d as it is decoded) and samples frames; decoded
        frames are sampled the same way (and resized later, in `_preprocess`)."""
        if isinstance(videos, (str, PathLike)):
            videos = [videos]
        if isinstance(videos, (list, tuple)) and videos and all(isinstance(v, (str, PathLike)) for v in videos):
            if sample_indices_fn is None:
                sample_indices_fn = self._all_frame_indices
            decoded = [read_video(path, sample_indices_fn, backend=video_backend, resize=resize) for path in videos]
            return [frames for frames, _ in decoded], [metadata for _, metadata in decoded]
        videos = make_batched_videos(videos)
        video_metadata = make_batched_metadata(videos, video_metadata=video_metadata)
        sampled_videos = []
        for video, metadata in zip(videos, video_metadata, strict=True):
            if not is_valid_video(video) or len(video) == 0:
                raise ValueError("each decoded video must be a non-empty (frames, height, width, 3) array")
            if do_sample_frames:
                indices = sample_indices_fn(metadata=metadata)
                metadata.frames_indices = list(indices)
                video = video[indices]
            sampled_videos.append(video)
        return sampled_videos, video_metadata

    @staticmethod
    def _all_frame_indices(metadata: VideoMetadata) -> np.ndarray:
        return np.arange(metadata.total_num_frames)

    def convert_to_rgb(self, video: torch.Tensor) -> torch.Tensor:
        """Grey frames are repeated to 3 channels; an alpha channel is dropped. `video` is `(frames, C, H, W)`."""
        if video.shape[1] == 1:
            return video.expand(-1, 3, -1, -1)
        return video[:, :3]

    def resize(self, video: torch.Tensor, size: SizeDict, resample=None, **kwargs) -> torch.Tensor:
        """Resizes `(frames, 3, H, W)` so the shortest edge is `size.shortest_edge` (the long edge rounded down, as
        CLIP's image processor) or to `size.height x size.width`.

        uint8 frames are resized with Pillow, frame by frame, exactly as CLIP's Pillow image processor (the
        preprocessing of pretrained CLIP and of the official HBI code; [`resize_frame`]); float frames with `torch`
        (antialiased, which matches Pillow when downscaling, not when upscaling).
        """
        height, width = video.shape[-2:]
        new_size = _resized_shape(height, width, size)
        if new_size == (height, width):
            return video
        resample = PILImageResampling.BICUBIC if resample is None else resample
        if video.dtype == torch.uint8:
            frames = video.permute(0, 2, 3, 1).cpu().numpy()
            resized = np.stack([self.resize_frame(frame, size, resample) for frame in frames])
            return torch.from_numpy(resized).permute(0, 3, 1, 2).to(video.device)
        mode = _TORCH_INTERPOLATION.get(resample, "bicubic")
        return F.interpolate(video, size=new_size, mode=mode, antialias=mode != "nearest", align_corners=None)

    @staticmethod
    def resize_frame(frame: np.ndarray, size: SizeDict, resample=None) -> np.ndarray:
        """One `(H, W, 3)` uint8 frame resized with Pillow as [`resize`] does (CLIP's Pillow image processor); the
        video reader calls it on each frame as it is decoded, so a 4K frame is never kept."""
        height, width = frame.shape[:2]
        new_size = _resized_shape(height, width, size)
        if new_size == (height, width):
            return frame
        resample = PILImageResampling.BICUBIC if resample is None else resample
        return np.asarray(PIL.Image.fromarray(frame).resize(new_size[::-1], resample=resample))

    def center_crop(self, video: torch.Tensor, size: SizeDict, **kwargs) -> torch.Tensor:
        """Crops the centre `size.height x size.width` of `(frames, 3, H, W)`, padding with zeros if smaller."""
        height, width = video.shape[-2:]
        pad_height, pad_width = max(0, size.height - height), max(0, size.width - width)
        if pad_height or pad_width:
            padding = (pad_width // 2, pad_width - pad_width // 2, pad_height // 2, pad_height - pad_height // 2)
            video = F.pad(video, padding)
            height, width = video.shape[-2:]
        top, left = (height - size.height) // 2, (width - size.width) // 2
        return video[..., top : top + size.height, left : left + size.width]

    def _preprocess(
        self,
        videos: list[torch.Tensor],
        do_resize: bool,
        size: SizeDict,
        resample,
        do_center_crop: bool,
        crop_size: SizeDict,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean,
        image_std,
        num_frames: int | None = None,
        return_tensors: str | TensorType | None = None,
        **kwargs,
    ) -> BatchFeature:
        num_frames = num_frames or self.num_frames
        if do_rescale and any(video.is_floating_point() and _in_unit_range(video) for video in videos):
            logger.warning_once(
                "It looks like you are trying to rescale already rescaled video frames: float frames with every "
                f"value in [0, 1] are multiplied by rescale_factor={rescale_factor} again (as CLIP's image processor "
                "does). If the frames are already in [0, 1], pass `do_rescale=False`."
            )
        processed = []
        for video in videos:
            if do_resize:
                video = self.resize(video, size=size, resample=resample)
            if do_center_crop:
                video = self.center_crop(video, crop_size)
            processed.append(video)
        length = max([num_frames] + [len(video) for video in processed])
        pixel_values, video_mask = pad_videos(processed, length)
        # in place, in the order (and so with the rounding) of x * rescale_factor, then (x - mean) / std
        if do_rescale:
            pixel_values.mul_(rescale_factor)
        if do_normalize:
            pixel_values.sub_(torch.tensor(image_mean, dtype=torch.float32, device=pixel_values.device).view(3, 1, 1))
            pixel_values.div_(torch.tensor(image_std, dtype=torch.float32, device=pixel_values.device).view(3, 1, 1))
        padding = (video_mask == 0).to(pixel_values.device)[:, :, None, None, None]
        pixel_values.masked_fill_(padding, 0)
        return BatchFeature(data={"pixel_values": pixel_values, "video_mask": video_mask}, tensor_type=return_tensors)


def _resized_shape(height: int, width: int, size: SizeDict) -> tuple[int, int]:
    """`(height, width)` after resizing: the shortest edge to `size.shortest_edge` (the long edge rounded down, as
    CLIP's image processor), or `size.height x size.width`."""
    if size.shortest_edge:
        short, long = sorted((height, width))
        new_long = int(size.shortest_edge * long / short)
        return (size.shortest_edge, new_long) if height <= width else (new_long, size.shortest_edge)
    if size.height and size.width:
        return (size.height, size.width)
    raise ValueError(f"size must have 'shortest_edge' or 'height' and 'width'; got {size}")


def _merge_fps(fps: float, sampling_fps: float | None) -> float:
    """transformers' `fps` is HBI's `sampling_fps`: either may be given, both only if they agree."""
    if sampling_fps is not None and float(sampling_fps) != float(fps):
        raise ValueError(f"fps ({fps}) and sampling_fps ({sampling_fps}) name the same setting and disagree")
    return float(fps)


def _check_sampling(num_frames, sampling_mode, sampling_fps, video_backend) -> None:
    if not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive integer; got {num_frames!r}")
    if sampling_mode not in FRAME_SAMPLING_MODES:
        raise ValueError(f"sampling_mode must be one of {FRAME_SAMPLING_MODES}; got {sampling_mode!r}")
    if not sampling_fps or sampling_fps <= 0:
        raise ValueError(f"sampling_fps (fps) must be positive; got {sampling_fps!r}")
    if video_backend not in (None, *VIDEO_BACKENDS):
        raise ValueError(f"video_backend must be one of {VIDEO_BACKENDS}; got {video_backend!r}")
    if video_backend == "decord" and importlib.util.find_spec("decord") is None:
        raise ImportError("video_backend='decord' needs the decord package (no wheel for this platform?); use 'pyav'")


def _in_unit_range(video: torch.Tensor) -> bool:
    """Whether every value is in [0, 1] (transformers' `is_scaled_image` test, for a whole video)."""
    return bool(video.min() >= 0) and bool(video.max() <= 1)


def pad_videos(videos: list[torch.Tensor], num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stacks `(frames_i, 3, H, W)` videos into a float32 `(batch, num_frames, 3, H, W)`, zero-padding the short ones.

    Returns:
        `(pixel_values, video_mask)`, the mask `(batch, num_frames)` (long) is 1 for real frames.
    """
    shapes = {tuple(video.shape[1:]) for video in videos}
    if len(shapes) != 1:
        raise ValueError(f"all processed frames must have the same shape; got {sorted(shapes)}")
    pixel_values = torch.zeros((len(videos), num_frames, *shapes.pop()), dtype=torch.float32, device=videos[0].device)
    video_mask = torch.zeros((len(videos), num_frames), dtype=torch.long)
    for index, video in enumerate(videos):
        pixel_values[index, : len(video)] = video
        video_mask[index, : len(video)] = 1
    return pixel_values, video_mask


__all__ = [
    "HBIDisplayTransform",
    "HBIVideoDecodeError",
    "HBIVideoMetadata",
    "HBIVideoProcessor",
    "read_video",
    "sample_frame_indices",
]
