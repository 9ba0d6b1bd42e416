"""Videos whose frame index is painted into the pixels, to check that a decoder returns the frames asked for.

Frame `i` shows `i` in binary as a 4x4 grid of black / white blocks (16 bits, least significant bit top left), big
enough to survive lossy compression at any of the codecs below. [`read_painted_index`] reads it back. With
`marker=True` a red square marks the stored frame's top-left corner, so [`marked_corner`] tells which way a decoder
turned or mirrored it; [`write_painted_video`] can add the display metadata (display matrix, legacy `rotate` tag,
sample aspect ratio) that tells a player to do so.
"""

import itertools
from fractions import Fraction
from pathlib import Path

import numpy as np

PAINTED_GRID = 4
# Encoder settings of the painted-index test set: (file suffix, PyAV codec, stream options, extra settings).
# Short GOPs with B-frames are the cases where decoders that seek go wrong.
PAINTED_CODECS = {
    "h264_bframes.mp4": ("libx264", {"g": "30", "bf": "3", "threads": "1"}, {}),
    "h264_bframes.mkv": ("libx264", {"g": "30", "bf": "3", "threads": "1"}, {}),
    "mpeg4_bframes.avi": ("mpeg4", {"qscale": "3"}, {"max_b_frames": 2, "gop_size": 30}),
    "xvid_bframes.avi": ("mpeg4", {"qscale": "4"}, {"max_b_frames": 2, "gop_size": 30, "codec_tag": "XVID"}),
    "mpeg4_no_bframes.avi": ("mpeg4", {"qscale": "3"}, {"gop_size": 12}),
    "hevc_short_gop.mp4": ("libx265", {"x265-params": "keyint=6:min-keyint=6:bframes=3:log-level=none"}, {}),
    "hevc_short_gop.mkv": ("libx265", {"x265-params": "keyint=6:min-keyint=6:bframes=3:log-level=none"}, {}),
    "vp9.webm": ("libvpx-vp9", {"g": "20", "threads": "1", "deadline": "realtime", "cpu-used": "8"}, {}),
    "mjpeg.avi": ("mjpeg", {}, {"pix_fmt": "yuvj420p"}),
    "h264_vfr.mp4": ("libx264", {"g": "30", "bf": "2", "threads": "1"}, {"frame_durations_ms": (20, 33, 50, 100)}),
    "h264_vfr.mkv": ("libx264", {"g": "30", "bf": "2", "threads": "1"}, {"frame_durations_ms": (20, 33, 50, 100)}),
}


def paint_frame_index(index: int, height: int = 64, width: int = 64, marker: bool = False) -> np.ndarray:
    """`(height, width, 3)` uint8 RGB frame showing `index` (< 2**16) as a 4x4 grid of black / white blocks; with
    `marker`, a red square of side `min(height, width) // 16` in the top-left corner (outside the part of each
    block that [`read_painted_index`] reads)."""
    if not 0 <= index < 2 ** (PAINTED_GRID * PAINTED_GRID):
        raise ValueError(f"index must be in [0, {2 ** (PAINTED_GRID * PAINTED_GRID)}); got {index}")
    bits = (index >> np.arange(PAINTED_GRID * PAINTED_GRID)) & 1
    grid = (bits.reshape(PAINTED_GRID, PAINTED_GRID) * 255).astype(np.uint8)
    rows = np.arange(height) * PAINTED_GRID // height
    columns = np.arange(width) * PAINTED_GRID // width
    frame = np.repeat(grid[rows][:, columns][..., None], 3, axis=2)
    if marker:
        side = min(height, width) // 16
        frame[:side, :side] = (255, 0, 0)
    return frame


CORNERS = ("top left", "top right", "bottom left", "bottom right")


def marked_corner(frame: np.ndarray) -> str | None:
    """The corner of a decoded `(height, width, 3)` RGB frame where the red marker of [`paint_frame_index`] is (one of
    `CORNERS`), or None if no corner is clearly red."""
    side = max(1, min(frame.shape[:2]) // 32)  # the centre of a marker of side min // 16
    patches = dict(
        zip(
            CORNERS,
            (frame[:side, :side], frame[:side, -side:], frame[-side:, :side], frame[-side:, -side:]),
            strict=True,
        )
    )
    red = [corner for corner, patch in patches.items() if patch[..., 0].mean() > 150 and patch[..., 1:].mean() < 100]
    return red[0] if len(red) == 1 else None


def read_painted_index(frame: np.ndarray) -> int:
    """The index painted into a decoded `(height, width, 3)` RGB frame: each block's centre half, thresholded at 128."""
    height, width = frame.shape[:2]
    grey = frame.astype(np.float32).mean(axis=-1)
    index = 0
    for bit in range(PAINTED_GRID * PAINTED_GRID):
        row, column = divmod(bit, PAINTED_GRID)
        top, left = (4 * row + 1) * height // (4 * PAINTED_GRID), (4 * column + 1) * width // (4 * PAINTED_GRID)
        bottom, right = (4 * row + 3) * height // (4 * PAINTED_GRID), (4 * column + 3) * width // (4 * PAINTED_GRID)
        index |= int(grey[top:bottom, left:right].mean() > 128) << bit
    return index


def painted_frame_times(num_frames: int, frame_durations_ms: tuple[int, ...]) -> list[float]:
    """Start time in seconds of each frame when frame `i` lasts `frame_durations_ms[i % len(frame_durations_ms)]`."""
    durations = [frame_durations_ms[i % len(frame_durations_ms)] for i in range(num_frames - 1)]
    return [milliseconds / 1000 for milliseconds in itertools.accumulate(durations, initial=0)]


def write_painted_video(
    path: str | Path,
    num_frames: int,
    codec: str = "libx264",
    options: dict[str, str] | None = None,
    fps: int = 30,
    height: int = 64,
    width: int = 64,
    max_b_frames: int | None = None,
    gop_size: int | None = None,
    codec_tag: str | None = None,
    pix_fmt: str = "yuv420p",
    frame_durations_ms: tuple[int, ...] | None = None,
    container_options: dict[str, str] | None = None,
    marker: bool = False,
    display_rotation: int | None = None,
    hflip: bool = False,
    vflip: bool = False,
    rotate_tag: str | None = None,
    sample_aspect_ratio: Fraction | None = None,
    hidden_leading_frames: int = 0,
) -> None:
    """Encodes `num_frames` painted frames with PyAV (the container follows the suffix of `path`).

    With `frame_durations_ms` (a variable frame rate), frame `i` lasts `frame_durations_ms[i % len(...)]` ms
    (millisecond time base); see [`painted_frame_times`].

    Display metadata, for the player (the stored frames stay as painted): `display_rotation` (degrees
    counter-clockwise) with `hflip` / `vflip` (mirrored after the rotation) write a display matrix; `rotate_tag` a
    legacy `rotate` stream tag (degrees clockwise; kept by Matroska only); `sample_aspect_ratio` the pixel shape
    (width / height, in the codec's header and the container's). `hidden_leading_frames` gives the first frames
    negative timestamps, which an mp4 / mov muxer hides behind an edit list: a player shows frame
    `hidden_leading_frames` first.
    """
    import av

    with av.open(str(path), mode="w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = options or {}
        if display_rotation is not None or hflip or vflip:
            stream.set_display_rotation(display_rotation or 0, hflip=hflip, vflip=vflip)
        if rotate_tag is not None:
            stream.metadata["rotate"] = rotate_tag
        if sample_aspect_ratio is not None:
            stream.codec_context.sample_aspect_ratio = sample_aspect_ratio
        if codec_tag:
            stream.codec_tag = codec_tag
        if max_b_frames is not None:
            stream.codec_context.max_b_frames = max_b_frames
        if gop_size is not None:
            stream.codec_context.gop_size = gop_size
        if frame_durations_ms:
            stream.codec_context.time_base = Fraction(1, 1000)
        times = painted_frame_times(num_frames, frame_durations_ms) if frame_durations_ms else None
        for index in range(num_frames):
            frame = av.VideoFrame.from_ndarray(paint_frame_index(index, height, width, marker), format="rgb24")
            if times is not None:
                frame.pts, frame.time_base = round(times[index] * 1000), Fraction(1, 1000)
            elif hidden_leading_frames:
                frame.pts, frame.time_base = index - hidden_leading_frames, Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_painted_test_set(folder: str | Path, num_frames: int = 90) -> dict[str, Path]:
    """Writes one painted clip per entry of `PAINTED_CODECS` that the installed PyAV can encode; returns
    `{name: path}`. HEVC clips get 35 frames (x265 is slow), the rest `num_frames`."""
    import av

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, (codec, options, settings) in PAINTED_CODECS.items():
        if codec not in av.codecs_available:
            continue
        path = folder / name
        write_painted_video(path, 35 if codec == "libx265" else num_frames, codec, options, **settings)
        paths[name] = path
    return paths


__all__ = [
    "CORNERS",
    "marked_corner",
    "painted_frame_times",
    "paint_frame_index",
    "read_painted_index",
    "write_painted_test_set",
    "write_painted_video",
]
