"""The end-to-end demo behind `make demo`: fine-tune a small, randomly initialised HBI on the embedded synthetic
dataset on the CPU, evaluate retrieval against the chance level, and save model and processor.

No real CLIP weights are available offline, so the CLIP towers are small and random (width 128, 2 layers, 64 px
frames by default) and learn from scratch: CLIP parameters train at the full learning rate (`coef_lr=1.0`), unlike
fine-tuning a pretrained CLIP (`coef_lr=1e-3`). The figures show the pipeline learns; they say nothing about the
paper's numbers.
"""

from dataclasses import dataclass, field

import torch
from transformers.utils import logging

from .configuration_hbi import HBIConfig
from .modeling_hbi import HBIForRetrieval
from .retrieval_data import build_retrieval_collator, build_retrieval_processor, synthetic_retrieval_splits
from .retrieval_evaluation import HBIRetrievalGallery
from .retrieval_metrics import chance_metrics
from .training import HBITrainer, HBITrainingArguments, write_eval_results

logger = logging.get_logger(__name__)

CLIP_VOCAB_SIZE = 49408


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
    learning_rate: float = field(default=1e-3, metadata={"help": "Learning rate of every parameter."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training rows."})
    max_test_samples: int | None = field(default=None, metadata={"help": "Keep only the first N test rows."})
    seed: int = field(default=0, metadata={"help": "Seed of the data generation and of training."})

    def __post_init__(self):
        if self.quick:
            self.hidden_size, self.num_layers, self.image_size = 64, 1, 32
            self.num_frames, self.max_words, self.num_train_epochs = 4, 16, 1.0
            self.max_train_samples = self.max_train_samples or 64
            self.max_test_samples = self.max_test_samples or 32


def demo_config(args: HBIDemoArguments) -> HBIConfig:
    """A small HBI with random CLIP towers of `args.hidden_size` width."""
    width = args.hidden_size
    heads = max(1, width // 32)
    tower = dict(
        hidden_size=width, intermediate_size=4 * width, num_attention_heads=heads, num_hidden_layers=args.num_layers
    )
    return HBIConfig(
        text_config={**tower, "vocab_size": CLIP_VOCAB_SIZE, "max_position_embeddings": max(77, args.max_words)},
        vision_config={**tower, "image_size": args.image_size, "patch_size": args.patch_size},
        projection_dim=width,
        temporal_num_layers=1,
        temporal_num_attention_heads=heads,
        temporal_intermediate_size=2 * width,
        merge_num_attention_heads=heads,
        num_frames=args.num_frames,
        max_words=args.max_words,
        video_cluster_counts=[max(1, args.num_frames // 2), max(1, args.num_frames // 4)],
        text_cluster_counts=[max(1, args.max_words // 2), max(1, args.max_words // 8)],
        representation_reconstruction=args.representation_reconstruction,
        estimator_config=dict(hidden_size=16),
    )


def run_demo(args: HBIDemoArguments) -> tuple[dict[str, float], dict[str, float]]:
    """Train, evaluate and save; returns the test metrics and the chance level of the same gallery."""
    splits = synthetic_retrieval_splits(args.data_root, seed=args.seed)
    train, test = splits["train"], splits["test"]
    if args.max_train_samples is not None:
        train = train.select(range(min(args.max_train_samples, len(train))))
    if args.max_test_samples is not None:
        test = test.select(range(min(args.max_test_samples, len(test))))
    torch.manual_seed(args.seed)
    model = HBIForRetrieval(demo_config(args))
    processor = build_retrieval_processor(model.config)
    training_args = HBITrainingArguments(
        output_dir=args.output_dir,
        use_cpu=True,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        num_train_epochs=args.num_train_epochs,
        learning_rate=args.learning_rate,
        coef_lr=1.0,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        seed=args.seed,
    )
    trainer = HBITrainer(
        model=model,
        args=training_args,
        data_collator=build_retrieval_collator(processor),
        train_dataset=train,
        processing_class=processor,
    )
    trainer.train()
    metrics = trainer.evaluate(test, metric_key_prefix="test")
    trainer.save_model(args.output_dir)
    write_eval_results(args.output_dir, metrics, "HBI synthetic retrieval", "synthetic")
    gallery = HBIRetrievalGallery.from_dataset(test)
    chance = chance_metrics(len(gallery.captions), len(gallery.video_ids), gallery.text_to_video)
    return metrics, chance


__all__ = ["HBIDemoArguments", "demo_config", "run_demo"]
