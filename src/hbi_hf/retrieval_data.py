"""The retrieval data a training run needs: datasets by name, the processor and the collator.

Everything this package's training and demo take from `hbi_hf.data` (the data contract) is imported in
[`_data_api`] and nowhere else.
"""

from pathlib import Path
from types import SimpleNamespace

from datasets import DatasetDict

from .configuration_hbi import HBIConfig

RETRIEVAL_LOADERS = {
    "msrvtt": "load_msrvtt_retrieval",
    "msvd": "load_msvd_retrieval",
    "activitynet": "load_activitynet_retrieval",
    "didemo": "load_didemo_retrieval",
}
"""Dataset name -> loader in `hbi_hf.data` called as `loader(annotations_dir, videos_dir)`; `synthetic` is generated
and `folder` is a user's own videos plus a captions file (`load_video_folder`)."""


def _data_api() -> SimpleNamespace:
    """The data package's public names used here (imported on first use so the model works without it)."""
    from . import data
    from .data.synthetic import generate_synthetic_dataset, load_synthetic_retrieval
    from .processing_hbi import HBIProcessor
    from .video_processing_hbi import HBIVideoProcessor

    return SimpleNamespace(
        module=data,
        build_clip_tokenizer=data.build_clip_tokenizer,
        HBIRetrievalCollator=data.HBIRetrievalCollator,
        HBIProcessor=HBIProcessor,
        HBIVideoProcessor=HBIVideoProcessor,
        generate_synthetic_dataset=generate_synthetic_dataset,
        load_synthetic_retrieval=load_synthetic_retrieval,
    )


def load_retrieval_dataset(data_args) -> DatasetDict:
    """Retrieval rows `{"video_id", "video_path", "caption"}` per split for `data_args.dataset_name` (see
    [`HBIDataArguments`]); the synthetic dataset is generated (and cached) on first use."""
    name = data_args.dataset_name
    if name == "synthetic":
        return synthetic_retrieval_splits(data_args.data_root)
    if name != "folder" and name not in RETRIEVAL_LOADERS:
        raise ValueError(
            f"dataset_name must be 'synthetic', 'folder' or one of {sorted(RETRIEVAL_LOADERS)}; got {name!r}"
        )
    if data_args.data_root is None:
        raise ValueError(f"dataset_name={name!r} needs --data_root (the folder of its annotations / captions file)")
    data = _data_api().module
    if name == "folder":
        if data_args.video_root is None:
            raise ValueError(
                "dataset_name='folder' needs --video_root (the videos) and --data_root (the captions file)"
            )
        return data.load_video_folder(data_args.video_root, data_args.data_root)
    return getattr(data, RETRIEVAL_LOADERS[name])(data_args.data_root, data_args.video_root or data_args.data_root)


def build_retrieval_processor(config: HBIConfig, model_name_or_path: str | None = None):
    """The processor saved with `model_name_or_path`, or a new one matching `config` (frames, words, image size)
    with the offline CLIP tokenizer."""
    api = _data_api()
    if model_name_or_path is not None and (Path(model_name_or_path) / "processor_config.json").is_file():
        return api.HBIProcessor.from_pretrained(model_name_or_path)
    image_size = config.vision_config.image_size
    video_processor = api.HBIVideoProcessor(
        num_frames=config.num_frames,
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    return api.HBIProcessor(video_processor, api.build_clip_tokenizer(), max_words=config.max_words)


def build_retrieval_collator(processor, strict: bool = False):
    """The data package's retrieval collator (rows -> input_ids, attention_mask, pixel_values, video_mask)."""
    return _data_api().HBIRetrievalCollator(processor, strict=strict)


def synthetic_retrieval_splits(root: str | None = None, seed: int = 0) -> DatasetDict:
    """Generate (or reuse) the embedded synthetic dataset and load its retrieval splits."""
    api = _data_api()
    return api.load_synthetic_retrieval(api.generate_synthetic_dataset(root=root, seed=seed))


__all__ = [
    "RETRIEVAL_LOADERS",
    "build_retrieval_collator",
    "build_retrieval_processor",
    "load_retrieval_dataset",
    "synthetic_retrieval_splits",
]
