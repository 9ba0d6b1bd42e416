"""Video processor for HBI: decode, sample frames as the paper does, resize and centre-crop to CLIP's input size.

Frames are decoded with decord (PyAV where decord has no wheel). The default sampling follows the official code
(CLIP4Clip-style loaders): frames are taken at 1 frame per second, then, if more than `num_frames` remain, uniformly
down-sampled to `num_frames`. Videos with fewer frames are padded with zero frames, and `video_mask` marks the real
ones.
"""

import importlib.util
from os import PathLike
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling, SizeDict
from transformers.processing_utils import Unpack, VideosKwargs
from transformers.utils import TensorType, logging
from transformers.video_processing_utils import BaseVideoProcessor
from transformers.video_utils import VideoMetadata, is_valid_video, make_batched_metadata, make_batched_videos

logger = logging.get_logger(__name__)

FRAME_SAMPLING_MODES = ("fps", "uniform")
FILE_NOT_FOUND = "file not found"
ZERO_FRAMES = "the video has zero frames"
_TORCH_INTERPOLATION = {
    PILImageResampling.NEAREST: "nearest",
    PILImageResampling.BILINEAR: "bilinear",
    PILImageResampling.BICUBIC: "bicubic",
}


class HBIVideoDecodeError(ValueError):
    """A video file that cannot be used: missing, unreadable or corrupt, or without any frame.

    Args:
        path (`str`): the file.
        reason (`str`): what is wrong with it.
    """

    def __init__(self, path: str | PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def default_video_backend() -> str:
    """`"decord"` where its wheel is installed, else `"pyav"`."""
    return "decord" if importlib.util.find_spec("decord") is not None else "pyav"


def sample_frame_indices(
    total_num_frames: int,
    num_frames: int,
    video_fps: float | None = None,
    sampling_mode: str = "fps",
    sampling_fps: float = 1.0,
) -> np.ndarray:
    """Indices of the frames to keep, in temporal order.

    * `"fps"` (the paper's protocol): one frame every `video_fps / sampling_fps` frames (1 fps by default), then, if
      more than `num_frames` remain, `num_frames` of them spread uniformly (first and last included). Without a known
      `video_fps` the frames are taken as already at the sampling rate.
    * `"uniform"`: `num_frames` frames spread uniformly over the whole video (first and last included).

    A video with fewer frames than asked for gives all the frames it has (never a repeated frame).

    Args:
        total_num_frames (`int`): frames in the video.
        num_frames (`int`): the most frames to return.
        video_fps (`float`, *optional*): the video's frame rate.
        sampling_mode (`str`, *optional*, defaults to `"fps"`): `"fps"` or `"uniform"`.
        sampling_fps (`float`, *optional*, defaults to 1.0): the rate of the first stage of `"fps"` sampling.

    Returns:
        `np.ndarray` of shape `(min(num_frames, available),)` and dtype int64.
    """
    if sampling_mode not in FRAME_SAMPLING_MODES:
        raise ValueError(f"sampling_mode must be one of {FRAME_SAMPLING_MODES}; got {sampling_mode!r}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1; got {num_frames}")
    if total_num_frames < 1:
        return np.zeros((0,), dtype=np.int64)
    if sampling_mode == "fps" and video_fps:
        step = max(1, int(round(video_fps / sampling_fps)))
        candidates = np.arange(0, total_num_frames, step, dtype=np.int64)
    else:
        candidates = np.arange(total_num_frames, dtype=np.int64)
    if len(candidates) <= num_frames:
        return candidates
    positions = np.linspace(0, len(candidates) - 1, num=num_frames).round().astype(np.int64)
    return candidates[positions]


def _read_video_decord(path: str, sample_indices) -> tuple[np.ndarray, VideoMetadata]:
    import decord

    try:
        reader = decord.VideoReader(path, num_threads=1)
    except Exception as error:
        if "cannot find video stream" in str(error):
            raise HBIVideoDecodeError(path, ZERO_FRAMES + " (no video stream)") from error
        raise HBIVideoDecodeError(path, f"unreadable or corrupt video ({type(error).__name__})") from error
    total = len(reader)
    fps = float(reader.get_avg_fps()) or None
    metadata = VideoMetadata(total_num_frames=total, fps=fps, video_backend="decord")
    if total == 0:
        raise HBIVideoDecodeError(path, ZERO_FRAMES)
    indices = sample_indices(metadata)
    try:
        frames = reader.get_batch(list(indices)).asnumpy()
    except Exception as error:
        raise HBIVideoDecodeError(path, f"decoding failed ({type(error).__name__}: {error})") from error
    metadata.frames_indices = list(indices)
    metadata.height, metadata.width = frames.shape[1:3]
    return frames, metadata


def _read_video_pyav(path: str, sample_indices) -> tuple[np.ndarray, VideoMetadata]:
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise HBIVideoDecodeError(path, ZERO_FRAMES + " (no video stream)")
            stream = container.streams.video[0]
            fps = float(stream.average_rate) if stream.average_rate else None
            decoded = list(container.decode(stream))
    except HBIVideoDecodeError:
        raise
    except Exception as error:
        raise HBIVideoDecodeError(path, f"unreadable or corrupt video ({type(error).__name__})") from error
    if not decoded:
        raise HBIVideoDecodeError(path, ZERO_FRAMES)
    metadata = VideoMetadata(total_num_frames=len(decoded), fps=fps, video_backend="pyav")
    indices = sample_indices(metadata)
    frames = np.stack([decoded[index].to_ndarray(format="rgb24") for index in indices])
    metadata.frames_indices = list(indices)
    metadata.height, metadata.width = frames.shape[1:3]
    return frames, metadata


def read_video(path: str | PathLike, sample_indices, backend: str | None = None) -> tuple[np.ndarray, VideoMetadata]:
    """Decodes the frames of a video file that `sample_indices(metadata)` selects.

    Args:
        path (`str` or `PathLike`): the video file.
        sample_indices (`Callable[[VideoMetadata], np.ndarray]`): picks frame indices from the video's metadata.
        backend (`str`, *optional*): `"decord"` or `"pyav"`; defaults to decord where installed.

    Returns:
        `(frames, metadata)`: frames of shape `(frames, height, width, 3)` (uint8 RGB) and the video's metadata.

    Raises:
        `HBIVideoDecodeError`: the file is missing, unreadable, corrupt, or has zero frames.
    """
    path = str(path)
    if not Path(path).is_file():
        raise HBIVideoDecodeError(path, FILE_NOT_FOUND)
    if Path(path).stat().st_size == 0:
        raise HBIVideoDecodeError(path, ZERO_FRAMES + " (empty file)")
    backend = backend or default_video_backend()
    if backend == "decord":
        return _read_video_decord(path, sample_indices)
    if backend == "pyav":
        return _read_video_pyav(path, sample_indices)
    raise ValueError(f"video backend must be 'decord' or 'pyav'; got {backend!r}")


class HBIVideoProcessorKwargs(VideosKwargs, total=False):
    r"""
    sampling_mode (`str`, *optional*, defaults to `"fps"`):
        `"fps"`: 1 frame per second, then uniformly down to `num_frames` (the paper's protocol); `"uniform"`:
        `num_frames` frames spread over the whole video.
    sampling_fps (`float`, *optional*, defaults to 1.0):
        The rate of the first stage of `"fps"` sampling.
    video_backend (`str`, *optional*):
        `"decord"` or `"pyav"`; defaults to decord where installed.
    """

    sampling_mode: str | None
    sampling_fps: float | None
    video_backend: str | None


class HBIVideoProcessor(BaseVideoProcessor):
    r"""
    Constructs an HBI video processor. Takes video files (decoded with decord or PyAV) or decoded frames, samples
    `num_frames` frames, resizes the shortest edge to 224 (bicubic), centre-crops to 224x224 and normalises with CLIP's
    mean and standard deviation. Videos shorter than `num_frames` are padded with zero frames.

    Args:
        num_frames (`int`, *optional*, defaults to 12):
            The most frames per video (the paper: 12 for MSR-VTT and QA, 32 for DiDeMo, 64 for ActivityNet).
        sampling_mode (`str`, *optional*, defaults to `"fps"`):
            `"fps"` (1 fps then uniformly down to `num_frames`) or `"uniform"`.
        sampling_fps (`float`, *optional*, defaults to 1.0):
            The rate of the first stage of `"fps"` sampling.
        video_backend (`str`, *optional*):
            `"decord"` or `"pyav"`; defaults to decord where installed.
        size (`dict[str, int]`, *optional*, defaults to `{"shortest_edge": 224}`):
            The resize target.
        crop_size (`dict[str, int]`, *optional*, defaults to `{"height": 224, "width": 224}`):
            The centre-crop size.

    Returns (from `__call__`): a `BatchFeature` with `pixel_values` `(batch, num_frames, 3, height, width)` and
    `video_mask` `(batch, num_frames)` (1 for a real frame, 0 for padding).

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
        super().__init__(**kwargs)
        if self.sampling_mode not in FRAME_SAMPLING_MODES:
            raise ValueError(f"sampling_mode must be one of {FRAME_SAMPLING_MODES}; got {self.sampling_mode!r}")

    def sample_frames(
        self,
        metadata: VideoMetadata,
        num_frames: int | None = None,
        sampling_mode: str | None = None,
        sampling_fps: float | None = None,
        **kwargs,
    ) -> np.ndarray:
        """Frame indices for one video; see [`sample_frame_indices`]."""
        return sample_frame_indices(
            total_num_frames=metadata.total_num_frames,
            num_frames=num_frames or self.num_frames,
            video_fps=metadata.fps,
            sampling_mode=sampling_mode or self.sampling_mode,
            sampling_fps=sampling_fps or self.sampling_fps,
        )

    def _decode_and_sample_videos(
        self,
        videos,
        video_metadata,
        do_sample_frames: bool | None = None,
        sample_indices_fn=None,
    ) -> tuple[list[np.ndarray], list[VideoMetadata]]:
        """Decodes paths (decord / PyAV) and samples frames; decoded frames are sampled the same way."""
        if isinstance(videos, (str, PathLike)):
            videos = [videos]
        if isinstance(videos, (list, tuple)) and videos and all(isinstance(v, (str, PathLike)) for v in videos):
            if sample_indices_fn is None:
                sample_indices_fn = self._all_frame_indices
            decoded = [read_video(path, sample_indices_fn, backend=self.video_backend) for path in videos]
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
        """Resizes `(frames, 3, H, W)` so the shortest edge is `size.shortest_edge` (or to `size.height x width`)."""
        height, width = video.shape[-2:]
        if size.shortest_edge:
            scale = size.shortest_edge / min(height, width)
            new_size = (max(1, int(round(height * scale))), max(1, int(round(width * scale))))
        elif size.height and size.width:
            new_size = (size.height, size.width)
        else:
            raise ValueError(f"size must have 'shortest_edge' or 'height' and 'width'; got {size}")
        if new_size == (height, width):
            return video
        mode = _TORCH_INTERPOLATION.get(resample, "bicubic")
        antialias = mode != "nearest"
        resized = F.interpolate(video.float(), size=new_size, mode=mode, antialias=antialias, align_corners=None)
        return resized.clamp_(0, 255) if video.dtype == torch.uint8 else resized

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
        mean = torch.tensor(image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(image_std, dtype=torch.float32).view(1, 3, 1, 1)
        processed = []
        for video in videos:
            video = video[:num_frames]
            if do_resize:
                video = self.resize(video, size=size, resample=resample)
            if do_center_crop:
                video = self.center_crop(video, crop_size)
            video = video.float()
            if do_rescale:
                video = video * rescale_factor
            if do_normalize:
                video = (video - mean) / std
            processed.append(video)
        pixel_values, video_mask = pad_videos(processed, num_frames)
        return BatchFeature(data={"pixel_values": pixel_values, "video_mask": video_mask}, tensor_type=return_tensors)


def pad_videos(videos: list[torch.Tensor], num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stacks `(frames_i, 3, H, W)` videos into `(batch, num_frames, 3, H, W)`, zero-padding the short ones.

    Returns:
        `(pixel_values, video_mask)`, the mask `(batch, num_frames)` (long) is 1 for real frames.
    """
    shapes = {tuple(video.shape[1:]) for video in videos}
    if len(shapes) != 1:
        raise ValueError(f"all processed frames must have the same shape; got {sorted(shapes)}")
    pixel_values = videos[0].new_zeros((len(videos), num_frames, *shapes.pop()))
    video_mask = torch.zeros((len(videos), num_frames), dtype=torch.long)
    for index, video in enumerate(videos):
        pixel_values[index, : len(video)] = video
        video_mask[index, : len(video)] = 1
    return pixel_values, video_mask


__all__ = ["HBIVideoDecodeError", "HBIVideoProcessor", "read_video", "sample_frame_indices"]
