"""Train HBIForVideoQA (open-ended video QA) with HBITrainer (CLIP at learning_rate * coef_lr). The defaults are the
paper's recipe (`hbi_hf.task_training.VIDEOQA_RECIPE`): lr 1e-3 for the new modules, 1e-7 for CLIP, batch 32, 5 epochs.

    python scripts/train_videoqa.py --train_file train.jsonl --output_dir runs/qa \
        --clip_name_or_path openai/clip-vit-base-patch32

Rows: {"video_id", "video_path", "question", "answer"}. `--embedded` trains on the embedded synthetic dataset with the
demo's small random model instead (offline). The answer vocabulary is the `max_answers` most frequent training
answers; it is saved in the model config (`id2label`).
"""

from dataclasses import dataclass, field

from transformers import HfArgumentParser

from hbi_hf import HBIForVideoQA
from hbi_hf.data import HBIVideoQACollator, build_answer_vocabulary, load_synthetic_qa
from hbi_hf.demo import HBIDemoArguments, demo_config
from hbi_hf.output_folder import claim_output_dir
from hbi_hf.retrieval_data import build_retrieval_processor
from hbi_hf.task_training import (
    VIDEOQA_RECIPE,
    add_answer_labels,
    answer_vocabulary_fields,
    load_rows,
    train_task_model,
)
from hbi_hf.training import HBITrainingArguments


@dataclass
class VideoQAArguments:
    train_file: str | None = field(default=None, metadata={"help": "JSON lines of QA rows"})
    embedded: bool = field(default=False, metadata={"help": "train on the embedded synthetic dataset (demo model)"})
    clip_name_or_path: str = field(default="openai/clip-vit-base-patch32", metadata={"help": "CLIP to start from"})
    estimator_name_or_path: str | None = field(default=None, metadata={"help": "trained Banzhaf estimator"})
    max_answers: int = field(default=1000, metadata={"help": "answer vocabulary size (official: 1000)"})
    banzhaf_loss_weight: float = field(
        default=1.0, metadata={"help": "alpha, the official --skl (official MSRVTT-QA run: 1; the paper's text: 2)"}
    )
    distillation_loss_weight: float = field(
        default=2.0, metadata={"help": "beta, the official --kl (official MSRVTT-QA run: 2; the paper's text: 1)"}
    )
    qa_loss_weight: float = field(default=2.5, metadata={"help": "lambda (paper QA: 2.5)"})
    strict_data: bool = field(default=False, metadata={"help": "raise on a bad sample instead of skipping it"})


def main() -> None:
    parser = HfArgumentParser((VideoQAArguments, HBITrainingArguments))
    parser.set_defaults(**VIDEOQA_RECIPE)
    args, training_args = parser.parse_args_into_dataclasses()
    try:
        claim_output_dir(training_args.output_dir)
    except FileExistsError as error:
        parser.error(str(error))
    train = load_synthetic_qa()["train"] if args.embedded else load_rows(args.train_file)
    vocabulary = build_answer_vocabulary(train["answer"], args.max_answers)
    train = add_answer_labels(train, {answer: index for index, answer in enumerate(vocabulary)})
    overrides = dict(
        banzhaf_loss_weight=args.banzhaf_loss_weight,
        distillation_loss_weight=args.distillation_loss_weight,
        qa_loss_weight=args.qa_loss_weight,
        **answer_vocabulary_fields(vocabulary),
    )
    if args.embedded:
        model = HBIForVideoQA(demo_config(HBIDemoArguments(), **overrides))
    else:
        model = HBIForVideoQA.from_clip(
            args.clip_name_or_path, estimator_name_or_path=args.estimator_name_or_path, **overrides
        )
    processor = build_retrieval_processor(model.config)
    trainer = train_task_model(model, train, HBIVideoQACollator(processor, strict=args.strict_data), training_args)
    trainer.save_model(training_args.output_dir)
    print(f"saved to {training_args.output_dir}: {len(vocabulary)} answers, {len(train)} training questions")


if __name__ == "__main__":
    main()
