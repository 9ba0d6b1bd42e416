"""Top-1 accuracy of a trained video QA model on a full test set.

    python scripts/evaluate_videoqa.py --model runs/qa --test_file test.jsonl

Every question counts: one whose answer is outside the model's answer vocabulary is counted as wrong, and their
number is printed. A question with an unreadable video or a blank question is left out and counted
(`left_out_questions`, `bad_input_<reason>`); `--strict_data` raises instead.
"""

import json
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from hbi_hf import AutoModelForVideoQuestionAnswering
from hbi_hf.data import HBIVideoQACollator, load_synthetic_qa
from hbi_hf.data.collators import bad_input_metrics
from hbi_hf.metrics import compute as compute_metric
from hbi_hf.retrieval_data import build_retrieval_processor
from hbi_hf.task_training import add_answer_labels, load_rows, predict_answers


@dataclass
class EvaluateVideoQAArguments:
    model: str = field(metadata={"help": "folder of a trained model"})
    test_file: str | None = field(default=None, metadata={"help": "JSON lines of QA rows"})
    embedded: bool = field(default=False, metadata={"help": "evaluate on the embedded synthetic test split"})
    batch_size: int = field(default=16)
    strict_data: bool = field(
        default=False, metadata={"help": "raise on an unreadable video or blank question instead of leaving it out"}
    )


def main() -> None:
    (args,) = HfArgumentParser(EvaluateVideoQAArguments).parse_args_into_dataclasses()
    model = AutoModelForVideoQuestionAnswering.from_pretrained(args.model)
    test = load_synthetic_qa()["test"] if args.embedded else load_rows(args.test_file)
    test = add_answer_labels(test, model.config.label2id)
    processor = build_retrieval_processor(model.config, args.model)
    collator = HBIVideoQACollator(processor, strict=args.strict_data, allow_empty_batch=True)
    predictions, labels = predict_answers(model, test, processor, args.batch_size, collator=collator)
    results = compute_metric("videoqa", predictions=predictions, references=labels)
    results.update(left_out_questions=len(test) - len(labels), **bad_input_metrics(collator.totals))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
