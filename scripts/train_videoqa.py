"""Train HBIForVideoQA (open-ended video QA) with the Trainer.

    python scripts/train_videoqa.py --train_file train.jsonl --output_dir runs/qa \
        --clip_name_or_path openai/clip-vit-base-patch32 --num_train_epochs 5 --per_device_train_batch_size 32

Rows: {"video_id", "video_path", "question", "answer"}. `--embedded` trains on the embedded synthetic dataset with a
small random model instead (offline demo). The answer vocabulary is the `max_answers` most frequent training answers;
it is saved in the model config (`id2label`).
"""

from dataclasses import dataclass, field

from transformers import HfArgumentParser, TrainingArguments

from hbi_hf import HBIForVideoQA
from hbi_hf.task_training import (
    HBIVideoQACollator,
    answer_labels,
    build_answer_vocabulary,
    build_processor,
    demo_config,
    load_embedded_videoqa,
    load_rows,
    train_task_model,
)


@dataclass
class VideoQAArguments:
    train_file: str | None = field(default=None, metadata={"help": "JSON lines of QA rows"})
    embedded: bool = field(default=False, metadata={"help": "train on the embedded synthetic dataset (demo model)"})
    clip_name_or_path: str = field(default="openai/clip-vit-base-patch32", metadata={"help": "CLIP to start from"})
    estimator_name_or_path: str | None = field(default=None, metadata={"help": "trained Banzhaf estimator"})
    max_answers: int = field(default=1000, metadata={"help": "answer vocabulary size (official: 1000)"})
    banzhaf_loss_weight: float = field(default=2.0, metadata={"help": "alpha (paper QA: 2.0)"})
    distillation_loss_weight: float = field(default=1.0, metadata={"help": "beta (paper QA: 1.0)"})
    qa_loss_weight: float = field(default=2.5, metadata={"help": "lambda (paper QA: 2.5)"})
    clip_learning_rate: float = field(default=1e-7, metadata={"help": "learning rate of the CLIP towers"})


def main() -> None:
    args, training_args = HfArgumentParser((VideoQAArguments, TrainingArguments)).parse_args_into_dataclasses()
    train = load_embedded_videoqa()["train"] if args.embedded else load_rows(args.train_file)
    label2id = build_answer_vocabulary(train["answer"], args.max_answers)
    train = train.map(lambda row: {"label": answer_labels([row["answer"]], label2id)[0]})
    overrides = dict(
        banzhaf_loss_weight=args.banzhaf_loss_weight,
        distillation_loss_weight=args.distillation_loss_weight,
        qa_loss_weight=args.qa_loss_weight,
        label2id=label2id,
        id2label={i: a for a, i in label2id.items()},
    )
    if args.embedded:
        from hbi_hf.data import build_clip_tokenizer

        model = HBIForVideoQA(demo_config(build_clip_tokenizer(), **overrides))
    else:
        model = HBIForVideoQA.from_clip(
            args.clip_name_or_path, estimator_name_or_path=args.estimator_name_or_path, **overrides
        )
    processor = build_processor(model.config)
    training_args.remove_unused_columns = False
    trainer = train_task_model(
        model, train, HBIVideoQACollator(processor), training_args, clip_learning_rate=args.clip_learning_rate
    )
    trainer.save_model(training_args.output_dir)
    processor.save_pretrained(training_args.output_dir)
    print(f"saved to {training_args.output_dir}: {len(label2id)} answers, {len(train)} training questions")


if __name__ == "__main__":
    main()
