"""Retrieval evaluation of an HBI model on a gallery of captions and videos.

Each modality is encoded once (every unique video once, every caption once), the features are gathered from every
process, and the full `(n_text, n_video)` matrix is scored with the model's chunked scorer. Under several processes
(`accelerate launch`), encoding is sharded into contiguous slices and every process then scores the same gathered
features with the same chunk size, so the figures equal those of a single process.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from datasets import Dataset
from transformers.utils import logging

from .modeling_hbi import DEFAULT_SCORING_CHUNK_SIZE, HBIModalityFeatures
from .retrieval_metrics import compute_retrieval_metrics

logger = logging.get_logger(__name__)


@dataclass
class HBIRetrievalGallery:
    r"""
    A retrieval test set with each video listed once.

    Args:
        captions (`list[str]`): every caption, in dataset order.
        video_ids (`list[str]`): every unique video, in order of first appearance.
        video_paths (`list[str]`): the file of each unique video.
        text_to_video (`torch.LongTensor` of shape `(n_text,)`): index into `video_ids` of each caption's video.
    """

    captions: list[str]
    video_ids: list[str]
    video_paths: list[str]
    text_to_video: torch.LongTensor

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> "HBIRetrievalGallery":
        """Build from retrieval rows `{"video_id", "video_path", "caption"}` (one row per caption)."""
        missing = {"video_id", "video_path", "caption"} - set(dataset.column_names)
        if missing:
            raise ValueError(f"retrieval dataset lacks the column(s) {sorted(missing)}; has {dataset.column_names}")
        video_index: dict[str, int] = {}
        video_paths: list[str] = []
        text_to_video = []
        for row, (video_id, video_path) in enumerate(zip(dataset["video_id"], dataset["video_path"], strict=True)):
            if video_id not in video_index:
                video_index[video_id] = len(video_paths)
                video_paths.append(video_path)
            elif video_paths[video_index[video_id]] != video_path:
                raise ValueError(
                    f"row {row}: video_id {video_id!r} has two paths, {video_paths[video_index[video_id]]!r} and "
                    f"{video_path!r}"
                )
            text_to_video.append(video_index[video_id])
        return cls(
            captions=list(dataset["caption"]),
            video_ids=list(video_index),
            video_paths=video_paths,
            text_to_video=torch.tensor(text_to_video, dtype=torch.long),
        )


def encode_sharded(
    items: Sequence,
    encode_batch: Callable[[list], HBIModalityFeatures],
    batch_size: int,
    state: PartialState | None = None,
) -> HBIModalityFeatures:
    """
    Encode `items` in batches of `batch_size`, each process a contiguous slice, and return the features of all items
    in their original order on every process (on the CPU).
    """
    state = state or PartialState()
    with state.split_between_processes(list(items)) as shard:
        local = [
            encode_batch(list(shard[i : i + batch_size])).map(torch.Tensor.cpu)
            for i in range(0, len(shard), batch_size)
        ]
    local_features = [type(local[0]).concatenate(local)] if local else []
    gathered = gather_object(local_features) if state.num_processes > 1 else local_features
    return type(gathered[0]).concatenate(gathered)


@torch.inference_mode()
def encode_gallery(
    model, processor, gallery: HBIRetrievalGallery, batch_size: int = 32, state: PartialState | None = None
) -> tuple[HBIModalityFeatures, HBIModalityFeatures]:
    """
    Text and video features of a gallery, each item encoded once.

    Args:
        model: an [`HBIModel`] or a head with `get_text_features` / `get_video_features` (e.g. [`HBIForRetrieval`]).
        processor: callable as `processor(text=[...])` and `processor(videos=[...])` (e.g. [`HBIProcessor`]).
    """
    device = next(model.parameters()).device

    def encode_texts(captions: list[str]):
        batch = processor(text=captions, return_tensors="pt")
        return model.get_text_features(batch["input_ids"].to(device), batch["attention_mask"].to(device))

    def encode_videos(paths: list[str]):
        batch = processor(videos=paths, return_tensors="pt")
        return model.get_video_features(batch["pixel_values"].to(device), batch["video_mask"].to(device))

    text_features = encode_sharded(gallery.captions, encode_texts, batch_size, state)
    video_features = encode_sharded(gallery.video_paths, encode_videos, batch_size, state)
    return text_features, video_features


@torch.inference_mode()
def score_gallery(model, text_features, video_features, chunk_size: int = DEFAULT_SCORING_CHUNK_SIZE) -> torch.Tensor:
    """The fused retrieval score `(n_text, n_video)`, computed on the model's device in chunks, returned on the CPU."""
    device = next(model.parameters()).device
    text_features = text_features.map(lambda tensor: tensor.to(device))
    video_features = video_features.map(lambda tensor: tensor.to(device))
    return model.score(text_features, video_features, chunk_size=chunk_size).float().cpu()


def evaluate_retrieval(
    model,
    dataset: Dataset,
    processor,
    batch_size: int = 32,
    chunk_size: int = DEFAULT_SCORING_CHUNK_SIZE,
    dual_softmax: bool = False,
    state: PartialState | None = None,
) -> dict[str, float]:
    """
    Text-to-video and video-to-text retrieval metrics of `model` on retrieval rows (see
    [`~retrieval_metrics.compute_retrieval_metrics`]; ties count pessimistically). The model is put in eval mode
    for the evaluation and its previous mode restored.

    Args:
        model: an [`HBIForRetrieval`] / [`HBIModel`] (not wrapped in DDP).
        dataset (`datasets.Dataset`): rows `{"video_id", "video_path", "caption"}`.
        processor: see [`encode_gallery`].
        batch_size (`int`): items per encoding batch per process.
        chunk_size (`int`): texts x videos per scoring block (bounds the scoring memory).
        dual_softmax (`bool`): also report dual-softmax re-ranked figures under `dsl_*`.
    """
    gallery = HBIRetrievalGallery.from_dataset(dataset)
    was_training = model.training
    model.eval()
    try:
        text_features, video_features = encode_gallery(model, processor, gallery, batch_size, state)
        scores = score_gallery(model, text_features, video_features, chunk_size)
    finally:
        model.train(was_training)
    logger.info("Scored %d captions against %d videos", len(gallery.captions), len(gallery.video_ids))
    return compute_retrieval_metrics(scores, gallery.text_to_video, dual_softmax=dual_softmax)


__all__ = ["HBIRetrievalGallery", "encode_gallery", "encode_sharded", "evaluate_retrieval", "score_gallery"]
