"""Train the Banzhaf-interaction estimator (spec §2.3) on Monte-Carlo labels (the paper's; --exact_labels: the exact
interactions) and report its held-out agreement with the exact interactions (--eval_num_samples N: N-sample labels).

Matrices come from exactly one source:
  --matrices FILE.safetensors           stored matrices (see hbi_hf.estimator_training.HBIBanzhafMatrices.load)
  --synthetic-matrices N                N random structured 32 x 12 matrices
  --model_name_or_path DIR --dataset_path DIR
                                        matched-pair similarities of a frozen HBI model over a processed dataset
                                        saved with `datasets.Dataset.save_to_disk`

Examples:
  OMP_NUM_THREADS=2 python scripts/train_estimator.py --synthetic-matrices 10000 --output_dir estimator \
      --num_train_epochs 3
  # more accurate and far faster than the paper's network: row and column features, no attention
  python scripts/train_estimator.py --synthetic-matrices 2222 --input_features row_column --use_attention false \
      --hidden_size 8 --num_train_epochs 20 --output_dir estimator
  # the fastest: the same with 1x1 kernels (a little less accurate)
  python scripts/train_estimator.py --synthetic-matrices 2222 --input_features row_column --use_attention false \
      --hidden_size 8 --kernel_size 1 --num_train_epochs 20 --output_dir estimator
"""

import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field

import datasets
from transformers import HfArgumentParser, TrainingArguments

from hbi_hf import HBIBanzhafEstimatorConfig
from hbi_hf.estimator_training import (
    HBIBanzhafMatrices,
    banzhaf_labels,
    matrices_from_model,
    synthetic_similarity_matrices,
    train_estimator,
)
from hbi_hf.output_folder import claim_output_dir

DEFAULTS = [
    "--use_cpu",
    "--report_to",
    "none",
    "--remove_unused_columns",
    "false",
    "--save_strategy",
    "no",
    "--learning_rate",
    "1e-2",
    "--lr_scheduler_type",
    "cosine",
    "--per_device_train_batch_size",
    "64",
    "--num_train_epochs",
    "5",
]


@dataclass
class EstimatorDataArguments:
    matrices: str | None = field(default=None, metadata={"help": "safetensors file of stored matrices"})
    synthetic_matrices: int | None = field(default=None, metadata={"help": "number of synthetic matrices"})
    model_name_or_path: str | None = field(default=None, metadata={"help": "frozen HBI model folder"})
    dataset_path: str | None = field(default=None, metadata={"help": "processed dataset (save_to_disk folder)"})
    save_matrices: str | None = field(default=None, metadata={"help": "also write the matrices to this file"})
    num_samples: int = field(default=100, metadata={"help": "Monte-Carlo samples per pair of the training labels"})
    exact_labels: bool = field(
        default=False, metadata={"help": "train on the exact interactions (closed form) instead of Monte-Carlo labels"}
    )
    eval_num_samples: int | None = field(
        default=None,
        metadata={"help": "Monte-Carlo samples of the held-out labels (default: their exact values, closed form)"},
    )
    logit_scale: float = field(default=1000.0, metadata={"help": "similarity scale of the game (official 1000)"})
    eval_fraction: float = field(default=0.1, metadata={"help": "held-out share of the matrices"})
    label_cache_dir: str = field(default="~/.cache/hbi_hf/banzhaf_labels", metadata={"help": "label cache"})
    normalise: bool = field(
        default=True,
        metadata={"help": "fit input standardisation and game-size label scaling (stored in the estimator config)"},
    )


@dataclass
class EstimatorModelArguments:
    hidden_size: int = field(default=64, metadata={"help": "channels of the convolutions and attention width"})
    kernel_size: int = field(default=3, metadata={"help": "kernel of the two convolutions"})
    input_features: str = field(
        default="similarity",
        metadata={
            "help": "'similarity' (the paper's single channel) or 'row_column' (each cell's gaps to the best, "
            "second, third best and mean of its word and its frame: more accurate, and fast with --use_attention "
            "false; fastest with --kernel_size 1)"
        },
    )
    use_attention: bool = field(default=True, metadata={"help": "self-attention over the cells (paper)"})


def load_matrices(args: EstimatorDataArguments, seed: int) -> HBIBanzhafMatrices:
    sources = [args.matrices is not None, args.synthetic_matrices is not None, args.model_name_or_path is not None]
    if sum(sources) != 1:
        raise SystemExit("give exactly one of --matrices, --synthetic-matrices, --model_name_or_path")
    if args.matrices is not None:
        return HBIBanzhafMatrices.load(args.matrices)
    if args.synthetic_matrices is not None:
        return synthetic_similarity_matrices(args.synthetic_matrices, seed=seed)
    if args.dataset_path is None:
        raise SystemExit("--model_name_or_path needs --dataset_path (a processed dataset saved with save_to_disk)")
    return matrices_from_model(args.model_name_or_path, datasets.load_from_disk(args.dataset_path))


def main() -> None:
    parser = HfArgumentParser((EstimatorDataArguments, EstimatorModelArguments, TrainingArguments))
    data_args, model_args, training_args = parser.parse_args_into_dataclasses(args=DEFAULTS + sys.argv[1:])
    try:
        claim_output_dir(training_args.output_dir)
    except FileExistsError as error:
        parser.error(str(error))
    matrices = load_matrices(data_args, training_args.seed)
    if data_args.save_matrices:
        matrices.save(data_args.save_matrices)
    num_eval = max(1, round(len(matrices) * data_args.eval_fraction))
    train, held_out = matrices[num_eval:], matrices[:num_eval]
    cache_dir = os.path.expanduser(data_args.label_cache_dir)
    train_samples = None if data_args.exact_labels else data_args.num_samples
    train_labels = banzhaf_labels(train, train_samples, data_args.logit_scale, training_args.seed, cache_dir)
    eval_labels = banzhaf_labels(
        held_out, data_args.eval_num_samples, data_args.logit_scale, training_args.seed + 1, cache_dir
    )
    config = HBIBanzhafEstimatorConfig(**dataclasses.asdict(model_args))
    _, metrics = train_estimator(
        train, train_labels, training_args, held_out, eval_labels, config=config, normalise=data_args.normalise
    )
    print(json.dumps({"train_matrices": len(train), "held_out_matrices": len(held_out), **metrics}, indent=2))


if __name__ == "__main__":
    main()
