"""The end-to-end demos behind `make demo`, `make demo-qa` and `make demo-captioning`: train a small HBI on the
embedded synthetic dataset on the CPU, evaluate it against a trivial baseline (retrieval: the chance level; QA:
always the majority answer; captioning: always the most frequent training caption), and save model and processor.

Retrieval (`make demo`, [`HBIRetrievalDemoArguments`]) trains random CLIP towers (width 128, 2 layers, 64 px frames)
from scratch by default (temperature 0.05, every parameter at the full learning rate, alpha warmed up over 20 % of
the steps: at the paper's 0.01 random towers collapse to one embedding). `--towers pretrained` runs the paper's
regime instead: the towers are pre-trained once, contrastively, on captioned single frames of scenes outside the
retrieval splits ([`hbi_hf.pretraining`], cached by recipe), then HBI is fine-tuned from them at temperature 0.01
with the CLIP parameters at `coef_lr = 1e-3` times the learning rate; measured on seeds 0 and 1, one such epoch
retrieved far worse than 10 epochs from scratch (README, "make demo trains from scratch"), so the demo keeps the
latter. The QA and captioning demos ([`HBIDemoArguments`]) start from random towers or, with `--init_from`, from a
saved HBI. The Banzhaf loss L_I is taught by the config's default
teacher, the exact interactions of each batch (`banzhaf_teacher="exact"`, docs/banzhaf.md), and logged as
`banzhaf_loss`. The figures show the pipeline learns; they say nothing about the paper's numbers.
"""

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import torch
from datasets import Dataset
from transformers.utils import logging

from .caption_metrics import require_java
from .configuration_hbi import HBIConfig
from .data import (
    HBICaptioningCollator,
    HBIVideoQACollator,
    generate_synthetic_dataset,
    load_synthetic_captioning,
    load_synthetic_qa,
)
from .metrics import compute as compute_metric
from .modeling_hbi import HBIForCaptioning, HBIForRetrieval, HBIForVideoQA
from .pretraining import HBIPretrainingArguments, clip_config, pretrained_towers
from .retrieval_data import build_retrieval_collator, build_retrieval_processor, synthetic_retrieval_splits
from .retrieval_evaluation import HBIRetrievalGallery
from .retrieval_metrics import chance_metrics
from .task_training import (
    answer_vocabulary_fields,
    generate_captions,
    predict_answers,
    references_per_video,
    train_task_model,
)
from .training import HBITrainer, HBITrainingArguments, write_eval_results

logger = logging.get_logger(__name__)

CLIP_VOCAB_SIZE = 49408
CLIP_BOS_TOKEN_ID = 49406
CLIP_EOS_TOKEN_ID = 49407
"""Start and end tokens of the CLIP vocabulary; the end token also pads (as `build_clip_tokenizer()` does)."""


@dataclass
class HBIDemoArguments:
    """Sizes and schedule of the demo; `--quick` shrinks everything to about a minute."""

    output_dir: str = field(default="outputs/demo", metadata={"help": "Where model, processor and results go."})
    data_root: str | None = field(default=None, metadata={"help": "Synthetic dataset folder (default: the cache)."})
    quick: bool = field(default=False, metadata={"help": "A ~1 minute run (smaller model, data and schedule)."})
    hidden_size: int = field(default=128, metadata={"help": "Width of both CLIP towers and of the joint space."})
    num_layers: int = field(default=2, metadata={"help": "Layers of each CLIP tower."})
    image_size: int = field(default=64, metadata={"help": "Frame side in pixels."})
    patch_size: int = field(default=16, metadata={"help": "ViT patch side in pixels."})
    num_frames: int = field(default=8, metadata={"help": "Frames per video."})
    max_words: int = field(default=24, metadata={"help": "Tokens per caption."})
    representation_reconstruction: bool = field(default=True, metadata={"help": "HBI V2 (True) or HBI (False)."})
    num_train_epochs: float = field(default=10.0, metadata={"help": "Training epochs."})
    batch_size: int = field(default=32, metadata={"help": "Training batch size."})
    learning_rate: float = field(default=5e-4, metadata={"help": "Learning rate of every parameter."})
    temperature: float = field(
        default=0.05,
        metadata={
            "help": "Fixed contrastive temperature (paper: 0.01, made for a pretrained CLIP; randomly initialised "
            "towers trained from scratch at 0.01 collapse to one embedding), unless learnable_temperature."
        },
    )
    learnable_temperature: bool = field(
        default=False, metadata={"help": "Learn the temperature (CLIP's logit scale, starting at 1/0.07)."}
    )
    weight_decay: float = field(default=0.2, metadata={"help": "Weight decay (never on biases and norms)."})
    coef_lr: float = field(
        default=1.0,
        metadata={"help": "CLIP parameters train at learning_rate * coef_lr (1: towers trained from scratch)."},
    )
    banzhaf_head_input_scale: float = field(
        default=1.0,
        metadata={
            "help": "HBIConfig.banzhaf_head_input_scale: the Banzhaf heads read the similarity times this (the "
            "paper's 1, at which L_I trains the heads but barely reaches the encoder; at 20 the exact teacher "
            "slowed training: docs/banzhaf.md has the measured settings)."
        },
    )
    banzhaf_teacher: Literal["exact", "monte_carlo", "estimator", "none"] = field(
        default="exact", metadata={"help": "HBIConfig.banzhaf_teacher: where the targets of L_I (Eq. 8) come from."}
    )
    banzhaf_game_scale: float = field(
        default=1000.0,
        metadata={"help": "HBIConfig.banzhaf_game_scale: the teacher's inverse temperature (official 1000)."},
    )
    banzhaf_loss_warmup_steps: float = field(
        default=0.2,
        metadata={
            "help": "Ramp alpha from 0 over these steps (a fraction of all steps if < 1): the towers start at random, "
            "with no structure in their similarities for the Banzhaf teacher (the paper starts from a pretrained "
            "CLIP)."
        },
    )
    init_from: str | None = field(
        default=None,
        metadata={
            "help": "QA / captioning only: start from this saved HBI checkpoint (e.g. the retrieval demo's "
            "outputs/demo); its encoder weights and sizes are kept (the size options are ignored), the task head "
            "starts fresh."
        },
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training rows."})
    max_test_samples: int | None = field(default=None, metadata={"help": "Keep only the first N test rows."})
    seed: int = field(default=0, metadata={"help": "Seed of the data generation and of training."})

    def __post_init__(self):
        if self.quick:
            self.hidden_size, self.num_layers, self.image_size = 64, 1, 32
            self.num_frames, self.max_words, self.num_train_epochs = 4, 16, 1.0
            self.max_train_samples = self.max_train_samples or 64
            self.max_test_samples = self.max_test_samples or 32


TOWER_REGIMES = ("pretrained", "scratch")
"""Where the retrieval demo's CLIP towers start: pre-trained ([`pretrained_towers`]) or random."""
REGIME_DEFAULTS: dict[str, dict[str, float]] = {
    "pretrained": {
        "temperature": 0.01,
        "learning_rate": 1e-3,
        "coef_lr": 1e-3,
        "num_train_epochs": 1.0,
        "banzhaf_loss_warmup_steps": 0.0,
    },
    "scratch": {
        "temperature": 0.05,
        "learning_rate": 5e-4,
        "coef_lr": 1.0,
        "num_train_epochs": 10.0,
        "banzhaf_loss_warmup_steps": 0.2,
    },
}
"""The schedule of each regime, for the options left unset. Pre-trained: the paper's tau = 0.01 and learning-rate
split (new modules at its 1e-3, CLIP at coef_lr = 1e-3 times that, as in the official code), no alpha warm-up, and
one epoch (47 steps of 32: what lets `make ablation` run its 35 fine-tunings on a shared 2-core machine; the paper's
5 epochs of MSR-VTT are about 7,000 steps of 128). From scratch: the settings measured for random towers
(docs/banzhaf.md; at tau = 0.01 they collapse to one embedding)."""


@dataclass
class HBIRetrievalDemoArguments(HBIDemoArguments):
    """The retrieval demo: [`HBIDemoArguments`] plus where the CLIP towers start. The schedule options left unset
    take the regime's values ([`REGIME_DEFAULTS`])."""

    towers: Literal["pretrained", "scratch"] = field(
        default="scratch",
        metadata={
            "help": "scratch: random towers trained from scratch (the demo's default: 10 epochs from scratch "
            "retrieved better than one fine-tuning epoch, docs/banzhaf.md); pretrained: fine-tune CLIP towers "
            "pre-trained contrastively on captioned single frames of other scenes (hbi_hf.pretraining; trained once, "
            "then cached), the paper's regime."
        },
    )
    pretrained_dir: str | None = field(
        default=None,
        metadata={"help": "Folder of the pre-trained towers (default: a folder per recipe in the cache)."},
    )
    pretraining_steps: int = field(default=400, metadata={"help": "Pre-training steps (batch 128)."})
    pretraining_scenes: int = field(default=1000, metadata={"help": "Pre-training scenes (4 captioned frames each)."})
    temperature: float | None = field(
        default=None,
        metadata={"help": "Fixed contrastive temperature (pretrained: 0.01, the paper's; scratch: 0.05)."},
    )
    learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the new modules (pretrained: 1e-3; scratch: 5e-4)."}
    )
    coef_lr: float | None = field(
        default=None,
        metadata={"help": "CLIP parameters train at learning_rate * coef_lr (pretrained: 1e-3; scratch: 1)."},
    )
    num_train_epochs: float | None = field(
        default=None, metadata={"help": "Training epochs (pretrained: 1; scratch: 10)."}
    )
    banzhaf_loss_warmup_steps: float | None = field(
        default=None,
        metadata={
            "help": "Ramp alpha from 0 over these steps, a fraction of all if < 1 (pretrained: 0; scratch: 0.2)."
        },
    )

    def __post_init__(self):
        if self.towers not in TOWER_REGIMES:
            raise ValueError(f"--towers must be one of {TOWER_REGIMES}; got {self.towers!r}")
        for name, value in REGIME_DEFAULTS[self.towers].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        super().__post_init__()
        if self.quick:
            self.pretraining_steps, self.pretraining_scenes = 20, 50


def _hbi_fields(args: HBIDemoArguments) -> dict:
    """The [`HBIConfig`] fields of the demo's model beyond its CLIP towers."""
    width = args.hidden_size
    heads = max(1, width // 32)
    return dict(
        temporal_num_layers=1,
        temporal_num_attention_heads=heads,
        merge_num_attention_heads=heads,
        num_frames=args.num_frames,
        max_words=args.max_words,
        video_cluster_counts=[max(1, args.num_frames // 2), max(1, args.num_frames // 4)],
        text_cluster_counts=[max(1, args.max_words // 2), max(1, args.max_words // 8)],
        representation_reconstruction=args.representation_reconstruction,
        banzhaf_head_input_scale=args.banzhaf_head_input_scale,
        banzhaf_teacher=args.banzhaf_teacher,
        banzhaf_game_scale=args.banzhaf_game_scale,
        temperature=args.temperature,
        learnable_temperature=args.learnable_temperature,
        estimator_config=dict(hidden_size=16),
        qa_projection_dim=width,
        qa_hidden_size=2 * width,
        caption_decoder_num_attention_heads=heads,
        caption_decoder_intermediate_size=4 * width,
    )


def demo_config(args: HBIDemoArguments, **overrides) -> HBIConfig:
    """A small HBI with random CLIP towers of `args.hidden_size` width over the CLIP vocabulary, its QA and
    captioning heads scaled to that width; `overrides` are further [`HBIConfig`] fields."""
    clip = clip_config(pretraining_arguments(args))
    settings = dict(
        text_config=clip.text_config.to_dict(),
        vision_config=clip.vision_config.to_dict(),
        projection_dim=clip.projection_dim,
        temporal_intermediate_size=2 * args.hidden_size,
        **_hbi_fields(args),
    )
    return HBIConfig(**{**settings, **overrides})


def pretraining_arguments(args: HBIDemoArguments) -> HBIPretrainingArguments:
    """The pre-training recipe of towers of the demo's sizes, seeded with `args.seed` (the dataset's seed), with the
    schedule of `args.pretraining_steps` / `args.pretraining_scenes` where `args` has them
    ([`HBIRetrievalDemoArguments`])."""
    defaults = HBIPretrainingArguments()
    return HBIPretrainingArguments(
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        image_size=args.image_size,
        patch_size=args.patch_size,
        max_words=args.max_words,
        num_steps=getattr(args, "pretraining_steps", defaults.num_steps),
        num_scenes=getattr(args, "pretraining_scenes", defaults.num_scenes),
        seed=args.seed,
    )


def demo_training_arguments(args: HBIDemoArguments) -> HBITrainingArguments:
    """CPU training at `args.learning_rate`, the CLIP towers at `args.coef_lr` times that (1.0 for random towers
    learning from scratch, the paper's 1e-3 for pre-trained ones), no checkpoints."""
    return HBITrainingArguments(
        output_dir=args.output_dir,
        use_cpu=True,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        num_train_epochs=args.num_train_epochs,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        banzhaf_loss_warmup_steps=args.banzhaf_loss_warmup_steps,
        coef_lr=args.coef_lr,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        seed=args.seed,
    )


def _first_rows(dataset: Dataset, limit: int | None) -> Dataset:
    return dataset if limit is None else dataset.select(range(min(limit, len(dataset))))


def build_task_model(model_class: type[HBIForVideoQA | HBIForCaptioning], args: HBIDemoArguments, **fields):
    """A new task model with [`HBIConfig`] `fields` set: random ([`demo_config`]) or, with `args.init_from`, with the
    encoder of that checkpoint (its task head, if any other, is dropped; the new one starts at random)."""
    torch.manual_seed(args.seed)
    if args.init_from is None:
        return model_class(demo_config(args, **fields))
    return model_class.from_pretrained_encoder(args.init_from, **fields)


def question_type_prior_answers(train: Dataset, test: Dataset, opening_words: int = 3) -> list[int]:
    """For each test question, the most frequent training answer among training questions opening with the same
    `opening_words` words (its type, e.g. "what shape is"): a baseline that reads the question but never the
    video. Falls back to the overall majority answer for an unseen opening."""

    def opening(question: str) -> str:
        return " ".join(question.lower().split()[:opening_words])

    answers_per_type: dict[str, Counter] = {}
    for question, label in zip(train["question"], train["label"]):
        answers_per_type.setdefault(opening(question), Counter())[label] += 1
    majority = Counter(train["label"]).most_common(1)[0][0]
    return [
        answers_per_type[opening(q)].most_common(1)[0][0] if opening(q) in answers_per_type else majority
        for q in test["question"]
    ]


def build_retrieval_model(
    args: HBIDemoArguments, model_class: type[HBIForRetrieval] = HBIForRetrieval, **fields
) -> HBIForRetrieval:
    """A `model_class` of the demo's sizes with [`HBIConfig`] `fields` set. With `args.towers == "pretrained"`
    ([`HBIRetrievalDemoArguments`]) its CLIP towers are the pre-trained ones (built first if not cached,
    [`pretrained_towers`]), loaded with `model_class.from_clip` exactly as a real CLIP (the temporal transformer
    starts from the first text layer, as in the official code); otherwise ([`HBIDemoArguments`] too) everything is
    random ([`demo_config`]). The new modules draw from torch's global generator: seed it first."""
    if getattr(args, "towers", "scratch") == "scratch":
        return model_class(demo_config(args, **fields))
    folder = pretrained_towers(pretraining_arguments(args), args.pretrained_dir)
    # the temporal transformer shaped like a CLIP text layer (feed-forward 4 x width), so from_clip copies it
    settings = dict(_hbi_fields(args), temporal_intermediate_size=4 * args.hidden_size)
    return model_class.from_clip(str(folder), **{**settings, **fields})


def run_demo(args: HBIDemoArguments) -> tuple[dict[str, float], dict[str, float]]:
    """Train, evaluate and save; returns the test metrics and the chance level of the same gallery."""
    splits = synthetic_retrieval_splits(args.data_root, seed=args.seed)
    train = _first_rows(splits["train"], args.max_train_samples)
    test = _first_rows(splits["test"], args.max_test_samples)
    torch.manual_seed(args.seed)
    model = build_retrieval_model(args)
    processor = build_retrieval_processor(model.config)
    trainer = HBITrainer(
        model=model,
        args=demo_training_arguments(args),
        data_collator=build_retrieval_collator(processor),
        train_dataset=train,
        processing_class=processor,
    )
    trainer.train()
    metrics = trainer.evaluate(test, metric_key_prefix="test")
    trainer.save_model(args.output_dir)
    write_eval_results(args.output_dir, metrics, "synthetic", "test")
    gallery = HBIRetrievalGallery.from_dataset(test)
    chance = chance_metrics(len(gallery.captions), len(gallery.video_ids), gallery.text_to_video)
    return metrics, chance


def run_videoqa_demo(args: HBIDemoArguments) -> dict[str, dict[str, float]]:
    """Train [`HBIForVideoQA`] on the embedded QA pairs (answer vocabulary: every training answer), save it, and
    return the test accuracy of the model, of always giving the most frequent training answer, and of giving the most
    frequent answer of the question's type ([`question_type_prior_answers`]: what a model that ignores the video can
    reach)."""
    splits = load_synthetic_qa(generate_synthetic_dataset(root=args.data_root, seed=args.seed))
    train = _first_rows(splits["train"], args.max_train_samples)
    test = _first_rows(splits["test"], args.max_test_samples)
    vocabulary = splits["train"].features["label"].names
    model = build_task_model(HBIForVideoQA, args, banzhaf_loss_weight=2.0, **answer_vocabulary_fields(vocabulary))
    processor = build_retrieval_processor(model.config)
    trainer = train_task_model(model, train, HBIVideoQACollator(processor), demo_training_arguments(args))
    trainer.save_model(args.output_dir)
    predictions, labels = predict_answers(model, test, processor, args.batch_size)
    majority = Counter(train["label"]).most_common(1)[0][0]
    return {
        "hbi": compute_metric("videoqa", predictions=predictions, references=labels),
        "majority_answer_baseline": compute_metric("videoqa", predictions=[majority] * len(labels), references=labels),
        "question_type_prior_baseline": compute_metric(
            "videoqa", predictions=question_type_prior_answers(train, test), references=labels
        ),
    }


def _caption_scores(predictions: dict[str, str], references: dict[str, list[str]]) -> dict[str, float]:
    """The `hbi_captioning` evaluate module on captions and references keyed by video id."""
    video_ids = list(references)
    return compute_metric(
        "captioning",
        predictions=[predictions[video_id] for video_id in video_ids],
        references=[references[video_id] for video_id in video_ids],
    )


def run_captioning_demo(args: HBIDemoArguments, num_beams: int = 3) -> dict[str, dict]:
    """Train [`HBIForCaptioning`] on the embedded captions, save it, and return BLEU-4, METEOR, ROUGE-L and CIDEr of
    its beam-search captions and of always emitting the most frequent training caption, plus a few examples."""
    require_java()
    splits = load_synthetic_captioning(generate_synthetic_dataset(root=args.data_root, seed=args.seed))
    train = _first_rows(splits["train"], args.max_train_samples)
    videos, references = references_per_video(_first_rows(splits["test"], args.max_test_samples))
    model = build_task_model(HBIForCaptioning, args)
    processor = build_retrieval_processor(model.config)
    trainer = train_task_model(model, train, HBICaptioningCollator(processor), demo_training_arguments(args))
    trainer.save_model(args.output_dir)
    predictions = generate_captions(model, videos, processor, args.batch_size, num_beams=num_beams)
    constant = Counter(train["caption"]).most_common(1)[0][0]
    return {
        "hbi": _caption_scores(predictions, references),
        "constant_caption_baseline": _caption_scores({video_id: constant for video_id in references}, references),
        "constant_caption": constant,
        "examples": {video_id: predictions[video_id] for video_id in list(predictions)[:3]},
    }


__all__ = [
    "REGIME_DEFAULTS",
    "TOWER_REGIMES",
    "HBIDemoArguments",
    "HBIRetrievalDemoArguments",
    "build_retrieval_model",
    "build_task_model",
    "demo_config",
    "pretraining_arguments",
    "demo_training_arguments",
    "run_captioning_demo",
    "run_demo",
    "question_type_prior_answers",
    "run_videoqa_demo",
]
