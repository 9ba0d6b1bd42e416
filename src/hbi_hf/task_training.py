"""Training and evaluation of the video QA and captioning heads.

Training is the retrieval fine-tuning's [`HBITrainer`] (two learning rates via `coef_lr`, no weight decay on biases
and norms, loss parts logged, `--freeze_clip`) fed by the data package's collators ([`HBIVideoQACollator`],
[`HBICaptioningCollator`]) with their bad-input policy. What is task-specific lives here: the answer vocabulary in the
config, answer prediction and its accuracy, and caption generation.
"""

import torch
from datasets import Dataset
from torch.utils.data import DataLoader
from transformers.utils import logging

from .data import HBIBadInputReportCallback, HBICollator, HBIVideoCollator, HBIVideoQACollator
from .data.loaders import read_json_lines
from .modeling_hbi import HBIForCaptioning, HBIForVideoQA, caption_token_ids
from .training import HBITrainer, HBITrainingArguments, estimator_fitting_callback, freeze_clip_towers

logger = logging.get_logger(__name__)

CAPTIONING_RECIPE = {
    "learning_rate": 5e-4,
    "num_train_epochs": 50.0,
    "per_device_train_batch_size": 64,
    "freeze_clip": True,
}
"""The paper's captioning training (Sec. 4.1; spec §8): CLIP frozen, lr 5e-4, batch 64, 50 epochs. The defaults of
`scripts/train_captioning.py` ([`HBITrainingArguments`] fields; the rest keep the retrieval recipe)."""

VIDEOQA_RECIPE = {
    "learning_rate": 1e-3,
    "coef_lr": 1e-4,
    "num_train_epochs": 5.0,
    "per_device_train_batch_size": 32,
}
"""The paper's video QA training (Sec. 4.1; spec §6, §8): lr 1e-3 for the new modules and 1e-7 (`1e-3 * coef_lr`) for
the CLIP towers, batch 32, 5 epochs. The defaults of `scripts/train_videoqa.py`. (The official code trains the new
modules at 1e-4 with the same 1e-7 for CLIP: `--learning_rate 1e-4 --coef_lr 1e-3`.)"""


def answer_vocabulary_fields(vocabulary: list[str]) -> dict[str, dict]:
    """The [`HBIConfig`] fields of an answer vocabulary (answer `i` is `vocabulary[i]`): `label2id` and `id2label`,
    hence `num_labels`; pass them as config overrides (`HBIConfig(**fields)`, `HBIForVideoQA.from_clip(...,
    **fields)`)."""
    if not vocabulary:
        raise ValueError("the answer vocabulary is empty: no training answers were given")
    return {
        "label2id": {answer: index for index, answer in enumerate(vocabulary)},
        "id2label": dict(enumerate(vocabulary)),
    }


def add_answer_labels(dataset: Dataset, label2id: dict[str, int]) -> Dataset:
    """`dataset` (QA rows with `answer`) with its `label` column (re)computed from `label2id`: the answer's index, or
    -1 for an answer outside the vocabulary (the collator turns it into the ignored label -100).

    Raises:
        `ValueError`: an answer that is not a non-blank string (a number may be a choice's index, not the answer's
            text), naming its row."""
    for row, answer in enumerate(dataset["answer"]):
        if not isinstance(answer, str) or not answer.strip():
            raise ValueError(
                f"row {row}: field 'answer' is {answer!r}; expected the answer's text (a non-empty string). A number "
                "may be the index of a choice rather than the answer: write the answer itself"
            )
    if "label" in dataset.column_names:
        dataset = dataset.remove_columns("label")
    return dataset.map(lambda row: {"label": label2id.get(row["answer"], -1)})


def load_rows(path: str) -> Dataset:
    """A JSON-lines file (or a JSON list) of rows in the QA or captioning format as a `datasets.Dataset`. Every row
    needs `video_id` and `video_path`; the fields present are type-checked: `question` and `caption` a string (or
    null, left to the collator's bad-input policy), `answer` a non-blank string (a number is refused, naming its line), `references` and
    `captions` lists of strings.

    Raises:
        `ValueError`: naming the file, the line and the field, and what was expected.
    """
    rows = []
    for record in read_json_lines(path):
        for name in ("video_id", "video_path"):
            record[name] = record.identifier(name, f"the {name.replace('_', ' ')} (a non-empty string)")
        for name in ("question", "caption"):
            if name in record:
                record.text(name)
        if "answer" in record:
            record["answer"] = record.answer()
        for name in ("references", "captions"):
            if name in record:
                record.texts(name)
        rows.append(dict(record))
    return Dataset.from_list(rows)


def train_task_model(
    model: HBIForVideoQA | HBIForCaptioning,
    train_dataset: Dataset,
    collator: HBICollator,
    training_args: HBITrainingArguments,
) -> HBITrainer:
    """
    Train `model` with [`HBITrainer`]: CLIP at `learning_rate * coef_lr`, everything else at `learning_rate`; with
    `training_args.freeze_clip` the CLIP towers are frozen first, with `training_args.fit_estimator` the Banzhaf
    teacher is fitted to the model first (held out on the training rows past `estimator_fit_pairs`). The collator's bad-input counts are reported at
    the end of every epoch; its processor is the trainer's `processing_class` (saved with the model). A captioning
    model takes its generation tokens from that processor's tokenizer ([`HBIForCaptioning.set_caption_tokens`]), so
    the saved model starts, ends and pads captions as they were tokenised.
    """
    base_model = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT-wrapped or not
    if isinstance(base_model, HBIForCaptioning):
        base_model.set_caption_tokens(collator.processor)
    if training_args.freeze_clip:
        logger.info("Froze %d CLIP parameter tensors", freeze_clip_towers(model))
    callbacks = [HBIBadInputReportCallback(collator)]
    if training_args.fit_estimator:
        callbacks.append(estimator_fitting_callback(model, train_dataset, None, collator, training_args))
    trainer = HBITrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        data_collator=collator,
        processing_class=collator.processor,
        callbacks=callbacks,
    )
    trainer.train()
    return trainer


@torch.no_grad()
def predict_answers(
    model: HBIForVideoQA, dataset: Dataset, processor, batch_size: int = 16, collator: HBIVideoQACollator | None = None
) -> tuple[list, list]:
    """Fused-logit answer of every question in `dataset` (QA rows with `label`) and its label (negative outside the
    vocabulary). The default collator is strict: an unreadable video or a null / blank question raises (naming the
    file or field) instead of shrinking the test set. Pass a lenient `HBIVideoQACollator(processor,
    allow_empty_batch=True)` to leave such questions out instead; `collator.totals` then counts them by reason.

    Raises:
        `ValueError`: the model's answer logits hold NaN or infinity (they have no argmax: a NaN row would answer
            id 0 silently), naming how many questions and which (their position among the questions predicted, the
            dataset row unless a lenient collator left some out).
    """
    model.eval()
    collator = collator or HBIVideoQACollator(processor, strict=True)
    predictions, labels = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collator):
        if not batch:
            continue
        batch_labels = batch.pop("labels")
        batch = {key: value.to(model.device) for key, value in batch.items()}
        logits = model(**batch).logits
        non_finite = (~torch.isfinite(logits)).flatten(1).any(1).nonzero().flatten()
        if len(non_finite):
            questions = (non_finite + len(labels)).tolist()
            raise ValueError(
                f"the model's answer logits hold NaN or infinity for {len(questions)} of {len(logits)} questions of a "
                f"batch (questions {questions[:10]}{' ...' if len(questions) > 10 else ''}): they have no top answer, "
                "so no accuracy is given; the model's parameters or features hold NaN or infinity, or overflowed"
            )
        predictions += logits.argmax(-1).tolist()
        labels += batch_labels.tolist()
    return predictions, labels


def videoqa_accuracy(predictions: list[int], labels: list[int]) -> dict[str, float]:
    """Top-1 accuracy over *all* questions: a question whose answer is outside the vocabulary (negative label) can
    never be answered and counts as wrong. Also returns how many such questions there were.

    Raises:
        `ValueError`: as many predictions as labels are needed, at least one; a prediction that is not an answer id
            (NaN, infinite or fractional) is refused, naming the rows; NaN logits are refused by [`predict_answers`].
    """
    if len(predictions) != len(labels):
        raise ValueError(f"got {len(predictions)} predictions for {len(labels)} labels")
    not_ids = [row for row, prediction in enumerate(predictions) if not float(prediction).is_integer()]
    if not_ids:
        raise ValueError(
            f"{len(not_ids)} of {len(predictions)} predictions are not answer ids (NaN, infinite or fractional), "
            f"rows {not_ids[:10]}{' ...' if len(not_ids) > 10 else ''}"
        )
    if not labels:
        raise ValueError("videoqa_accuracy needs at least one question")
    correct = sum(int(p == y) for p, y in zip(predictions, labels) if y >= 0)
    return {
        "accuracy": correct / len(labels),
        "num_questions": len(labels),
        "num_out_of_vocabulary": sum(int(y < 0) for y in labels),
    }


CAPTION_FIELDS = ("caption", "captions", "references")
"""Where a captioning row keeps its reference captions: `caption` (one string; one row per caption), `captions` (a
list; one row per video, the evaluation format of `scripts/evaluate_captioning.py`) or `references` (a list; what the
data package's loaders give)."""


def references_per_video(dataset: Dataset, source: str = "dataset") -> tuple[list[dict], dict[str, list[str]]]:
    """
    Group captioning rows by video: one `{"video_id", "video_path"}` row per video (first-seen order) and the
    reference captions of every video, from whichever of [`CAPTION_FIELDS`] a row has (rows of one video may mix
    them; their captions are pooled).

    Args:
        dataset (`datasets.Dataset` or a list of `dict`): captioning rows `{"video_id", "video_path", ...}`.
        source (`str`, *optional*): the rows' file, named in errors.

    Raises:
        `ValueError`: naming `source`, the row (0-based) and the field, for a row without `video_id` or `video_path`,
        without any caption field, or whose captions are not a non-empty list of non-empty strings.
    """
    videos, references = [], {}
    for index, row in enumerate(dataset):
        where = f"{source}, row {index}"
        for name in ("video_id", "video_path"):
            if not row.get(name):
                raise ValueError(f"{where}: field {name!r} is missing or empty")
        given = [name for name in CAPTION_FIELDS if row.get(name) is not None]
        if not given:
            raise ValueError(f"{where}: no reference caption; expected one of the fields {list(CAPTION_FIELDS)}")
        captions = []
        for name in given:
            value = [row[name]] if name == "caption" else row[name]
            if isinstance(value, str) or not value or not all(isinstance(c, str) and c.strip() for c in value):
                expected = "a non-empty string" if name == "caption" else "a non-empty list of non-empty strings"
                raise ValueError(f"{where}: field {name!r} must be {expected}; got {row[name]!r}")
            captions += value
        if row["video_id"] not in references:
            videos.append({"video_id": row["video_id"], "video_path": row["video_path"]})
            references[row["video_id"]] = []
        references[row["video_id"]] += captions
    return videos, references


@torch.no_grad()
def generate_captions(
    model: HBIForCaptioning,
    videos: list[dict],
    processor,
    batch_size: int = 16,
    collator: HBIVideoCollator | None = None,
    **generate_kwargs,
) -> dict[str, str]:
    """One generated caption per video of `videos` (`{"video_id", "video_path"}` rows), keyed by video id;
    `generate_kwargs` (`num_beams`, `max_new_tokens`, ...) go to `generate`. Generation starts, ends and pads with
    the processor's tokens ([`caption_token_ids`]; `generate_kwargs` may override them), which decoding then skips.
    The default collator is strict: an unreadable video raises. Pass a lenient `HBIVideoCollator(processor,
    return_ids=True, allow_empty_batch=True)` to leave such videos out (no caption in the result) and count them in
    `collator.totals`."""
    model.eval()
    collator = collator or HBIVideoCollator(processor, strict=True, return_ids=True)
    generate_kwargs = {**caption_token_ids(processor), **generate_kwargs}
    captions = {}
    for batch in DataLoader(videos, batch_size=batch_size, collate_fn=collator):
        if not batch:
            continue
        video_ids = batch.pop("video_id")
        batch = {key: value.to(model.device) for key, value in batch.items()}
        texts = processor.tokenizer.batch_decode(model.generate(**batch, **generate_kwargs), skip_special_tokens=True)
        captions.update({video_id: text.strip() for video_id, text in zip(video_ids, texts)})
    return captions


__all__ = [
    "CAPTIONING_RECIPE",
    "CAPTION_FIELDS",
    "VIDEOQA_RECIPE",
    "add_answer_labels",
    "answer_vocabulary_fields",
    "generate_captions",
    "load_rows",
    "predict_answers",
    "references_per_video",
    "train_task_model",
    "videoqa_accuracy",
]
