"""Processor for HBI: the CLIP tokenizer and the HBI video processor behind one call."""

from transformers.image_processing_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.utils import logging
from transformers.video_processing_utils import VideoProcessorMixin

logger = logging.get_logger(__name__)


class HBIProcessor(ProcessorMixin):
    r"""
    Constructs an HBI processor from a CLIP tokenizer and an [`HBIVideoProcessor`].

    Text is padded and truncated to `max_words` tokens (start and end tokens included, as in the paper's
    `max_words`); videos become `pixel_values` `(batch, frames, 3, height, width)` and `video_mask` `(batch, frames)`.

    Args:
        video_processor ([`HBIVideoProcessor`]): the video processor.
        tokenizer ([`CLIPTokenizer`]): the CLIP tokenizer.
        max_words (`int`, *optional*, defaults to 32): the text length after padding / truncation.

    Example:

    ```python
    >>> from hbi_hf import HBIProcessor, HBIVideoProcessor
    >>> from hbi_hf.data import build_clip_tokenizer

    >>> processor = HBIProcessor(HBIVideoProcessor(num_frames=12), build_clip_tokenizer(), max_words=32)
    >>> batch = processor(text=["a man is cooking"], videos=["video0.mp4"], return_tensors="pt")
    >>> sorted(batch.keys())
    ['attention_mask', 'input_ids', 'pixel_values', 'video_mask']
    ```
    """

    def __init__(self, video_processor=None, tokenizer=None, max_words: int = 32, **kwargs):
        if max_words < 2:
            raise ValueError(f"max_words must be >= 2 (start and end tokens); got {max_words}")
        self.max_words = max_words
        super().__init__(video_processor, tokenizer, **kwargs)

    def __call__(
        self,
        text: str | list[str] | None = None,
        videos=None,
        return_tensors: str | None = "pt",
        **kwargs,
    ) -> BatchFeature:
        """Tokenises `text` and/or processes `videos` (paths or decoded frames).

        Returns:
            `BatchFeature` with `input_ids` and `attention_mask` `(batch, max_words)` for text and `pixel_values`
            `(batch, frames, 3, H, W)` and `video_mask` `(batch, frames)` for videos.
        """
        if text is None and videos is None:
            raise ValueError("HBIProcessor needs `text`, `videos` or both")
        data = {}
        if text is not None:
            data.update(self.tokenize(text, return_tensors=return_tensors))
        if videos is not None:
            data.update(self.video_processor(videos, return_tensors=return_tensors, **kwargs))
        return BatchFeature(data=data, tensor_type=return_tensors)

    def tokenize(self, text: str | list[str], return_tensors: str | None = "pt") -> BatchFeature:
        """`input_ids` and `attention_mask` `(batch, max_words)`; the end token is kept when a text is truncated."""
        texts = [text] if isinstance(text, str) else list(text)
        for index, item in enumerate(texts):
            if not isinstance(item, str):
                raise TypeError(f"text[{index}] must be a string; got {type(item).__name__}")
        return self.tokenizer(
            texts, padding="max_length", truncation=True, max_length=self.max_words, return_tensors=return_tensors
        )

    def check_argument_for_proper_class(self, argument_name: str, argument):
        """Checks the video processor against `VideoProcessorMixin` directly.

        transformers looks the expected class up in its top-level namespace, which has no video processor classes
        when torchvision is not installed (the Pillow / torch-only set-up this package supports).
        """
        if argument_name == "video_processor":
            if not isinstance(argument, VideoProcessorMixin):
                raise TypeError(f"video_processor must be a video processor; got {type(argument).__name__}")
            return VideoProcessorMixin
        return super().check_argument_for_proper_class(argument_name, argument)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values", "video_mask"]


__all__ = ["HBIProcessor"]
