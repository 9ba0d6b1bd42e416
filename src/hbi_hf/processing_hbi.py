"""Processor for HBI: the CLIP tokenizer and the HBI video processor behind one call.

`save_pretrained` copies this file and `video_processing_hbi.py` (which need only transformers) beside the processor
files: `AutoProcessor.from_pretrained(folder)` then loads the HBI processor after `import hbi_hf`, or, without the
package, with `trust_remote_code=True`; it no longer falls back to a bare CLIP tokenizer.
"""

from transformers.image_processing_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin, TextKwargs
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

        Keywords are routed as in transformers' processors: text keywords (`padding`, `truncation`, `max_length`,
        ...: transformers' `TextKwargs`) go to the tokenizer, video keywords (`num_frames`, `fps`, `do_sample_frames`,
        ...) to the video processor. Text defaults: `padding="max_length"`, `truncation=True`,
        `max_length=max_words`.

        Returns:
            `BatchFeature` with `input_ids` and `attention_mask` `(batch, max_words)` for text (other lengths with
            other text keywords) and `pixel_values` `(batch, frames, 3, H, W)` and `video_mask` `(batch, frames)` for
            videos.

        Raises:
            `TypeError`: a keyword that is neither a text nor a video keyword, or a caption that is not a string.
            `ValueError`: text keywords without `text`, video keywords without `videos`, or a video keyword the video
            processor would ignore.
        """
        if text is None and videos is None:
            raise ValueError("HBIProcessor needs `text`, `videos` or both")
        text_names = set(TextKwargs.__annotations__) - {"return_tensors"}
        video_names = set(self.video_processor.valid_kwargs.__annotations__) - {"return_tensors"}
        text_kwargs = {name: value for name, value in kwargs.items() if name in text_names}
        video_kwargs = {name: value for name, value in kwargs.items() if name in video_names}
        unknown = sorted(set(kwargs) - text_names - video_names)
        if unknown:
            raise TypeError(
                f"HBIProcessor got unknown keyword(s) {unknown}; text keywords: {sorted(text_names)}; video keywords: "
                f"{sorted(video_names)}"
            )
        if text_kwargs and text is None:
            raise ValueError(f"text keywords {sorted(text_kwargs)} were given without text")
        if video_kwargs and videos is None:
            raise ValueError(f"video keywords {sorted(video_kwargs)} were given without videos")
        data = {}
        if text is not None:
            data.update(self.tokenize(text, return_tensors=return_tensors, **text_kwargs))
        if videos is not None:
            data.update(self.video_processor(videos, return_tensors=return_tensors, **video_kwargs))
        return BatchFeature(data=data, tensor_type=return_tensors)

    def tokenize(self, text: str | list[str], return_tensors: str | None = "pt", **text_kwargs) -> BatchFeature:
        """`input_ids` and `attention_mask` `(batch, max_words)`; the end token is kept when a text is truncated.
        `text_kwargs` (transformers' `TextKwargs`) override the defaults `padding="max_length"`, `truncation=True`,
        `max_length=max_words`."""
        texts = [text] if isinstance(text, str) else list(text)
        for index, item in enumerate(texts):
            if not isinstance(item, str):
                raise TypeError(f"text[{index}] must be a string; got {type(item).__name__}")
        text_kwargs = {"padding": "max_length", "truncation": True, "max_length": self.max_words, **text_kwargs}
        return self.tokenizer(texts, return_tensors=return_tensors, **text_kwargs)

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
