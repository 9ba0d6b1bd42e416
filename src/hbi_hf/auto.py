"""Auto classes for HBI task heads that transformers has no Auto class for.

transformers 5.23 has no Auto class for video-text retrieval, open-ended video question answering (its
`AutoModelForVisualQuestionAnswering` is for images) or video captioning (`AutoModelForImageTextToText` expects a text
prompt with image placeholders), so these three are our own. Each behaves like transformers' own Auto classes: `from_pretrained(folder_or_hub_id)` and
`from_config(config)` pick the registered class for the checkpoint's config.
"""

from collections import OrderedDict

from transformers.models.auto.auto_factory import _BaseAutoModelClass, _LazyAutoMapping
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES


class AutoModelForVideoTextRetrieval(_BaseAutoModelClass):
    """Text-video retrieval models (e.g. [`HBIForRetrieval`])."""

    _model_mapping = _LazyAutoMapping(CONFIG_MAPPING_NAMES, OrderedDict())


class AutoModelForVideoQuestionAnswering(_BaseAutoModelClass):
    """Open-ended video question answering models, classifying over an answer vocabulary (e.g. [`HBIForVideoQA`])."""

    _model_mapping = _LazyAutoMapping(CONFIG_MAPPING_NAMES, OrderedDict())


class AutoModelForVideoCaptioning(_BaseAutoModelClass):
    """Video captioning models that generate with `generate(pixel_values=...)` (e.g. [`HBIForCaptioning`])."""

    _model_mapping = _LazyAutoMapping(CONFIG_MAPPING_NAMES, OrderedDict())


__all__ = ["AutoModelForVideoCaptioning", "AutoModelForVideoQuestionAnswering", "AutoModelForVideoTextRetrieval"]
