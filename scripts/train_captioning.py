"""Train HBIForCaptioning (video captioning) with HBITrainer. The defaults are the paper's recipe
(`hbi_hf.task_training.CAPTIONING_RECIPE`): CLIP frozen, lr 5e-4, batch 64, 50 epochs.

    python scripts/train_captioning.py --train_file train.jsonl --output_dir runs/caption \
        --clip_name_or_path openai/clip-vit-base-patch32

Rows: {"video_id", "video_path", "caption"}, one per caption. `--embedded` trains on the embedded synthetic dataset
with the demo's small random model instead (offline). `--freeze_clip False` trains CLIP too, at
learning_rate * coef_lr. The batch is per process: on N processes pass --per_device_train_batch_size 64/N.
"""

from dataclasses import dataclass, field

from transformers import HfArgumentParser

from hbi_hf import HBIForCaptioning
from hbi_hf.data import HBICaptioningCollator, load_synthetic_captioning
from hbi_hf.demo import HBIDemoArguments, demo_config
from hbi_hf.output_folder import claim_output_dir
from hbi_hf.retrieval_data import build_retrieval_processor
from hbi_hf.task_training import CAPTIONING_RECIPE, load_rows, train_task_model
from hbi_hf.training import HBITrainingArguments


@dataclass
class CaptioningArguments:
    train_file: str | None = field(default=None, metadata={"help": "JSON lines of captioning rows"})
    embedded: bool = field(default=False, metadata={"help": "train on the embedded synthetic dataset (demo model)"})
    clip_name_or_path: str = field(default="openai/clip-vit-base-patch32", metadata={"help": "CLIP to start from"})
    estimator_name_or_path: str | None = field(default=None, metadata={"help": "trained Banzhaf estimator"})
    caption_loss_weight: float = field(default=3.3, metadata={"help": "lambda (paper captioning: 3.3)"})
    banzhaf_loss_weight: float = field(default=1.0, metadata={"help": "alpha (paper captioning: 1; no official code)"})
    distillation_loss_weight: float = field(
        default=1.0, metadata={"help": "beta (paper captioning: 1; no official code)"}
    )
    strict_data: bool = field(default=False, metadata={"help": "raise on a bad sample instead of skipping it"})


def main() -> None:
    parser = HfArgumentParser((CaptioningArguments, HBITrainingArguments))
    parser.set_defaults(**CAPTIONING_RECIPE)
    args, training_args = parser.parse_args_into_dataclasses()
    try:
        claim_output_dir(training_args.output_dir)
    except FileExistsError as error:
        parser.error(str(error))
    train = load_synthetic_captioning()["train"] if args.embedded else load_rows(args.train_file)
    overrides = dict(
        caption_loss_weight=args.caption_loss_weight,
        banzhaf_loss_weight=args.banzhaf_loss_weight,
        distillation_loss_weight=args.distillation_loss_weight,
    )
    if args.embedded:
        model = HBIForCaptioning(demo_config(HBIDemoArguments(), **overrides))
    else:
        model = HBIForCaptioning.from_clip(
            args.clip_name_or_path, estimator_name_or_path=args.estimator_name_or_path, **overrides
        )
    processor = build_retrieval_processor(model.config)
    trainer = train_task_model(model, train, HBICaptioningCollator(processor, strict=args.strict_data), training_args)
    trainer.save_model(training_args.output_dir)
    print(f"saved to {training_args.output_dir}: trained on {len(train)} captions")


if __name__ == "__main__":
    main()
