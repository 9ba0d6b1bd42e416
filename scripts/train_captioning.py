"""Train HBIForCaptioning (video captioning) with the Trainer: CLIP frozen, lr 5e-4 (paper).

    python scripts/train_captioning.py --train_file train.jsonl --output_dir runs/caption \
        --clip_name_or_path openai/clip-vit-base-patch32 --num_train_epochs 50 --per_device_train_batch_size 64

Rows: {"video_id", "video_path", "caption"}, one per caption. `--embedded` trains on the embedded synthetic dataset
with a small random model instead (offline demo).
"""

from dataclasses import dataclass, field

from transformers import HfArgumentParser, TrainingArguments

from hbi_hf import HBIForCaptioning
from hbi_hf.task_training import (
    HBICaptioningCollator,
    build_processor,
    demo_config,
    freeze_clip,
    load_embedded_captioning,
    load_rows,
    train_task_model,
)


@dataclass
class CaptioningArguments:
    train_file: str | None = field(default=None, metadata={"help": "JSON lines of captioning rows"})
    embedded: bool = field(default=False, metadata={"help": "train on the embedded synthetic dataset (demo model)"})
    clip_name_or_path: str = field(default="openai/clip-vit-base-patch32", metadata={"help": "CLIP to start from"})
    estimator_name_or_path: str | None = field(default=None, metadata={"help": "trained Banzhaf estimator"})
    caption_loss_weight: float = field(default=3.3, metadata={"help": "lambda (paper captioning: 3.3)"})
    freeze_clip: bool = field(default=True, metadata={"help": "freeze the CLIP towers (paper)"})


def main() -> None:
    parser = HfArgumentParser((CaptioningArguments, TrainingArguments))
    args, training_args = parser.parse_args_into_dataclasses()
    train = load_embedded_captioning()["train"] if args.embedded else load_rows(args.train_file)
    if args.embedded:
        from hbi_hf.data import build_clip_tokenizer

        model = HBIForCaptioning(demo_config(build_clip_tokenizer(), caption_loss_weight=args.caption_loss_weight))
    else:
        model = HBIForCaptioning.from_clip(
            args.clip_name_or_path,
            estimator_name_or_path=args.estimator_name_or_path,
            caption_loss_weight=args.caption_loss_weight,
        )
    if args.freeze_clip:
        freeze_clip(model)
    processor = build_processor(model.config)
    training_args.remove_unused_columns = False
    trainer = train_task_model(
        model, train, HBICaptioningCollator(processor), training_args, clip_learning_rate=training_args.learning_rate
    )
    trainer.save_model(training_args.output_dir)
    processor.save_pretrained(training_args.output_dir)
    print(f"saved to {training_args.output_dir}: trained on {len(train)} captions")


if __name__ == "__main__":
    main()
