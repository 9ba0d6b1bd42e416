"""`scripts/evaluate_retrieval.py` under `torchrun --nproc_per_node 2` on a CPU machine: the two processes split the
decoding (each video decoded by exactly one of them), exactly one process writes the results, the figures equal those
of one process, and an unreadable test video is left out and counted, once."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from conftest import TINY_TEXT_CLIP_VOCABULARY, tiny_hbi_config

from hbi_hf import HBIForRetrieval
from hbi_hf.data import load_video_folder
from hbi_hf.retrieval_data import build_retrieval_processor
from hbi_hf.retrieval_evaluation import evaluate_retrieval

TESTS = Path(__file__).parent


def test_two_cpu_processes_split_the_evaluation_and_one_writes_the_results(tiny_synthetic_root, tmp_path):
    torch.manual_seed(0)
    model_dir = tmp_path / "model"
    HBIForRetrieval(tiny_hbi_config(text_config=dict(TINY_TEXT_CLIP_VOCABULARY))).save_pretrained(model_dir)
    videos = tmp_path / "videos"
    videos.mkdir()
    rows = [json.loads(line) for line in (tiny_synthetic_root / "retrieval.jsonl").read_text().splitlines()]
    for row in rows:
        if row["split"] == "test":
            (videos / Path(row["video"]).name).symlink_to(tiny_synthetic_root / row["video"])
    (videos / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    captions = tmp_path / "captions.jsonl"
    lines = [{"video": Path(row["video"]).name, "caption": row["caption"]} for row in rows if row["split"] == "test"]
    lines.append({"video": "corrupt.mp4", "caption": "a red circle appears"})
    captions.write_text("".join(json.dumps({**line, "split": "test"}) + "\n" for line in lines))

    record_dir, output_dir = tmp_path / "record", tmp_path / "results"
    record_dir.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent / "src"), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(TESTS / "evaluate_worker.py"), str(record_dir),
        "--model_name_or_path", str(model_dir), "--dataset_name", "folder", "--video_root", str(videos),
        "--data_root", str(captions), "--batch_size", "1", "--output_dir", str(output_dir),
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]

    decoded = [set(json.loads((record_dir / f"decoded_rank{rank}.json").read_text())) for rank in range(2)]
    assert decoded[0] and decoded[1] and not decoded[0] & decoded[1]
    assert {Path(path).name for path in decoded[0] | decoded[1]} == {Path(line["video"]).name for line in lines}
    assert sorted(path.name for path in record_dir.glob("writer_rank*")) == ["writer_rank0"]
    assert result.stdout.count('"t2v_R@1"') == 1  # printed by one process

    metrics = json.loads((output_dir / "eval_results.json").read_text())["metrics"]
    assert (metrics["gallery_videos"], metrics["left_out_videos"], metrics["bad_input_unreadable_video"]) == (3, 1, 1)
    assert result.stderr.count("corrupt.mp4: unreadable video") == 1  # logged by one process
    model = HBIForRetrieval.from_pretrained(model_dir)
    dataset = load_video_folder(videos, captions)["test"]
    single = evaluate_retrieval(model, dataset, build_retrieval_processor(model.config, str(model_dir)), batch_size=1)
    for name, value in single.items():
        assert metrics[name] == value, name
