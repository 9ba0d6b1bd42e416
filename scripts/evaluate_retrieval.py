"""Evaluate a saved HBI retrieval checkpoint: text-to-video and video-to-text R@1/5/10, Rsum, MdR, MnR.

python scripts/evaluate_retrieval.py --model_name_or_path outputs/msrvtt --dataset_name msrvtt --data_root data/msrvtt
accelerate launch --num_processes 2 scripts/evaluate_retrieval.py --model_name_or_path outputs/msrvtt ...
torchrun --nproc_per_node 2 scripts/evaluate_retrieval.py ...   (CPU: the processes share the encoding too)

An unreadable test video or a blank caption is left out and counted (`--strict_data` raises instead); the printed and
saved metrics say how many captions and videos were ranked and left out, and why.
"""

import json
from dataclasses import dataclass, field

import torch
from accelerate import PartialState
from transformers import HfArgumentParser

from hbi_hf.output_folder import claim_output_dir
from hbi_hf.retrieval_data import build_retrieval_processor, load_retrieval_dataset, select_split
from hbi_hf.retrieval_evaluation import evaluate_retrieval
from hbi_hf.training import HBIDataArguments, HBIModelArguments, build_retrieval_model, write_eval_results


@dataclass
class EvaluationArguments:
    batch_size: int = field(default=32, metadata={"help": "Items per encoding batch per process."})
    output_dir: str | None = field(default=None, metadata={"help": "Where to write eval_results.json."})


def main() -> None:
    parser = HfArgumentParser((HBIModelArguments, HBIDataArguments, EvaluationArguments))
    try:
        model_args, data_args, eval_args = parser.parse_args_into_dataclasses()
        if eval_args.output_dir is not None:
            claim_output_dir(eval_args.output_dir)
    except (ValueError, FileExistsError) as error:
        parser.error(str(error))
    if model_args.model_name_or_path is None:
        parser.error("--model_name_or_path (a saved HBI checkpoint) is required")
    state = PartialState(cpu=not torch.cuda.is_available())  # on a CPU machine, torchrun's processes split the work
    dataset = select_split(load_retrieval_dataset(data_args), data_args.test_split, "--test_split")
    if data_args.max_test_samples is not None:
        dataset = dataset.select(range(min(data_args.max_test_samples, len(dataset))))
    model = build_retrieval_model(model_args).to(state.device)
    processor = build_retrieval_processor(model.config, model_args.model_name_or_path)
    metrics = evaluate_retrieval(
        model,
        dataset,
        processor,
        eval_args.batch_size,
        data_args.eval_chunk_size,
        data_args.dual_softmax,
        state,
        strict=data_args.strict_data,
    )
    if state.is_main_process:
        print(json.dumps(metrics, indent=2))
        if eval_args.output_dir is not None:
            write_eval_results(eval_args.output_dir, metrics, data_args.dataset_name, data_args.test_split)


if __name__ == "__main__":
    main()
