"""Evaluation under `torchrun --nproc_per_node 2 ... --use_cpu` (gloo) in which the two processes pad their captions
and videos to different lengths (accelerate#2643): it neither hangs nor raises, and it gives what one process gives
with the usual padding, the evaluation loss included (it is the same for any number of processes)."""

import json
import sys
from pathlib import Path

import pytest
from test_distributed import captions_file, launch, model_dir  # noqa: F401 (fixtures)
from transformers import HfArgumentParser

from hbi_hf.training import HBIDataArguments, HBIModelArguments, HBITrainingArguments, train_retrieval

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def evaluation_arguments(model_dir, root, captions_file, output_dir) -> list[str]:  # noqa: F811
    """scripts/train_retrieval.py evaluating the test split (3 rows) in batches of 2: the processes' last batches
    differ in size."""
    return [
        "--model_name_or_path", str(model_dir), "--dataset_name", "folder",
        "--video_root", str(root), "--data_root", str(captions_file), "--output_dir", str(output_dir),
        "--do_eval", "--per_device_eval_batch_size", "2", "--report_to", "none", "--disable_tqdm", "true",
        "--use_cpu",
    ]  # fmt: skip


def test_two_processes_padding_differently_evaluate_as_one_process(
    model_dir,  # noqa: F811
    tiny_synthetic_root,
    captions_file,  # noqa: F811
    tmp_path,
):
    parser = HfArgumentParser((HBIModelArguments, HBIDataArguments, HBITrainingArguments))
    arguments = evaluation_arguments(model_dir, tiny_synthetic_root, captions_file, tmp_path / "one")
    one = train_retrieval(*parser.parse_args_into_dataclasses(args=arguments))

    arguments = evaluation_arguments(model_dir, tiny_synthetic_root, captions_file, tmp_path / "two")
    result = launch(TORCHRUN, arguments, script=Path(__file__).parent / "unequal_padding_worker.py")
    assert result.returncode == 0, result.stderr[-4000:]
    for rank in range(2):
        two = json.loads((tmp_path / "two" / f"metrics_rank{rank}.json").read_text())
        assert two["test_loss"] == pytest.approx(one["test_loss"], rel=1e-5)
        figures = [name for name in one if not name.endswith(("_loss", "_runtime", "per_second"))]
        assert {name: two[name] for name in figures} == {name: one[name] for name in figures}
