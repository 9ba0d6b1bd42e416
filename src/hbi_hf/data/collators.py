"""Collators that turn dataset rows (string paths, captions) into model-ready batches, and the bad-input policy they
share with evaluation.

Policy ([`HBIBadInputPolicy`]): in strict mode a bad sample raises [`HBIBadInputError`] naming the file or row, the
field and the reason. In lenient mode (the default) the sample is skipped, logged as it happens, and counted by
reason; `report()` (or [`HBIBadInputReportCallback`] at the end of every epoch and evaluation, and for the whole run
at the end of training) logs the totals. Counts live in shared memory, so skips in dataloader worker processes are
counted too. A caption longer than `max_words` is truncated (and counted), and a QA answer outside the vocabulary is
kept with label -100 (ignored by the loss, always wrong in accuracy) and counted: nothing is dropped silently.
"""

import json
import multiprocessing
import re
from pathlib import Path
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
    """A sample that cannot be used, raised in strict mode; the message names the file or row, the field and the
    reason."""


def decode_error_reason(error: HBIVideoDecodeError) -> str:
    """The bad-input reason (one of `SKIP_REASONS`) of a video that failed to decode."""
    if error.reason == FILE_NOT_FOUND:
        return "missing file"
    if error.reason.startswith(ZERO_FRAMES):
        return "zero frames"
    return "unreadable video"


def text_problem(text: Any, field: str = "caption") -> tuple[str, str] | None:
    """`(reason, detail)` when `text` cannot be scored or trained on (not a string, or empty / only whitespace),
    else None."""
    if not isinstance(text, str):
        return "non-text caption", f"{field} is {'null' if text is None else type(text).__name__}, expected a string"
    if not text.strip():
        return "empty caption", f"{field} is {'empty' if not text else 'only whitespace'}, expected words"
    return None


def bad_input_metrics(counts: dict[str, int]) -> dict[str, int]:
    """`{"bad_input_<reason>": n}` for every reason counted at least once (metric-style keys, e.g.
    `bad_input_unreadable_video`)."""
    return {f"bad_input_{re.sub(r'[^a-z0-9]+', '_', reason.lower())}": n for reason, n in counts.items() if n}


class HBIBadInputPolicy:
    """
    Strict or lenient handling of bad samples, and their counts by reason, for training, evaluation, QA and
    captioning alike.

    Args:
        strict (`bool`, *optional*, defaults to `False`): [`reject`] raises [`HBIBadInputError`] instead of
            skipping and counting.
        name (`str`, *optional*, defaults to `"bad input"`): how log lines name the counts (e.g. the collator).
        log (`bool`, *optional*, defaults to `True`): log each skipped sample and each report (off, e.g., in all
            but one of several processes that count the same items).

    Counts live in shared memory (dataloader workers count into the same totals). `counts` are those since the last
    [`report`], `totals` those since creation.
    """

    reasons = SKIP_REASONS + KEPT_REASONS

    def __init__(self, strict: bool = False, name: str = "bad input", log: bool = True):
        self.strict = strict
        self.name = name
        self.log = log
        self._counts = multiprocessing.Array("q", len(self.reasons))
        self._totals = multiprocessing.Array("q", len(self.reasons))

    @property
    def counts(self) -> dict[str, int]:
        """Samples skipped or noted since the last [`report`], by reason."""
        return dict(zip(self.reasons, self._counts[:], strict=True))

    @property
    def totals(self) -> dict[str, int]:
        """Samples skipped or noted since the policy was created, by reason."""
        return dict(zip(self.reasons, self._totals[:], strict=True))

    def count(self, reason: str, number: int = 1) -> None:
        """Counts `number` samples under `reason` (one of `SKIP_REASONS` or `KEPT_REASONS`)."""
        index = self.reasons.index(reason)
        with self._counts.get_lock():
            self._counts[index] += number
            self._totals[index] += number

    def reject(self, where: str, reason: str, detail: str) -> None:
        """A bad sample at `where` (a file, or a row and its file): raises in strict mode, else logs and counts it.

        Raises:
            [`HBIBadInputError`]: in strict mode, `"<where>: <reason> (<detail>)"`.
        """
        message = f"{where}: {reason} ({detail})"
        if self.strict:
            raise HBIBadInputError(message)
        self.count(reason)
        if self.log:
            logger.warning(f"skipping sample {message}")

    def report(self, reset: bool = True) -> dict[str, int]:
        """Logs and returns the counts since the last report (and starts them again from zero with `reset`)."""
        counts = self.counts
        if self.log and any(counts.values()):
            summary = ", ".join(f"{reason}: {n}" for reason, n in counts.items() if n)
            logger.warning(f"{self.name}: {summary}")
        if reset:
            with self._counts.get_lock():
                for index in range(len(self.reasons)):
                    self._counts[index] = 0
        return counts


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
        allow_empty_batch (`bool`, *optional*, defaults to `False`): in lenient mode, a batch whose every sample is
            skipped gives an empty dict (e.g. in evaluation, where the caller skips it) instead of raising.
    """

    def __init__(
        self,
        processor,
        strict: bool = False,
        text_column: str | None = "caption",
        return_ids: bool = False,
        allow_empty_batch: bool = False,
    ):
        self.processor = processor
        self.text_column = text_column
        self.return_ids = return_ids
        self.allow_empty_batch = allow_empty_batch
        self.policy = HBIBadInputPolicy(strict, name=type(self).__name__)

    @property
    def strict(self) -> bool:
        return self.policy.strict

    @property
    def skipped(self) -> dict[str, int]:
        """Samples skipped since the last report, by reason (including those skipped in dataloader workers)."""
        return {reason: n for reason, n in self.policy.counts.items() if reason in SKIP_REASONS}

    @property
    def kept_with_note(self) -> dict[str, int]:
        """Samples kept but altered or unscorable since the last report (truncated captions, answers outside the
        vocabulary)."""
        return {reason: n for reason, n in self.policy.counts.items() if reason in KEPT_REASONS}

    @property
    def totals(self) -> dict[str, int]:
        """Samples skipped or noted since the collator was created, by reason (reports do not reset them)."""
        return self.policy.totals

    def count(self, reason: str) -> None:
        self.policy.count(reason)

    def report(self, reset: bool = True) -> dict[str, int]:
        """Logs and returns the counts of skipped and noted samples since the last report."""
        return self.policy.report(reset)

    def _reject(self, row: dict[str, Any], reason: str, detail: str) -> None:
        self.policy.reject(str(row.get("video_path") or row.get("video_id") or "<row>"), reason, detail)

    def check_row(self, row: dict[str, Any]) -> tuple[str, str] | None:
        """`(reason, detail)` when the row's text cannot be used, else None."""
        if self.text_column is None:
            return None
        return text_problem(row.get(self.text_column), self.text_column)

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
                self._reject(row, decode_error_reason(error), error.reason)
                continue
            kept_rows.append(row)
            videos.append(video)
        if not kept_rows:
            if self.allow_empty_batch:
                return {}
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

    def __init__(self, processor, strict: bool = False, return_ids: bool = False, allow_empty_batch: bool = False):
        super().__init__(
            processor, strict=strict, text_column=None, return_ids=return_ids, allow_empty_batch=allow_empty_batch
        )


class HBIVideoQACollator(HBICollator):
    """QA rows `{"video_id", "video_path", "question", "answer", "label"}` -> the retrieval fields for the question
    and video, plus `labels` `(batch,)`: the answer's index, or -100 for an answer outside the vocabulary (kept and
    counted; ignored by the loss, counted wrong by accuracy)."""

    def __init__(self, processor, strict: bool = False, return_ids: bool = False, allow_empty_batch: bool = False):
        super().__init__(
            processor,
            strict=strict,
            text_column="question",
            return_ids=return_ids,
            allow_empty_batch=allow_empty_batch,
        )

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
    """Logs the collators' bad-input counts at the end of every epoch and evaluation (`Trainer(callbacks=[...])`);
    at the end of training, logs the totals of the whole run (summed over processes) and saves them in
    `output_dir/bad_input.json` (`{"train": {reason: count}}`, every reason listed)."""

    def __init__(self, *collators: HBICollator):
        self.collators = collators

    def on_epoch_end(self, args, state, control, **kwargs):
        for collator in self.collators:
            collator.report()

    def on_evaluate(self, args, state, control, **kwargs):
        for collator in self.collators:
            collator.report()

    def on_train_end(self, args, state, control, **kwargs):
        totals = sum_over_processes(merge_counts(collator.totals for collator in self.collators))
        if state.is_world_process_zero:
            skipped = {reason: n for reason, n in totals.items() if n}
            logger.warning(f"bad input over the whole training run: {skipped or 'none'}")
            write_bad_input_report(args.output_dir, "train", totals)


def merge_counts(counts) -> dict[str, int]:
    """The sum, reason by reason, of several `{reason: count}` dicts."""
    merged = dict.fromkeys(HBIBadInputPolicy.reasons, 0)
    for part in counts:
        for reason, number in part.items():
            merged[reason] = merged.get(reason, 0) + number
    return merged


def sum_over_processes(counts: dict[str, int]) -> dict[str, int]:
    """`counts` summed over every process of a running `torch.distributed` group (unchanged in one process)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return counts
    from accelerate import PartialState
    from accelerate.utils import reduce

    values = torch.tensor(list(counts.values()), dtype=torch.long, device=PartialState().device)
    return dict(zip(counts, reduce(values, reduction="sum").tolist(), strict=True))


def write_bad_input_report(output_dir: str | Path, stage: str, counts: dict[str, int]) -> Path:
    """Writes `{stage: counts}` (e.g. `{"train": {reason: count}}`) to `output_dir/bad_input.json`, this package's
    own file beside the run's other results (replaced by the next run in the same folder, as they are)."""
    path = Path(output_dir) / "bad_input.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({stage: counts}, indent=2) + "\n", encoding="utf-8")
    return path


__all__ = [
    "HBIBadInputError",
    "HBIBadInputPolicy",
    "HBIBadInputReportCallback",
    "HBICaptioningCollator",
    "HBICollator",
    "HBIRetrievalCollator",
    "HBIVideoCollator",
    "HBIVideoQACollator",
    "bad_input_metrics",
    "decode_error_reason",
    "merge_counts",
    "sum_over_processes",
    "text_problem",
    "write_bad_input_report",
]
