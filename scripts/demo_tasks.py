"""Train video QA or captioning on the embedded synthetic dataset on the CPU and compare with trivial baselines.

    python scripts/demo_tasks.py --task qa --output_dir outputs/demo-qa --init_from outputs/demo
        # accuracy vs. the majority answer and vs. the majority answer of each question type (ignores the video)
    python scripts/demo_tasks.py --task captioning --output_dir outputs/demo-captioning
        # BLEU-4 / METEOR / ROUGE-L / CIDEr vs. a constant caption

Sizes and schedule are the retrieval demo's options (`--help`); `--init_from` starts from a saved HBI checkpoint's
encoder instead (its sizes then apply). `make demo-qa` / `make demo-captioning` pass the settings documented in
docs/tasks.md.
"""

import json
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from hbi_hf.demo import HBIDemoArguments, run_captioning_demo, run_videoqa_demo
from hbi_hf.output_folder import claim_output_dir


@dataclass
class TaskDemoArguments:
    task: str = field(default="qa", metadata={"help": "qa or captioning"})
    num_beams: int = field(default=3, metadata={"help": "Beam width of caption generation."})


def main() -> None:
    parser = HfArgumentParser((TaskDemoArguments, HBIDemoArguments))
    task_args, args = parser.parse_args_into_dataclasses()
    try:
        claim_output_dir(args.output_dir)
    except FileExistsError as error:
        parser.error(str(error))
    if task_args.task == "qa":
        results = run_videoqa_demo(args)
    elif task_args.task == "captioning":
        results = run_captioning_demo(args, num_beams=task_args.num_beams)
    else:
        raise SystemExit(f"--task must be qa or captioning; got {task_args.task!r}")
    print(json.dumps(results, indent=2))
    print(f"Saved to {args.output_dir}.")


if __name__ == "__main__":
    main()
