"""Multi-process training on the CPU with the commands docs/training.md gives: `torchrun ... --use_cpu` and
`accelerate launch --config_file configs/accelerate/multi_gpu.yaml ... --use_cpu`. Two processes train exactly what one
process trains on the same global batch (first logged loss and its parts, final weights), every process ends with the
same weights, and the sharded evaluation gives the figures of one process; torchrun without `--use_cpu` (no DDP) is
refused instead of training unsynchronised models, and `accelerate launch --cpu --num_processes 2`, which starts one
process, is detected."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_TEXT_CLIP_VOCABULARY, tiny_hbi_config
from safetensors.torch import load_file
from transformers import HfArgumentParser

from hbi_hf import HBIForRetrieval
from hbi_hf.data.synthetic import load_synthetic_retrieval
from hbi_hf.retrieval_data import build_retrieval_processor
from hbi_hf.retrieval_evaluation import evaluate_retrieval
from hbi_hf.training import (
    HBIDataArguments,
    HBIModelArguments,
    HBITrainingArguments,
    accelerate_launched_one_of_several_processes,
    train_retrieval,
)

TESTS = Path(__file__).parent
REPO = TESTS.parent
GLOBAL_BATCH = 4
LOGGED = ("loss", "contrastive_loss", "banzhaf_loss", "distillation_loss")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny HBI V2 over the CLIP vocabulary; its teacher is a fixed estimator, so the loss is a function of the batch
    (the Monte-Carlo teacher would draw different coalitions for different batch splits)."""
    torch.manual_seed(0)
    config = tiny_hbi_config(
        text_config=dict(TINY_TEXT_CLIP_VOCABULARY),
        banzhaf_teacher="estimator",
        estimator_config=dict(hidden_size=8, is_trained=True),
    )
    folder = tmp_path_factory.mktemp("distributed") / "model"
    HBIForRetrieval(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def captions_file(tiny_synthetic_root, tmp_path_factory):
    """The tiny embedded dataset as a user's folder of videos and captions file (train and test rows)."""
    splits = load_synthetic_retrieval(tiny_synthetic_root)
    path = tmp_path_factory.mktemp("captions") / "captions.jsonl"
    with path.open("w") as file:
        for split in ("train", "test"):
            for row in splits[split]:
                video = os.path.relpath(row["video_path"], tiny_synthetic_root)
                file.write(json.dumps({"video": video, "caption": row["caption"], "split": split}) + "\n")
    return path


def script_arguments(model_dir, root, captions_file, output_dir, per_device_batch: int) -> list[str]:
    """The options of scripts/train_retrieval.py for a 2-step run over a global batch of GLOBAL_BATCH."""
    return [
        "--model_name_or_path", str(model_dir), "--dataset_name", "folder",
        "--video_root", str(root), "--data_root", str(captions_file),
        "--output_dir", str(output_dir), "--do_train", "--do_eval",
        "--per_device_train_batch_size", str(per_device_batch), "--per_device_eval_batch_size", "2",
        "--max_steps", "2", "--logging_steps", "1", "--learning_rate", "1e-3", "--warmup_steps", "0",
        "--save_strategy", "no", "--report_to", "none", "--seed", "0", "--disable_tqdm", "true",
    ]  # fmt: skip


def launch(launcher: list[str], arguments: list[str], script: Path = TESTS / "distributed_worker.py"):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    command = [*launcher, str(script), *arguments]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)


@pytest.fixture(scope="module")
def one_process(model_dir, tiny_synthetic_root, captions_file, tmp_path_factory):
    """The one-process run with the whole global batch on every step, in this process (no process group)."""
    output_dir = tmp_path_factory.mktemp("one_process")
    parser = HfArgumentParser((HBIModelArguments, HBIDataArguments, HBITrainingArguments))
    arguments = script_arguments(model_dir, tiny_synthetic_root, captions_file, output_dir, GLOBAL_BATCH)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each launched process (OMP_NUM_THREADS=1): the same order of float reductions
    try:
        train_retrieval(*parser.parse_args_into_dataclasses(args=[*arguments, "--use_cpu"]))
    finally:
        torch.set_num_threads(threads)
    return output_dir


def first_logged(output_dir: Path) -> dict[str, float]:
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return {name: history[0][name] for name in LOGGED}


LAUNCHERS = {
    "torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
    "accelerate": [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file",
        str(REPO / "configs/accelerate/multi_gpu.yaml"), "--num_processes", "2", "--main_process_port", "0",
    ],
}  # fmt: skip


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_two_cpu_processes_train_what_one_process_trains_on_the_same_global_batch(
    launcher, model_dir, tiny_synthetic_root, captions_file, one_process, tmp_path
):
    arguments = script_arguments(model_dir, tiny_synthetic_root, captions_file, tmp_path, GLOBAL_BATCH // 2)
    result = launch(LAUNCHERS[launcher], [*arguments, "--use_cpu"])
    assert result.returncode == 0, result.stderr[-4000:]

    expected = first_logged(one_process)
    for name, value in first_logged(tmp_path).items():  # the loss parts are those of the global batch
        assert value == pytest.approx(expected[name], rel=1e-5, abs=1e-7), name

    ranks = [load_file(tmp_path / f"weights_rank{rank}.safetensors") for rank in range(2)]
    single = load_file(one_process / "model.safetensors")
    initial = load_file(model_dir / "model.safetensors")
    assert any(not torch.equal(single[name], initial[name]) for name in single)
    for name, weight in ranks[0].items():
        torch.testing.assert_close(ranks[1][name], weight, rtol=0, atol=0, msg=f"{name} differs between processes")
        if name in single:  # gradients averaged over processes = the gradient of the global batch
            # measured within 1e-6; without the gradient scaling of gather_with_local_grad they differ by 1.8e-3
            torch.testing.assert_close(weight, single[name], rtol=1e-4, atol=1e-5, msg=name)

    # the evaluation was sharded over the two processes: exactly what one process computes with the saved model
    trained = HBIForRetrieval.from_pretrained(tmp_path).eval()
    test_rows = load_synthetic_retrieval(tiny_synthetic_root)["test"]
    one = evaluate_retrieval(
        trained, test_rows, build_retrieval_processor(trained.config, str(tmp_path)), batch_size=2
    )
    for rank in range(2):
        sharded = json.loads((tmp_path / f"metrics_rank{rank}.json").read_text())
        assert {name: sharded[f"test_{name}"] for name in one} == one


def test_torchrun_without_use_cpu_on_a_cpu_machine_is_refused_naming_the_option(
    model_dir, tiny_synthetic_root, captions_file, tmp_path
):
    if torch.cuda.is_available():
        pytest.skip("with GPUs torchrun without --use_cpu is real DDP")
    arguments = script_arguments(model_dir, tiny_synthetic_root, captions_file, tmp_path, GLOBAL_BATCH // 2)
    result = launch(LAUNCHERS["torchrun"], arguments)
    assert result.returncode != 0
    assert "--use_cpu" in result.stderr and "would not be synchronised" in result.stderr
    assert not (tmp_path / "model.safetensors").exists()


def test_accelerate_launch_of_several_cpu_processes_that_starts_one_is_detected(tmp_path, monkeypatch):
    script = tmp_path / "probe.py"
    script.write_text(
        "from accelerate import PartialState\n"
        "from hbi_hf.training import accelerate_launched_one_of_several_processes\n"
        "print('processes', PartialState(cpu=True).num_processes, accelerate_launched_one_of_several_processes())\n"
    )
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2"]
    several = launch([*launcher, "--main_process_port", "0"], [], script)
    assert several.stdout.split() == ["processes", "1", "True"], several.stderr[-2000:]  # asked for 2, got 1
    for name in ("ACCELERATE_USE_CPU", "MASTER_ADDR", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert not accelerate_launched_one_of_several_processes()  # a plain `python script.py`
