"""Runs in a subprocess of tests/test_hub.py, so that the Hub environment variables (read by huggingface_hub at
import) take effect: `python hub_worker.py push|offline WORKDIR`. Prints one JSON line of observations."""

import importlib.util
import json
import sys
from pathlib import Path

import torch
from hub_helpers import tiny_batch, tiny_hbi_config
from transformers import AutoProcessor, CLIPImageProcessor, CLIPProcessor, CLIPTokenizer

from hbi_hf import AutoModelForVideoTextRetrieval, HBIBanzhafEstimator, HBIBanzhafEstimatorConfig, HBIForRetrieval
from hbi_hf.hub import push_to_hub

REPO_ROOT = Path(__file__).resolve().parents[1]


def tiny_processor(folder: Path) -> CLIPProcessor:
    """A CLIP processor with a 6-word vocabulary, built offline."""
    folder.mkdir(parents=True, exist_ok=True)
    words = ["a</w>", "cat</w>", "dog</w>", "runs</w>"]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    return CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32), tokenizer=tokenizer
    )


def logits(model) -> list[list[float]]:
    with torch.no_grad():
        return model.eval()(**tiny_batch(seed=2), return_loss=False).logits_per_text.tolist()


def push(workdir: Path) -> dict:
    torch.manual_seed(0)
    model = HBIForRetrieval(tiny_hbi_config(representation_reconstruction=False))
    estimator = HBIBanzhafEstimator(HBIBanzhafEstimatorConfig(hidden_size=8))
    processor = tiny_processor(workdir / "tokenizer")

    model.push_to_hub("org/hbi-tiny")
    processor.push_to_hub("org/hbi-tiny")
    estimator.push_to_hub("org/hbi-estimator")
    push_to_hub("org/hbi-card", model, processor, dataset_name="msrvtt", eval_results={"t2v_R@1": 1.5})

    folder = workdir / "output"
    model.save_pretrained(folder)
    (folder / "eval_results.json").write_text(json.dumps({"t2v_R@1": 2.25}))
    (folder / "checkpoint-1").mkdir()
    (folder / "checkpoint-1" / "optimizer.pt").write_bytes(b"not for the hub")
    (folder / "training_args.bin").write_bytes(b"pickle")
    spec = importlib.util.spec_from_file_location("push_script", REPO_ROOT / "scripts/push_to_hub.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--folder", str(folder), "--repo_id", "org/hbi-folder", "--dataset_name", "msrvtt"])

    pulled = AutoModelForVideoTextRetrieval.from_pretrained("org/hbi-tiny")
    pulled_card_model = AutoModelForVideoTextRetrieval.from_pretrained("org/hbi-card")
    pulled_estimator = HBIBanzhafEstimator.from_pretrained("org/hbi-estimator")
    pulled_processor = AutoProcessor.from_pretrained("org/hbi-card")
    similarity = torch.randn(2, 4, 3)
    with torch.no_grad():
        estimator_match = torch.allclose(pulled_estimator(similarity).interaction, estimator(similarity).interaction)
    return {
        "expected_logits": logits(model),
        "pulled_logits": logits(pulled),
        "pulled_card_logits": logits(pulled_card_model),
        "estimator_match": estimator_match,
        "processor_ids": pulled_processor.tokenizer("a cat runs")["input_ids"],
        "local_processor_ids": processor.tokenizer("a cat runs")["input_ids"],
    }


def offline(workdir: Path) -> dict:
    from huggingface_hub.errors import OfflineModeIsEnabled

    model = AutoModelForVideoTextRetrieval.from_pretrained("org/cached-hbi")
    observations = {"pulled_logits": logits(model), "class": type(model).__name__}
    try:
        AutoModelForVideoTextRetrieval.from_pretrained("org/not-in-cache")
        observations["uncached"] = "loaded"
    except OSError as error:
        observations["uncached"] = type(error).__name__
    try:
        model.push_to_hub("org/cached-hbi")
        observations["push"] = "pushed"
    except OfflineModeIsEnabled as error:
        observations["push"] = type(error).__name__
    return observations


if __name__ == "__main__":
    action, workdir = sys.argv[1], Path(sys.argv[2])
    print(json.dumps({"push": push, "offline": offline}[action](workdir)))
