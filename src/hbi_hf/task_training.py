"""Training and evaluation glue for the video QA and captioning heads.

Answer vocabulary, batch collation, a Trainer set-up with the paper's two learning rates (CLIP towers / new modules),
prediction and generation loops, and the QA accuracy. The embedded synthetic dataset and the processor come from
`hbi_hf.data`; each use of it sits in one function here ([`build_processor`], [`load_embedded_videoqa`],
[`load_embedded_captioning`]).
"""

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainingArguments
from transformers.utils import logging

from .configuration_hbi import HBIConfig
from .modeling_hbi import HBIForCaptioning, HBIForVideoQA, HBIPreTrainedModel

logger = logging.get_logger(__name__)


# ----- answer vocabulary ---------------------------------------------------------------------------------------------


def build_answer_vocabulary(answers: Iterable[str], max_answers: int = 1000) -> dict[str, int]:
    """`label2id` of the `max_answers` most frequent training answers (official MSRVTT-QA: top 1000); ties go to the
    alphabetically first answer, so the vocabulary does not depend on the row order."""
    counts = Counter(answers)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:max_answers]
    return {answer: index for index, (answer, _) in enumerate(ranked)}


def answer_labels(answers: Iterable[str], label2id: dict[str, int]) -> list[int]:
    """The label of every answer, -1 for an answer outside the vocabulary."""
    return [label2id.get(answer, -1) for answer in answers]


def set_answer_vocabulary(config: HBIConfig, label2id: dict[str, int]) -> HBIConfig:
    """Write the answer vocabulary into `config` (`label2id`, `id2label`, hence `num_labels`)."""
    if not label2id:
        raise ValueError("the answer vocabulary is empty: no training answers were given")
    config.label2id = dict(label2id)
    config.id2label = {index: answer for answer, index in label2id.items()}
    return config


# ----- data (hbi_hf.data) --------------------------------------------------------------------------------------------


def build_processor(config: HBIConfig):
    """The `HBIProcessor` (CLIP tokenizer + video processor) matching `config`'s frames and words."""
    from .data import build_clip_tokenizer
    from .processing_hbi import HBIProcessor
    from .video_processing_hbi import HBIVideoProcessor

    image_size = config.vision_config.image_size
    video_processor = HBIVideoProcessor(
        num_frames=config.num_frames,
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )
    return HBIProcessor(tokenizer=build_clip_tokenizer(), video_processor=video_processor, max_words=config.max_words)


def load_embedded_videoqa(root=None):
    """The embedded synthetic dataset's QA rows (`train` / `test`): video_id, video_path, question, answer, label."""
    from .data import synthetic

    return synthetic.load_synthetic_qa(root)


def load_embedded_captioning(root=None):
    """The embedded synthetic dataset's captioning rows (`train` / `test`): video_id, video_path, caption."""
    from .data import synthetic

    return synthetic.load_synthetic_captioning(root)


def load_rows(path: str):
    """A JSON-lines / JSON file of rows (QA or captioning format) as a `datasets.Dataset`."""
    from datasets import load_dataset

    return load_dataset("json", data_files=str(path), split="train")


def demo_config(tokenizer, **overrides) -> HBIConfig:
    """A small randomly initialised HBI configuration (width 64, 2-layer CLIP towers on 32 px frames) over the real
    CLIP vocabulary of `tokenizer`: what the demos train on the embedded dataset, offline and on a CPU."""
    text = dict(
        hidden_size=64,
        intermediate_size=128,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(
        hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=2, image_size=32, patch_size=16
    )
    settings = dict(
        text_config=text,
        vision_config=vision,
        projection_dim=64,
        temporal_num_layers=2,
        temporal_num_attention_heads=4,
        temporal_intermediate_size=128,
        merge_num_attention_heads=4,
        num_frames=6,
        max_words=16,
        video_cluster_counts=[3, 2],
        text_cluster_counts=[6, 3],
        estimator_config=dict(hidden_size=16),
        qa_projection_dim=128,
        qa_hidden_size=256,
        caption_decoder_num_attention_heads=4,
        caption_decoder_intermediate_size=256,
    )
    settings.update(overrides)
    return HBIConfig(**settings)


# ----- collation -----------------------------------------------------------------------------------------------------


@dataclass
class HBIVideoQACollator:
    """Rows `{"video_path", "question", "label"}` -> `input_ids`, `attention_mask`, `pixel_values`, `video_mask`,
    `labels` (`(batch,)`, -1 for an answer outside the vocabulary)."""

    processor: Any

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = dict(self.processor(text=[r["question"] for r in rows], videos=[r["video_path"] for r in rows]))
        batch["labels"] = torch.tensor([int(r["label"]) for r in rows], dtype=torch.long)
        return batch


@dataclass
class HBICaptioningCollator:
    """Rows `{"video_path", "caption"}` -> `input_ids`, `attention_mask` (the caption: decoder target and alignment
    text), `pixel_values`, `video_mask`."""

    processor: Any

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        return dict(self.processor(text=[r["caption"] for r in rows], videos=[r["video_path"] for r in rows]))


@dataclass
class HBIVideoCollator:
    """Rows `{"video_path"}` -> `pixel_values`, `video_mask` (captioning inference)."""

    processor: Any

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.processor(videos=[r["video_path"] for r in rows])
        return {"pixel_values": batch["pixel_values"], "video_mask": batch["video_mask"]}


# ----- training ------------------------------------------------------------------------------------------------------


def freeze_clip(model: HBIPreTrainedModel) -> None:
    """Freeze the CLIP text and image towers (the paper's captioning setting)."""
    model.base_model.clip.requires_grad_(False)


def two_learning_rate_optimizer(
    model: HBIPreTrainedModel, learning_rate: float, clip_learning_rate: float, weight_decay: float = 0.2
) -> torch.optim.AdamW:
    """AdamW with the CLIP towers at `clip_learning_rate` and every other trainable module at `learning_rate`
    (paper: 1e-7 / 1e-3); biases and norms without weight decay; frozen parameters left out."""
    clip_ids = {id(p) for p in model.base_model.clip.parameters()}
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            no_decay = parameter.dim() < 2 or "norm" in name
            groups.setdefault((id(parameter) in clip_ids, no_decay), []).append(parameter)
    return torch.optim.AdamW(
        [
            {
                "params": params,
                "lr": clip_learning_rate if is_clip else learning_rate,
                "weight_decay": 0.0 if no_decay else weight_decay,
            }
            for (is_clip, no_decay), params in groups.items()
        ],
        betas=(0.9, 0.98),
        eps=1e-6,
    )


def train_task_model(
    model: HBIForVideoQA | HBIForCaptioning,
    train_dataset,
    data_collator,
    training_args: TrainingArguments,
    clip_learning_rate: float,
) -> Trainer:
    """Train with `Trainer`: `training_args.learning_rate` for the new modules, `clip_learning_rate` for CLIP."""
    optimizer = two_learning_rate_optimizer(
        model, training_args.learning_rate, clip_learning_rate, training_args.weight_decay
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        data_collator=data_collator,
        optimizers=(optimizer, None),
    )
    trainer.train()
    return trainer


# ----- evaluation ----------------------------------------------------------------------------------------------------


def _batches(dataset, collator, batch_size: int, device: torch.device):
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collator):
        yield {key: value.to(device) for key, value in batch.items()}


@torch.no_grad()
def predict_answers(model: HBIForVideoQA, dataset, collator, batch_size: int = 16) -> tuple[list[int], list[int]]:
    """Fused-logit answer of every question in `dataset` and its label (-1 outside the vocabulary)."""
    model.eval()
    predictions, labels = [], []
    for batch in _batches(dataset, collator, batch_size, model.device):
        batch_labels = batch.pop("labels")
        predictions += model(**batch).logits.argmax(-1).tolist()
        labels += batch_labels.tolist()
    return predictions, labels


def videoqa_accuracy(predictions: list[int], labels: list[int]) -> dict[str, float]:
    """Top-1 accuracy over *all* questions: a question whose answer is outside the vocabulary (label -1) can never be
    answered and counts as wrong. Also returns how many such questions there were."""
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


def references_per_video(dataset) -> tuple[list[dict], dict[str, list[str]]]:
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
    model: HBIForCaptioning,
    videos: list[dict],
    collator,
    tokenizer,
    batch_size: int = 16,
    **generate_kwargs,
) -> dict[str, str]:
    """Generate one caption per video (`generate_kwargs` such as `num_beams`, `max_new_tokens` go to `generate`)."""
    model.eval()
    captions = {}
    for start in range(0, len(videos), batch_size):
        rows = videos[start : start + batch_size]
        batch = {key: value.to(model.device) for key, value in collator(rows).items()}
        sequences = model.generate(**batch, **generate_kwargs)
        texts = tokenizer.batch_decode(sequences, skip_special_tokens=True)
        captions.update({row["video_id"]: text.strip() for row, text in zip(rows, texts)})
    return captions


__all__ = [
    "HBICaptioningCollator",
    "HBIVideoCollator",
    "HBIVideoQACollator",
    "answer_labels",
    "build_answer_vocabulary",
    "build_processor",
    "demo_config",
    "load_rows",
    "freeze_clip",
    "generate_captions",
    "load_embedded_captioning",
    "load_embedded_videoqa",
    "predict_answers",
    "references_per_video",
    "set_answer_vocabulary",
    "train_task_model",
    "two_learning_rate_optimizer",
    "videoqa_accuracy",
]
