"""HBI (Hierarchical Banzhaf Interaction) for video-language tasks, native to Hugging Face transformers.

Importing this package registers every HBI class with the transformers Auto classes, so `AutoConfig`, `AutoModel`
and friends load HBI checkpoints without `trust_remote_code`, and registers the `pipeline()` tasks
`"zero-shot-video-classification"` and `"video-text-retrieval"` ([`hbi_hf.pipelines`]).
"""

from transformers import AutoConfig, AutoModel, AutoProcessor
from transformers.models.auto.video_processing_auto import AutoVideoProcessor

from .auto import AutoModelForVideoCaptioning, AutoModelForVideoQuestionAnswering, AutoModelForVideoTextRetrieval
from .banzhaf import exact_banzhaf_interaction, sampled_banzhaf_interaction
from .configuration_hbi import HBIBanzhafEstimatorConfig, HBIConfig
from .modeling_hbi import (
    HBIAlignmentLoss,
    HBIBanzhafEstimator,
    HBIForCaptioning,
    HBIForRetrieval,
    HBIForVideoQA,
    HBIModel,
    HBIPreTrainedModel,
    HBITextFeatures,
    HBIVideoFeatures,
)
from .pipelines import HBIVideoTextRetrievalPipeline, HBIZeroShotVideoClassificationPipeline, register_pipelines
from .processing_hbi import HBIProcessor
from .video_processing_hbi import HBIVideoProcessor

AutoConfig.register(HBIConfig.model_type, HBIConfig, exist_ok=True)
AutoConfig.register(HBIBanzhafEstimatorConfig.model_type, HBIBanzhafEstimatorConfig, exist_ok=True)
AutoModel.register(HBIConfig, HBIModel, exist_ok=True)
AutoModel.register(HBIBanzhafEstimatorConfig, HBIBanzhafEstimator, exist_ok=True)
AutoModelForVideoTextRetrieval.register(HBIConfig, HBIForRetrieval, exist_ok=True)
AutoModelForVideoQuestionAnswering.register(HBIConfig, HBIForVideoQA, exist_ok=True)
AutoModelForVideoCaptioning.register(HBIConfig, HBIForCaptioning, exist_ok=True)
AutoVideoProcessor.register(HBIConfig, HBIVideoProcessor, exist_ok=True)
AutoProcessor.register(HBIConfig, HBIProcessor, exist_ok=True)
# a saved processor carries its code and an `auto_map`: without `import hbi_hf`, AutoProcessor asks for
# `trust_remote_code=True` instead of silently returning a bare CLIP tokenizer
HBIProcessor.register_for_auto_class("AutoProcessor")
HBIVideoProcessor.register_for_auto_class("AutoVideoProcessor")
# `pipeline("zero-shot-video-classification" | "video-text-retrieval", model=FOLDER)`
register_pipelines()
# the same for a saved model: its config carries `configuration_hbi.py` and `auto_map["AutoConfig"]`, the model adds
# `modeling_hbi.py` and `auto_map["AutoModel"]` (`HBIPreTrainedModel.save_pretrained`); without `import hbi_hf`,
# `AutoModel.from_pretrained(folder, trust_remote_code=True)` loads it, and without `trust_remote_code` transformers
# asks for it instead of suggesting a transformers upgrade
HBIConfig.register_for_auto_class("AutoConfig")
HBIBanzhafEstimatorConfig.register_for_auto_class("AutoConfig")

__version__ = "0.1.0"

__all__ = [
    "exact_banzhaf_interaction",
    "sampled_banzhaf_interaction",
    "AutoModelForVideoCaptioning",
    "AutoModelForVideoQuestionAnswering",
    "AutoModelForVideoTextRetrieval",
    "HBIForCaptioning",
    "HBIForVideoQA",
    "HBIAlignmentLoss",
    "HBIBanzhafEstimator",
    "HBIBanzhafEstimatorConfig",
    "HBIConfig",
    "HBIForRetrieval",
    "HBIModel",
    "HBIPreTrainedModel",
    "HBIProcessor",
    "HBITextFeatures",
    "HBIVideoFeatures",
    "HBIVideoProcessor",
    "HBIVideoTextRetrievalPipeline",
    "HBIZeroShotVideoClassificationPipeline",
]
