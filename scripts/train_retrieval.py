"""Fine-tune HBI for text-video retrieval, then evaluate on the test split (see docs/training.md).

    python scripts/train_retrieval.py --dataset_name synthetic --output_dir outputs/synthetic --do_train --do_eval
    accelerate launch --num_processes 2 scripts/train_retrieval.py --dataset_name msrvtt --data_root data/msrvtt \\
        --per_device_train_batch_size 64 --output_dir outputs/msrvtt --do_train --do_eval
    torchrun --nproc_per_node 2 scripts/train_retrieval.py --use_cpu --dataset_name synthetic \
        --output_dir outputs/synthetic-2cpu --do_train --do_eval        # several CPU processes: torchrun + --use_cpu
"""

from transformers import HfArgumentParser

from hbi_hf.output_folder import claim_output_dir
from hbi_hf.training import HBIDataArguments, HBIModelArguments, HBITrainingArguments, train_retrieval


def main() -> None:
    parser = HfArgumentParser((HBIModelArguments, HBIDataArguments, HBITrainingArguments))
    try:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses()
        claim_output_dir(training_args.output_dir)
    except (ValueError, FileExistsError) as error:
        parser.error(str(error))
    train_retrieval(model_args, data_args, training_args)


if __name__ == "__main__":
    main()
