"""Auto classes for HBI task heads that transformers has no Auto class for.

`AutoModelForVideoTextRetrieval` behaves like transformers' own Auto classes: `from_pretrained(folder_or_hub_id)` and
`from_config(config)` pick the registered class for the checkpoint's config.
"""

from collections import OrderedDict

from transformers.models.auto.auto_factory import _BaseAutoModelClass, _LazyAutoMapping
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES


class AutoModelForVideoTextRetrieval(_BaseAutoModelClass):
    """Text-video retrieval models (e.g. [`HBIForRetrieval`])."""

    _model_mapping = _LazyAutoMapping(CONFIG_MAPPING_NAMES, OrderedDict())


__all__ = ["AutoModelForVideoTextRetrieval"]
