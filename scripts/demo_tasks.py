"""Demo: train video QA and captioning on the embedded synthetic dataset and compare with trivial baselines.

    python scripts/demo_tasks.py --task qa            # accuracy vs. always answering the majority answer
    python scripts/demo_tasks.py --task captioning    # CIDEr vs. always emitting the most frequent training caption

A small random model (`hbi_hf.task_training.demo_config`) over the real CLIP vocabulary, trained offline on a CPU.
"""

import json
from collections import Counter
from dataclasses import dataclass, field

import torch
from transformers import HfArgumentParser, TrainingArguments

from hbi_hf import HBIForCaptioning, HBIForVideoQA
from hbi_hf.caption_metrics import caption_metrics, require_java
from hbi_hf.data import build_clip_tokenizer
from hbi_hf.task_training import (
    HBICaptioningCollator,
    HBIVideoCollator,
    HBIVideoQACollator,
    answer_labels,
    build_answer_vocabulary,
    build_processor,
    demo_config,
    generate_captions,
    load_embedded_captioning,
    load_embedded_videoqa,
    predict_answers,
    references_per_video,
    train_task_model,
    videoqa_accuracy,
)


@dataclass
class DemoArguments:
    task: str = field(default="qa", metadata={"help": "qa or captioning"})
    output_dir: str = field(default="runs/demo_tasks")
    epochs: float = field(default=10.0)
    batch_size: int = field(default=8)
    learning_rate: float = field(default=5e-4)
    seed: int = field(default=0)


def training_arguments(args: DemoArguments) -> TrainingArguments:
    return TrainingArguments(
        output_dir=f"{args.output_dir}/{args.task}",
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        report_to="none",
        remove_unused_columns=False,
        save_strategy="no",
        logging_steps=10,
    )


def demo_qa(args: DemoArguments) -> dict:
    dataset = load_embedded_videoqa()
    label2id = build_answer_vocabulary(dataset["train"]["answer"])
    dataset = dataset.map(lambda row: {"label": answer_labels([row["answer"]], label2id)[0]})
    torch.manual_seed(args.seed)
    config = demo_config(
        build_clip_tokenizer(),
        banzhaf_loss_weight=2.0,
        label2id=label2id,
        id2label={i: a for a, i in label2id.items()},
    )
    model = HBIForVideoQA(config)
    collator = HBIVideoQACollator(build_processor(config))
    train_task_model(
        model, dataset["train"], collator, training_arguments(args), clip_learning_rate=args.learning_rate
    )
    predictions, labels = predict_answers(model, dataset["test"], collator)
    majority = label2id[Counter(dataset["train"]["answer"]).most_common(1)[0][0]]
    return {
        "hbi": videoqa_accuracy(predictions, labels),
        "majority_answer_baseline": videoqa_accuracy([majority] * len(labels), labels),
    }


def demo_captioning(args: DemoArguments) -> dict:
    require_java()
    dataset = load_embedded_captioning()
    tokenizer = build_clip_tokenizer()
    torch.manual_seed(args.seed)
    config = demo_config(tokenizer)
    model = HBIForCaptioning(config)
    processor = build_processor(config)
    train_task_model(
        model, dataset["train"], HBICaptioningCollator(processor), training_arguments(args), args.learning_rate
    )
    videos, references = references_per_video(dataset["test"])
    predictions = generate_captions(model, videos, HBIVideoCollator(processor), tokenizer, num_beams=3)
    constant = Counter(dataset["train"]["caption"]).most_common(1)[0][0]
    return {
        "hbi": caption_metrics(predictions, references),
        "constant_caption_baseline": caption_metrics({key: constant for key in references}, references),
        "examples": dict(list(predictions.items())[:3]),
    }


def main() -> None:
    (args,) = HfArgumentParser(DemoArguments).parse_args_into_dataclasses()
    tasks = {"qa": demo_qa, "captioning": demo_captioning}
    if args.task not in tasks:
        raise SystemExit(f"--task must be one of {sorted(tasks)}; got {args.task!r}")
    print(json.dumps(tasks[args.task](args), indent=2))


if __name__ == "__main__":
    main()
