"""Collators that turn dataset rows (string paths, captions) into model-ready batches, with a bad-input policy.

Policy: in strict mode a bad sample raises [`HBIBadInputError`] naming the file or field and the reason. In lenient
mode (the default for training) the sample is skipped, logged as it happens, and counted; `report()` (or
[`HBIBadInputReportCallback`] at the end of every epoch and evaluation) logs the totals. Counts live in shared memory,
so skips in dataloader worker processes are counted too. A caption longer than `max_words` is truncated (and counted),
and a QA answer outside the vocabulary is kept with label -100 (ignored by the loss, always wrong in accuracy) and
counted: nothing is dropped silently.
"""

import multiprocessing
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.utils import logging

from ..video_processing_hbi import FILE_NOT_FOUND, ZERO_FRAMES, HBIVideoDecodeError

logger = logging.get_logger(__name__)

SKIP_REASONS = ("missing file", "unreadable video", "zero frames", "empty caption", "non-text caption")
KEPT_REASONS = ("caption truncated", "answer outside vocabulary")
IGNORE_INDEX = -100


class HBIBadInputError(ValueError):
    """A sample that cannot be used, raised in strict mode; the message names the file or field and the reason."""


def _decode_error_reason(error: HBIVideoDecodeError) -> str:
    if error.reason == FILE_NOT_FOUND:
        return "missing file"
    if error.reason.startswith(ZERO_FRAMES):
        return "zero frames"
    return "unreadable video"


class HBICollator:
    """Base collator: text and video of each row through an [`HBIProcessor`], with skip / raise and counting.

    Subclasses add their own fields by overriding `check_row` (return a skip reason or None) and `extra_fields`.

    Args:
        processor ([`HBIProcessor`]): tokenizer + video processor.
        strict (`bool`, *optional*, defaults to `False`): raise on the first bad sample instead of skipping it.
        text_column (`str`, *optional*, defaults to `"caption"`): the row field holding the text; `None` for a
            video-only batch (no text checks, no `input_ids` / `attention_mask`).
        return_ids (`bool`, *optional*, defaults to `False`): also return `video_id` (a list of str), e.g. to group
            captions of the same video in evaluation; leave off when the batch goes straight into a model.
    """

    def __init__(self, processor, strict: bool = False, text_column: str | None = "caption", return_ids: bool = False):
        self.processor = processor
        self.strict = strict
        self.text_column = text_column
        self.return_ids = return_ids
        self._reasons = SKIP_REASONS + KEPT_REASONS
        self._counts = multiprocessing.Array("q", len(self._reasons))

    @property
    def skipped(self) -> dict[str, int]:
        """Samples skipped so far, by reason (including those skipped in dataloader workers)."""
        return {reason: self._counts[i] for i, reason in enumerate(self._reasons) if reason in SKIP_REASONS}

    @property
    def kept_with_note(self) -> dict[str, int]:
        """Samples kept but altered or unscorable so far (truncated captions, answers outside the vocabulary)."""
        return {reason: self._counts[i] for i, reason in enumerate(self._reasons) if reason in KEPT_REASONS}

    def count(self, reason: str) -> None:
        with self._counts.get_lock():
            self._counts[self._reasons.index(reason)] += 1

    def report(self, reset: bool = True) -> dict[str, int]:
        """Logs and returns the counts of skipped and noted samples since the last report."""
        counts = {**self.skipped, **self.kept_with_note}
        if any(counts.values()):
            summary = ", ".join(f"{reason}: {n}" for reason, n in counts.items() if n)
            logger.warning(f"{type(self).__name__}: {summary}")
        if reset:
            with self._counts.get_lock():
                for index in range(len(self._reasons)):
                    self._counts[index] = 0
        return counts

    def _reject(self, row: dict[str, Any], reason: str, detail: str) -> None:
        where = row.get("video_path") or row.get("video_id") or "<row>"
        message = f"{where}: {reason} ({detail})"
        if self.strict:
            raise HBIBadInputError(message)
        self.count(reason)
        logger.warning(f"skipping sample {message}")

    def check_row(self, row: dict[str, Any]) -> tuple[str, str] | None:
        """`(reason, detail)` when the row's text cannot be used, else None."""
        if self.text_column is None:
            return None
        text = row.get(self.text_column)
        if not isinstance(text, str):
            return "non-text caption", f"{self.text_column} is {type(text).__name__}, expected str"
        if not text.strip():
            return "empty caption", f"{self.text_column} is empty"
        return None

    def extra_fields(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Fields a subclass adds to the batch (e.g. `labels`); computed on the kept rows only."""
        return {}

    def _count_truncations(self, texts: list[str]) -> None:
        lengths = self.processor.tokenizer(texts, add_special_tokens=True)["input_ids"]
        for length in map(len, lengths):
            if length > self.processor.max_words:
                self.count("caption truncated")

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        kept_rows, videos = [], []
        for row in rows:
            problem = self.check_row(row)
            if problem is not None:
                self._reject(row, *problem)
                continue
            try:
                video = self.processor.video_processor(row["video_path"], return_tensors="pt")
            except HBIVideoDecodeError as error:
                self._reject(row, _decode_error_reason(error), error.reason)
                continue
            kept_rows.append(row)
            videos.append(video)
        if not kept_rows:
            raise HBIBadInputError(
                f"every sample of a batch of {len(rows)} was unusable (counts so far: {self.skipped}); "
                "check the dataset's video files and captions"
            )
        batch = {}
        if self.text_column is not None:
            texts = [row[self.text_column] for row in kept_rows]
            self._count_truncations(texts)
            batch.update(self.processor.tokenize(texts, return_tensors="pt"))
        batch["pixel_values"] = torch.cat([video["pixel_values"] for video in videos])
        batch["video_mask"] = torch.cat([video["video_mask"] for video in videos])
        batch.update(self.extra_fields(kept_rows))
        if self.return_ids:
            batch["video_id"] = [str(row["video_id"]) for row in kept_rows]
        return batch


class HBIRetrievalCollator(HBICollator):
    """Retrieval rows `{"video_id", "video_path", "caption"}` -> `input_ids`, `attention_mask` `(batch, max_words)`,
    `pixel_values` `(batch, frames, 3, H, W)`, `video_mask` `(batch, frames)`."""


class HBICaptioningCollator(HBICollator):
    """Captioning training rows `{"video_id", "video_path", "caption"}` -> `input_ids`, `attention_mask`
    `(batch, max_words)` (the caption: decoder target and alignment text), `pixel_values` `(batch, frames, 3, H, W)`,
    `video_mask` `(batch, frames)`."""


class HBIVideoCollator(HBICollator):
    """Video-only rows `{"video_id", "video_path"}` -> `pixel_values` `(batch, frames, 3, H, W)`, `video_mask`
    `(batch, frames)` (captioning inference); with `return_ids=True` also `video_id`, the kept videos' ids."""

    def __init__(self, processor, strict: bool = False, return_ids: bool = False):
        super().__init__(processor, strict=strict, text_column=None, return_ids=return_ids)


class HBIVideoQACollator(HBICollator):
    """QA rows `{"video_id", "video_path", "question", "answer", "label"}` -> the retrieval fields for the question
    and video, plus `labels` `(batch,)`: the answer's index, or -100 for an answer outside the vocabulary (kept and
    counted; ignored by the loss, counted wrong by accuracy)."""

    def __init__(self, processor, strict: bool = False, return_ids: bool = False):
        super().__init__(processor, strict=strict, text_column="question", return_ids=return_ids)

    def extra_fields(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        labels = []
        for row in rows:
            label = row.get("label")
            if label is None or label < 0:
                self.count("answer outside vocabulary")
                label = IGNORE_INDEX
            labels.append(label)
        return {"labels": torch.tensor(labels, dtype=torch.long)}


class HBIBadInputReportCallback(TrainerCallback):
    """Logs the collators' bad-input counts at the end of every epoch and evaluation (`Trainer(callbacks=[...])`)."""

    def __init__(self, *collators: HBICollator):
        self.collators = collators

    def on_epoch_end(self, args, state, control, **kwargs):
        for collator in self.collators:
            collator.report()

    def on_evaluate(self, args, state, control, **kwargs):
        for collator in self.collators:
            collator.report()


__all__ = [
    "HBIBadInputError",
    "HBIBadInputReportCallback",
    "HBICaptioningCollator",
    "HBICollator",
    "HBIRetrievalCollator",
    "HBIVideoCollator",
    "HBIVideoQACollator",
]
