"""Two CPU processes (torchrun, gloo): the loss uses the global batch, sharded evaluation equals one process, and
training runs to a checkpoint that loads."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from retrieval_standins import StandInCollator, StandInProcessor, retrieval_rows

from hbi_hf import HBIForRetrieval
from hbi_hf.retrieval_evaluation import evaluate_retrieval

TESTS = Path(__file__).parent


def test_two_process_training_uses_the_global_batch_and_saves_a_loadable_checkpoint(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent / "src"), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(TESTS / "distributed_worker.py"), str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]

    for rank in range(2):
        assert json.loads((tmp_path / f"done_rank{rank}.json").read_text())["global_step"] == 2

    model = HBIForRetrieval.from_pretrained(tmp_path / "initial").eval()
    with torch.no_grad():
        single = model(**StandInCollator(StandInProcessor())(list(retrieval_rows(8))), return_loss=True)
    ranks = [json.loads((tmp_path / f"loss_rank{rank}.json").read_text()) for rank in range(2)]
    for name in ("contrastive_loss", "distillation_loss"):  # computed on the gathered global batch
        for parts in ranks:
            torch.testing.assert_close(parts[name], float(single[name]), rtol=1e-4, atol=1e-5)
    # L_I is a mean over matched pairs, each process taking its own: equal halves average to the global mean
    torch.testing.assert_close(
        sum(parts["banzhaf_loss"] for parts in ranks) / 2, float(single.banzhaf_loss), rtol=1e-4, atol=1e-6
    )

    expected = evaluate_retrieval(model, retrieval_rows(5, captions_per_video=2), StandInProcessor(), batch_size=2)
    for rank in range(2):
        assert json.loads((tmp_path / f"metrics_rank{rank}.json").read_text()) == expected

    checkpoint = HBIForRetrieval.from_pretrained(tmp_path / "run" / "checkpoint-2")
    assert not torch.equal(checkpoint.hbi.levels[0].text_weight.fc1.weight, model.hbi.levels[0].text_weight.fc1.weight)
