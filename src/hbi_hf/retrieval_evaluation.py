"""Retrieval evaluation of an HBI model on a gallery of captions and videos.

Each modality is encoded once (every unique video once, every caption once), the features are gathered from every
process, and the full `(n_text, n_video)` matrix is scored with the model's chunked scorer. Under several processes
(`accelerate launch`, `torchrun`), encoding is sharded into contiguous slices and every process then scores the same
gathered features with the same chunk size, so the figures equal those of a single process.

Bad input follows the data package's policy ([`HBIBadInputPolicy`]): a null, empty or whitespace-only caption and a
missing, unreadable or frameless video raise [`HBIBadInputError`] naming the row or file in strict mode; in lenient
mode (the default) they are left out and counted. A caption whose video is left out is left out too, and so is a
video left without any caption; the metrics then say how many captions and videos were ranked (`gallery_captions`,
`gallery_videos`) and left out (`left_out_captions`, `left_out_videos`, `bad_input_<reason>`), since figures on a
smaller gallery are not comparable with figures on the whole test set.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from datasets import Dataset
from transformers.utils import logging

from .metrics import compute as compute_metric
from .modeling_hbi import DEFAULT_SCORING_CHUNK_SIZE, HBIModalityFeatures
from .retrieval_data import _data_api
from .retrieval_metrics import check_finite_scores
from .video_processing_hbi import HBIVideoDecodeError

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

    def subset(self, text_indices: Sequence[int]) -> tuple["HBIRetrievalGallery", list[int]]:
        """The gallery of the captions `text_indices` (in that order) and of their videos (in gallery order), and
        the index in this gallery of each of those videos."""
        video_indices = sorted({int(self.text_to_video[index]) for index in text_indices})
        position = {video: rank for rank, video in enumerate(video_indices)}
        subset = HBIRetrievalGallery(
            captions=[self.captions[index] for index in text_indices],
            video_ids=[self.video_ids[index] for index in video_indices],
            video_paths=[self.video_paths[index] for index in video_indices],
            text_to_video=torch.tensor(
                [position[int(self.text_to_video[index])] for index in text_indices], dtype=torch.long
            ),
        )
        return subset, video_indices


def encode_sharded(
    items: Sequence,
    encode_batch: Callable[[list], HBIModalityFeatures | None],
    batch_size: int,
    state: PartialState | None = None,
) -> HBIModalityFeatures | None:
    """
    Encode `items` in batches of `batch_size`, each process a contiguous slice, and return the features of all items
    in their original order on every process (on the CPU). `encode_batch` may return None for a batch with nothing
    to encode (e.g. every video unreadable); None is returned when no batch gave features.
    """
    state = state or PartialState()
    with state.split_between_processes(list(items)) as shard:
        local = [encode_batch(list(shard[i : i + batch_size])) for i in range(0, len(shard), batch_size)]
    local = [features.map(torch.Tensor.cpu) for features in local if features is not None]
    local_features = [type(local[0]).concatenate(local)] if local else []
    gathered = gather_object(local_features) if state.num_processes > 1 else local_features
    return type(gathered[0]).concatenate(gathered) if gathered else None


@dataclass
class HBIUnusableItem:
    """A gallery item left out of evaluation: `index` into the gallery's captions or videos, `reason` (one of the
    data package's `SKIP_REASONS`) and `detail`."""

    index: int
    reason: str
    detail: str


@dataclass
class HBIEncodedGallery:
    """
    What [`encode_gallery`] encoded: the part of a gallery that can be ranked, its features, and what was left out.

    Args:
        gallery ([`HBIRetrievalGallery`]): the usable captions (a usable text, of a usable video) and the videos
            that have at least one of them.
        text_features ([`HBIModalityFeatures`]): one entry per caption of `gallery`.
        video_features ([`HBIModalityFeatures`]): one entry per video of `gallery`.
        unusable_captions (`list[HBIUnusableItem]`): indices into the full gallery's captions.
        unusable_videos (`list[HBIUnusableItem]`): indices into the full gallery's videos (the same list on every
            process, whichever process decoded them).
        caption_rows (`list[int]`): the index into the full gallery's captions (its dataset row) of every caption of
            `gallery`.
    """

    gallery: HBIRetrievalGallery
    text_features: HBIModalityFeatures | None
    video_features: HBIModalityFeatures | None
    unusable_captions: list[HBIUnusableItem]
    unusable_videos: list[HBIUnusableItem]
    caption_rows: list[int]


def unusable_captions(gallery: HBIRetrievalGallery) -> list[HBIUnusableItem]:
    """The captions that cannot be scored: null, not a string, empty or only whitespace."""
    text_problem = _data_api().text_problem
    problems = [(index, text_problem(caption)) for index, caption in enumerate(gallery.captions)]
    return [HBIUnusableItem(index, *problem) for index, problem in problems if problem is not None]


@torch.inference_mode()
def encode_gallery(
    model, processor, gallery: HBIRetrievalGallery, batch_size: int = 32, state: PartialState | None = None
) -> HBIEncodedGallery:
    """
    Features of the usable part of a gallery, each item encoded once: every video that decodes, then every usable
    caption of those videos (a caption that is null, not a string or blank, or whose video does not decode, is left
    out, and so is a video left without captions).

    Args:
        model: an [`HBIModel`] or a head with `get_text_features` / `get_video_features` (e.g. [`HBIForRetrieval`]).
        processor: callable as `processor(text=[...])` and `processor(videos=[...])` (e.g. [`HBIProcessor`]); a
            video it cannot decode raises [`HBIVideoDecodeError`].
    """
    decode_error_reason = _data_api().decode_error_reason
    device = next(model.parameters()).device
    state = state or PartialState()
    failures: list[HBIUnusableItem] = []

    def encode_texts(captions: list[str]):
        batch = processor(text=captions, return_tensors="pt")
        return model.get_text_features(batch["input_ids"].to(device), batch["attention_mask"].to(device))

    def encode_videos(items: list[tuple[int, str]]):
        decoded = []
        for index, path in items:
            try:
                decoded.append(processor(videos=[path], return_tensors="pt"))
            except HBIVideoDecodeError as error:
                failures.append(HBIUnusableItem(index, decode_error_reason(error), error.reason))
        if not decoded:
            return None
        pixel_values = torch.cat([batch["pixel_values"] for batch in decoded])
        video_mask = torch.cat([batch["video_mask"] for batch in decoded])
        return model.get_video_features(pixel_values.to(device), video_mask.to(device))

    video_features = encode_sharded(list(enumerate(gallery.video_paths)), encode_videos, batch_size, state)
    if state.num_processes > 1:
        failures = gather_object(failures)
    unusable_videos = sorted(failures, key=lambda item: item.index)
    bad_captions = unusable_captions(gallery)
    bad_video_indices = {item.index for item in unusable_videos}
    bad_text_indices = {item.index for item in bad_captions}
    caption_rows = [
        index
        for index in range(len(gallery.captions))
        if index not in bad_text_indices and int(gallery.text_to_video[index]) not in bad_video_indices
    ]
    usable, video_indices = gallery.subset(caption_rows)
    text_features = encode_sharded(usable.captions, encode_texts, batch_size, state) if usable.captions else None
    if usable.captions:
        decoded = [index for index in range(len(gallery.video_ids)) if index not in bad_video_indices]
        position = {video: rank for rank, video in enumerate(decoded)}
        video_features = video_features[torch.tensor([position[video] for video in video_indices], dtype=torch.long)]
    else:
        video_features = None
    return HBIEncodedGallery(usable, text_features, video_features, bad_captions, unusable_videos, caption_rows)


@torch.inference_mode()
def score_gallery(model, text_features, video_features, chunk_size: int = DEFAULT_SCORING_CHUNK_SIZE) -> torch.Tensor:
    """The fused retrieval score `(n_text, n_video)`, computed on the model's device in chunks, returned on the CPU."""
    device = next(model.parameters()).device
    text_features = text_features.map(lambda tensor: tensor.to(device))
    video_features = video_features.map(lambda tensor: tensor.to(device))
    return model.score(text_features, video_features, chunk_size=chunk_size).float().cpu()


def _non_finite_embeddings(encoded: HBIEncodedGallery) -> str:
    """How many caption and video global embeddings hold NaN or infinity, for the error on non-finite scores."""
    counts = [
        f"{int((~torch.isfinite(features.global_embeddings)).flatten(1).any(1).sum())} of {len(features)} {name}"
        for name, features in (("caption", encoded.text_features), ("video", encoded.video_features))
        if features.global_embeddings is not None
    ]
    return f"non-finite embeddings: {' and '.join(counts)}"


def check_frame_budget(model, processor) -> None:
    """Refuse, before any video is decoded, a processor that samples more frames than the model's frame position
    table holds: otherwise the first long enough video would stop the evaluation midway.

    Raises:
        `ValueError`: naming both numbers.
    """
    num_frames = getattr(getattr(processor, "video_processor", None), "num_frames", None)
    table = getattr(model.config, "temporal_max_position_embeddings", None)
    if num_frames is not None and table is not None and num_frames > table:
        raise ValueError(
            f"the processor samples up to num_frames={num_frames} frames per video, more than the model's "
            f"temporal_max_position_embeddings={table} (the rows of its frame position table): save a processor "
            f"with num_frames <= {table} with the model"
        )


def evaluate_retrieval(
    model,
    dataset: Dataset,
    processor,
    batch_size: int = 32,
    chunk_size: int = DEFAULT_SCORING_CHUNK_SIZE,
    dual_softmax: bool = False,
    state: PartialState | None = None,
    strict: bool = False,
) -> dict[str, float]:
    """
    Text-to-video and video-to-text retrieval metrics of `model` on retrieval rows (see
    [`~retrieval_metrics.compute_retrieval_metrics`]; ties count pessimistically), and what was ranked: the metrics
    also hold `gallery_captions` and `gallery_videos` (the matrix ranked), `left_out_captions` and
    `left_out_videos`, and `bad_input_<reason>` for each reason an item was left out. The model is put in eval mode
    for the evaluation and its previous mode restored.

    Args:
        model: an [`HBIForRetrieval`] / [`HBIModel`] (not wrapped in DDP).
        dataset (`datasets.Dataset`): rows `{"video_id", "video_path", "caption"}`.
        processor: see [`encode_gallery`].
        batch_size (`int`): items per encoding batch per process.
        chunk_size (`int`): texts x videos per scoring block (bounds the scoring memory).
        dual_softmax (`bool`): also report dual-softmax re-ranked figures under `dsl_*`.
        strict (`bool`, *optional*, defaults to `False`): raise on the first bad caption or video instead of leaving
            it out (lenient: left out, counted and logged).

    Raises:
        `ValueError`: the processor samples more frames than the model's frame position table holds (before any
            video is decoded; see [`check_frame_budget`]).
        [`HBIBadInputError`]: in strict mode, a bad caption (naming its row, video and field) or video (naming the
            file); in either mode, when nothing usable is left to rank.
        `ValueError`: the model gave NaN or infinite scores (naming how many, the test rows of their captions and
            their video ids, and whether the caption or video embeddings themselves are non-finite); such scores
            have no ranking, so no figures are given.
    """
    api = _data_api()
    check_frame_budget(model, processor)
    gallery = HBIRetrievalGallery.from_dataset(dataset)
    state = state or PartialState()
    policy = api.HBIBadInputPolicy(strict, name="retrieval evaluation", log=state.is_main_process)
    for item in unusable_captions(gallery):
        video = gallery.video_ids[int(gallery.text_to_video[item.index])]
        policy.reject(f"test row {item.index} (video {video})", item.reason, item.detail)
    was_training = model.training
    model.eval()
    try:
        encoded = encode_gallery(model, processor, gallery, batch_size, state)
        for item in encoded.unusable_videos:
            policy.reject(gallery.video_paths[item.index], item.reason, item.detail)
        ranked = encoded.gallery
        if not ranked.captions:
            raise api.HBIBadInputError(
                f"nothing to evaluate: none of the {len(gallery.captions)} test captions is usable, with a usable video "
                f"({', '.join(f'{reason}: {n}' for reason, n in policy.totals.items() if n)})"
            )
        scores = score_gallery(model, encoded.text_features, encoded.video_features, chunk_size)
    finally:
        model.train(was_training)
    check_finite_scores(
        scores,
        text_names=encoded.caption_rows,
        video_names=ranked.video_ids,
        what=f"the model's retrieval scores ({_non_finite_embeddings(encoded)})",
        text_label="captions, at test rows",
        video_label="videos",
    )
    metrics = compute_metric(
        "retrieval", predictions=scores, references=ranked.text_to_video, dual_softmax=dual_softmax
    )
    extent = {
        "gallery_captions": len(ranked.captions),
        "gallery_videos": len(ranked.video_ids),
        "left_out_captions": len(gallery.captions) - len(ranked.captions),
        "left_out_videos": len(gallery.video_ids) - len(ranked.video_ids),
    }
    logger.info("Scored %d captions against %d videos", len(ranked.captions), len(ranked.video_ids))
    if state.is_main_process and (extent["left_out_captions"] or extent["left_out_videos"]):
        reasons = ", ".join(f"{reason}: {n}" for reason, n in policy.totals.items() if n)
        logger.warning(
            f"retrieval evaluation left out {extent['left_out_captions']} of {len(gallery.captions)} captions and "
            f"{extent['left_out_videos']} of {len(gallery.video_ids)} videos ({reasons}): "
            f"the figures rank {len(ranked.captions)} captions against a gallery of {len(ranked.video_ids)} videos, "
            "not the whole test set, so they are not directly comparable with figures on all of it"
        )
    return {**metrics, **extent, **api.bad_input_metrics(policy.totals)}


__all__ = [
    "HBIEncodedGallery",
    "HBIRetrievalGallery",
    "HBIUnusableItem",
    "check_frame_budget",
    "encode_gallery",
    "encode_sharded",
    "evaluate_retrieval",
    "score_gallery",
    "unusable_captions",
]
