"""Hub sharing: push with the real huggingface_hub client to a local endpoint and pull back; offline loading from a
cache in the real Hub cache layout; the real Hub only behind the `hub` marker."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from hub_helpers import tiny_batch, tiny_hbi_config
from hub_server import FakeHub

from hbi_hf import HBIForRetrieval

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"


def _run_worker(action: str, workdir: Path, env: dict[str, str], *arguments: str) -> dict:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    environment.update(env, PYTHONPATH=os.pathsep.join([str(SRC), str(TESTS)]), HF_HUB_DISABLE_TELEMETRY="1")
    result = subprocess.run(
        [sys.executable, str(TESTS / "hub_worker.py"), action, str(workdir), *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _lay_out_cache(cache: Path, repo_id: str, folder: Path, commit: str) -> None:
    """The Hub cache format: models--org--name/{blobs/<hash>, snapshots/<commit>/<file> -> ../../blobs/<hash>,
    refs/main = <commit>}."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in folder.iterdir():
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copyfile(file, repo / "blobs" / digest)
        (snapshot / file.name).symlink_to(Path("..") / ".." / "blobs" / digest)


def test_push_with_the_real_client_and_pull_back(tmp_path):
    with FakeHub() as hub:
        observed = _run_worker(
            "push",
            tmp_path,
            {
                "HF_ENDPOINT": hub.endpoint,
                "HF_TOKEN": "hf_test",
                "HF_HUB_DISABLE_XET": "1",
                "HF_HUB_CACHE": str(tmp_path / "cache"),
            },
        )
    tiny = hub.repos["org/hbi-tiny"].files
    assert {"config.json", "model.safetensors", "README.md", "processor_config.json", "tokenizer.json"} <= set(tiny), (
        sorted(tiny)
    )
    assert {"config.json", "model.safetensors"} <= set(hub.repos["org/hbi-estimator"].files)

    card_repo = hub.repos["org/hbi-card"]
    assert len(card_repo.commits) == 1, "model, processor and card go in one commit"
    assert {"config.json", "model.safetensors", "README.md", "processor_config.json", "eval_results.json"} <= set(
        card_repo.files
    )
    card = card_repo.files["README.md"].decode()
    assert "| Text-to-Video Retrieval | R@1 | 1.5 |" in card and "Video-Text as Game Players" in card

    folder_repo = hub.repos["org/hbi-folder"].files
    assert len(hub.repos["org/hbi-folder"].commits) == 1, "folder and card go in one commit"
    assert "| Text-to-Video Retrieval | R@1 | 2.25 |" in folder_repo["README.md"].decode()
    assert not any(name.startswith("checkpoint-") or name.endswith(".bin") for name in folder_repo)

    for call in ("/api/repos/create", "/api/validate-yaml"):
        assert ("POST", call) in hub.requests
    assert any(m == "POST" and "/preupload/main" in p for m, p in hub.requests)
    assert any(m == "POST" and "/commit/main" in p for m, p in hub.requests)

    torch.testing.assert_close(torch.tensor(observed["pulled_logits"]), torch.tensor(observed["expected_logits"]))
    torch.testing.assert_close(torch.tensor(observed["pulled_card_logits"]), torch.tensor(observed["expected_logits"]))
    assert observed["estimator_match"]
    assert observed["processor_ids"] == observed["local_processor_ids"]


def test_from_pretrained_resolves_from_the_hub_cache_offline(tmp_path):
    torch.manual_seed(1)
    model = HBIForRetrieval(tiny_hbi_config(representation_reconstruction=False)).eval()
    model.save_pretrained(tmp_path / "saved")
    with torch.no_grad():
        expected = model(**tiny_batch(seed=2), return_loss=False).logits_per_text
    _lay_out_cache(tmp_path / "cache", "org/cached-hbi", tmp_path / "saved", commit=uuid.uuid4().hex + "abcdefgh")
    observed = _run_worker(
        "offline",
        tmp_path,
        {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_ENDPOINT": "http://127.0.0.1:9"},
    )
    assert observed["class"] == "HBIForRetrieval"
    torch.testing.assert_close(torch.tensor(observed["pulled_logits"]), expected)
    assert observed["uncached"] == "OSError"
    assert observed["push"] == "OfflineModeIsEnabled"
    _assert_push_refused_naming(observed["refused_push"], "offline mode (HF_HUB_OFFLINE=1 is set)")
    assert not (tmp_path / "output" / "README.md").exists()


def _hub_env(tmp_path: Path, endpoint: str) -> dict[str, str]:
    return {
        "HF_ENDPOINT": endpoint,
        "HF_TOKEN": "hf_test",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_CACHE": str(tmp_path / "cache"),
    }


def _index_figures(results: list[dict]) -> dict[str, float]:
    return {f"{r['task']['type']}/{m['type']}": m["value"] for r in results for m in r["metrics"]}


def test_trained_folder_round_trips_through_the_push_script(tmp_path, tiny_synthetic_root):
    """train_retrieval's output folder, pushed by scripts/push_to_hub.py with no other argument, reads back from the
    Hub with a card whose model-index figures are the results file's, and whose base_model is the CLIP it came
    from."""
    with FakeHub() as hub:
        observed = _run_worker("roundtrip", tmp_path, _hub_env(tmp_path, hub.endpoint), str(tiny_synthetic_root))
    local = observed["local_results"]
    assert observed["pushed_results"] == local
    assert local["dataset_name"] == "synthetic" and local["split"] == "test"
    assert not any(name.startswith(("test_", "eval_")) for name in local["metrics"])
    metadata = observed["card_metadata"]
    assert metadata["base_model"] == "org/tiny-clip"
    [entry] = metadata["model-index"]
    assert entry["name"] == "org/hbi-roundtrip"
    assert entry["results"] == local["model_index"]
    figures = _index_figures(entry["results"])
    assert len(figures) == 12, figures  # R@1/5/10, Rsum, MdR, MnR of both directions, nothing else
    for direction, task in (("t2v", "text-to-video-retrieval"), ("v2t", "video-to-text-retrieval")):
        assert figures[f"{task}/recall@1"] == local["metrics"][f"{direction}_R@1"]
        assert figures[f"{task}/mean_rank"] == local["metrics"][f"{direction}_MnR"]
    assert entry["results"][0]["dataset"]["type"] == "hbi-hf-synthetic"
    assert "| Text-to-Video Retrieval | R@1 |" in observed["card_text"]
    assert {"config.json", "model.safetensors", "eval_results.json", "README.md", "processor_config.json"} <= set(
        observed["hub_files"]
    )
    assert "training_args.bin" in observed["local_files"] and "training_args.bin" not in observed["hub_files"]
    assert "README.md" not in observed["local_files"], "the push must not write into the output folder"
    _assert_push_refused_naming(
        observed["refused_push"], "endpoint http://127.0.0.1:9 (HF_ENDPOINT) cannot be reached"
    )


def _assert_push_refused_naming(observations: dict, named: str) -> None:
    for way in ("push_to_hub", "script"):
        assert "cannot push to org/hbi-offline" in observations[way] and named in observations[way], observations[way]


@pytest.mark.hub
def test_push_and_pull_on_the_real_hub(tmp_path):
    """Needs network and HF_TOKEN with write access: `make test-hub`. Creates a private repo and deletes it."""
    token = os.environ.get("HF_TOKEN")
    if not token:
        pytest.skip("HF_TOKEN is not set")
    from huggingface_hub import HfApi

    from hbi_hf.hub import push_to_hub

    api = HfApi(token=token)
    repo_id = f"{api.whoami()['name']}/hbi-hf-test-{uuid.uuid4().hex[:8]}"
    model = HBIForRetrieval(tiny_hbi_config(representation_reconstruction=False)).eval()
    try:
        push_to_hub(repo_id, model, dataset_name="msrvtt", private=True, token=token)
        pulled = HBIForRetrieval.from_pretrained(repo_id, token=token, cache_dir=tmp_path).eval()
        batch = tiny_batch(seed=2)
        with torch.no_grad():
            torch.testing.assert_close(
                pulled(**batch, return_loss=False).logits_per_text, model(**batch, return_loss=False).logits_per_text
            )
    finally:
        api.delete_repo(repo_id, missing_ok=True)
