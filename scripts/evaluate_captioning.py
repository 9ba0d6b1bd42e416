"""BLEU-4, METEOR, ROUGE-L and CIDEr of a trained captioning model (COCO caption evaluation code; needs Java).

    python scripts/evaluate_captioning.py --model runs/caption --test_file test.jsonl --num_beams 3

Rows: {"video_id", "video_path", "captions": [...]} (one per video) or {"video_id", "video_path", "caption"} (one per
reference; a video's rows are grouped). A row without them stops the run with its file, row and field named. CIDEr
needs several videos (its IDF); one video gives a warning. `--predictions_file` must not exist yet. An unreadable
video is left out and counted (`left_out_videos`, `bad_input_<reason>`); `--strict_data` raises instead.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from hbi_hf import AutoModelForVideoCaptioning
from hbi_hf.caption_metrics import require_java
from hbi_hf.data import HBIVideoCollator, load_synthetic_captioning
from hbi_hf.data.collators import bad_input_metrics
from hbi_hf.metrics import compute as compute_metric
from hbi_hf.retrieval_data import build_retrieval_processor
from hbi_hf.task_training import generate_captions, load_rows, references_per_video


@dataclass
class EvaluateCaptioningArguments:
    model: str = field(metadata={"help": "folder of a trained model"})
    test_file: str | None = field(default=None, metadata={"help": "JSON lines of captioning rows"})
    embedded: bool = field(default=False, metadata={"help": "evaluate on the embedded synthetic test split"})
    batch_size: int = field(default=16)
    num_beams: int = field(default=1)
    max_new_tokens: int | None = field(default=None, metadata={"help": "default: max_words - 1"})
    predictions_file: str | None = field(default=None, metadata={"help": "write the generated captions here"})
    strict_data: bool = field(
        default=False, metadata={"help": "raise on an unreadable video instead of leaving it out"}
    )


def main() -> None:
    (args,) = HfArgumentParser(EvaluateCaptioningArguments).parse_args_into_dataclasses()
    if args.test_file is None and not args.embedded:
        raise ValueError("give --test_file (JSON lines of captioning rows) or --embedded")
    require_java()
    if args.predictions_file and Path(args.predictions_file).exists():
        raise FileExistsError(f"--predictions_file {args.predictions_file} exists; give a new path")
    model = AutoModelForVideoCaptioning.from_pretrained(args.model)
    if args.embedded:
        videos, references = references_per_video(load_synthetic_captioning()["test"], "the embedded test split")
    else:
        videos, references = references_per_video(load_rows(args.test_file), args.test_file)
    processor = build_retrieval_processor(model.config, args.model)
    generate_kwargs = {"num_beams": args.num_beams}
    if args.max_new_tokens is not None:
        generate_kwargs["max_new_tokens"] = args.max_new_tokens
    collator = HBIVideoCollator(processor, strict=args.strict_data, return_ids=True, allow_empty_batch=True)
    predictions = generate_captions(model, videos, processor, args.batch_size, collator=collator, **generate_kwargs)
    if args.predictions_file:
        with open(args.predictions_file, "w") as handle:
            json.dump(predictions, handle, indent=2)
    video_ids = [video_id for video_id in references if video_id in predictions]  # unreadable videos left out
    scores = compute_metric(
        "captioning",
        predictions=[predictions[video_id] for video_id in video_ids],
        references=[references[video_id] for video_id in video_ids],
    )
    scores.update(left_out_videos=len(references) - len(video_ids), **bad_input_metrics(collator.totals))
    print(json.dumps(scores, indent=2))


if __name__ == "__main__":
    main()
