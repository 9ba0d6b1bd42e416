"""BLEU-4, METEOR, ROUGE-L and CIDEr of a trained captioning model (COCO caption evaluation code; needs Java).

    python scripts/evaluate_captioning.py --model runs/caption --test_file test.jsonl --num_beams 3

Rows: {"video_id", "video_path", "caption"} (one per reference) or {"video_id", "video_path", "captions": [...]}.
"""

import json
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from hbi_hf import AutoModelForVideoCaptioning
from hbi_hf.caption_metrics import caption_metrics, require_java
from hbi_hf.data import load_synthetic_captioning
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


def main() -> None:
    (args,) = HfArgumentParser(EvaluateCaptioningArguments).parse_args_into_dataclasses()
    require_java()
    model = AutoModelForVideoCaptioning.from_pretrained(args.model)
    test = load_synthetic_captioning()["test"] if args.embedded else load_rows(args.test_file)
    videos, references = references_per_video(test)
    processor = build_retrieval_processor(model.config, args.model)
    generate_kwargs = {"num_beams": args.num_beams}
    if args.max_new_tokens is not None:
        generate_kwargs["max_new_tokens"] = args.max_new_tokens
    predictions = generate_captions(model, videos, processor, args.batch_size, **generate_kwargs)
    if args.predictions_file:
        with open(args.predictions_file, "w") as handle:
            json.dump(predictions, handle, indent=2)
    print(json.dumps(caption_metrics(predictions, references), indent=2))


if __name__ == "__main__":
    main()
