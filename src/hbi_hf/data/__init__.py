"""Data for HBI: the standard benchmarks' loaders, a user's own video folder, the embedded synthetic dataset, the
offline CLIP tokenizer, and collators with a bad-input policy."""

from .collators import (
    HBIBadInputError,
    HBIBadInputReportCallback,
    HBICaptioningCollator,
    HBICollator,
    HBIRetrievalCollator,
    HBIVideoCollator,
    HBIVideoQACollator,
)
from .loaders import (
    build_answer_vocabulary,
    load_activitynet_qa,
    load_activitynet_retrieval,
    load_didemo_retrieval,
    load_msrvtt_captioning,
    load_msrvtt_qa,
    load_msrvtt_retrieval,
    load_msvd_qa,
    load_msvd_retrieval,
    load_video_folder,
)
from .tokenizer import build_clip_tokenizer

_SYNTHETIC_NAMES = (
    "generate_synthetic_dataset",
    "load_synthetic_captioning",
    "load_synthetic_qa",
    "load_synthetic_retrieval",
)


def __getattr__(name: str):
    """The synthetic dataset's functions, imported on first use so `python -m hbi_hf.data.synthetic` runs cleanly."""
    if name in _SYNTHETIC_NAMES:
        from . import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "HBIBadInputError",
    "HBIBadInputReportCallback",
    "HBICaptioningCollator",
    "HBICollator",
    "HBIRetrievalCollator",
    "HBIVideoCollator",
    "HBIVideoQACollator",
    "build_answer_vocabulary",
    "build_clip_tokenizer",
    "generate_synthetic_dataset",
    "load_activitynet_qa",
    "load_activitynet_retrieval",
    "load_didemo_retrieval",
    "load_msrvtt_captioning",
    "load_msrvtt_qa",
    "load_msrvtt_retrieval",
    "load_msvd_qa",
    "load_msvd_retrieval",
    "load_synthetic_captioning",
    "load_synthetic_qa",
    "load_synthetic_retrieval",
    "load_video_folder",
]
