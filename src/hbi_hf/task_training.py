"""Training and evaluation of the video QA and captioning heads.

Training is the retrieval fine-tuning's [`HBITrainer`] (two learning rates via `coef_lr`, no weight decay on biases
and norms, loss parts logged, `--freeze_clip`) fed by the data package's collators ([`HBIVideoQACollator`],
[`HBICaptioningCollator`]) with their bad-input policy. What is task-specific lives here: the answer vocabulary in the
config, answer prediction and its accuracy, and caption generation.
"""

import torch
from datasets import Dataset, load_dataset
from torch.utils.data import DataLoader
from transformers.utils import logging

from .data import HBIBadInputReportCallback, HBICollator, HBIVideoCollator, HBIVideoQACollator
from .modeling_hbi import HBIForCaptioning, HBIForVideoQA
from .training import HBITrainer, HBITrainingArguments, freeze_clip_towers

logger = logging.get_logger(__name__)


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
    -1 for an answer outside the vocabulary (the collator turns it into the ignored label -100)."""
    if "label" in dataset.column_names:
        dataset = dataset.remove_columns("label")
    return dataset.map(lambda row: {"label": label2id.get(row["answer"], -1)})


def load_rows(path: str) -> Dataset:
    """A JSON-lines / JSON file of rows (QA or captioning format) as a `datasets.Dataset`."""
    return load_dataset("json", data_files=str(path), split="train")


def train_task_model(
    model: HBIForVideoQA | HBIForCaptioning,
    train_dataset: Dataset,
    collator: HBICollator,
    training_args: HBITrainingArguments,
) -> HBITrainer:
    """
    Train `model` with [`HBITrainer`]: CLIP at `learning_rate * coef_lr`, everything else at `learning_rate`; with
    `training_args.freeze_clip` the CLIP towers are frozen first. The collator's bad-input counts are reported at
    the end of every epoch; its processor is the trainer's `processing_class` (saved with the model).
    """
    if training_args.freeze_clip:
        logger.info("Froze %d CLIP parameter tensors", freeze_clip_towers(model))
    trainer = HBITrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        data_collator=collator,
        processing_class=collator.processor,
        callbacks=[HBIBadInputReportCallback(collator)],
    )
    trainer.train()
    return trainer


@torch.no_grad()
def predict_answers(model: HBIForVideoQA, dataset: Dataset, processor, batch_size: int = 16) -> tuple[list, list]:
    """Fused-logit answer of every question in `dataset` (QA rows with `label`) and its label (negative outside the
    vocabulary). Strict: an unreadable video or empty question raises instead of shrinking the test set."""
    model.eval()
    collator = HBIVideoQACollator(processor, strict=True)
    predictions, labels = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collator):
        batch_labels = batch.pop("labels")
        batch = {key: value.to(model.device) for key, value in batch.items()}
        predictions += model(**batch).logits.argmax(-1).tolist()
        labels += batch_labels.tolist()
    return predictions, labels


def videoqa_accuracy(predictions: list[int], labels: list[int]) -> dict[str, float]:
    """Top-1 accuracy over *all* questions: a question whose answer is outside the vocabulary (negative label) can
    never be answered and counts as wrong. Also returns how many such questions there were."""
    if len(predictions) != len(labels):
        raise ValueError(f"got {len(predictions)} predictions for {len(labels)} labels")
    if not labels:
        raise ValueError("videoqa_accuracy needs at least one question")
    correct = sum(int(p == y) for p, y in zip(predictions, labels) if y >= 0)
    return {
        "accuracy": correct / len(labels),
        "num_questions": len(labels),
        "num_out_of_vocabulary": sum(int(y < 0) for y in labels),
    }


def references_per_video(dataset: Dataset) -> tuple[list[dict], dict[str, list[str]]]:
    """Group captioning rows by video: one `{"video_id", "video_path"}` row per video (first-seen order) and the
    reference captions of every video. Rows carry a `caption` string or a `references` list."""
    videos, references = [], {}
    for row in dataset:
        captions = row["references"] if "references" in row else [row["caption"]]
        if row["video_id"] not in references:
            videos.append({"video_id": row["video_id"], "video_path": row["video_path"]})
            references[row["video_id"]] = []
        references[row["video_id"]] += list(captions)
    return videos, references


@torch.no_grad()
def generate_captions(
    model: HBIForCaptioning, videos: list[dict], processor, batch_size: int = 16, **generate_kwargs
) -> dict[str, str]:
    """One generated caption per video of `videos` (`{"video_id", "video_path"}` rows), keyed by video id;
    `generate_kwargs` (`num_beams`, `max_new_tokens`, ...) go to `generate`. Strict: an unreadable video raises."""
    model.eval()
    collator = HBIVideoCollator(processor, strict=True, return_ids=True)
    captions = {}
    for batch in DataLoader(videos, batch_size=batch_size, collate_fn=collator):
        video_ids = batch.pop("video_id")
        batch = {key: value.to(model.device) for key, value in batch.items()}
        texts = processor.tokenizer.batch_decode(model.generate(**batch, **generate_kwargs), skip_special_tokens=True)
        captions.update({video_id: text.strip() for video_id, text in zip(video_ids, texts)})
    return captions


__all__ = [
    "add_answer_labels",
    "answer_vocabulary_fields",
    "generate_captions",
    "load_rows",
    "predict_answers",
    "references_per_video",
    "train_task_model",
    "videoqa_accuracy",
]
