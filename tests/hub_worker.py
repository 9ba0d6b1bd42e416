"""Runs in a subprocess of tests/test_hub.py, so that the Hub environment variables (read by huggingface_hub at
import) take effect: `python hub_worker.py push|offline|roundtrip WORKDIR [DATA_ROOT]`. Prints one JSON
line of observations."""

import importlib.util
import json
import sys
from pathlib import Path

import torch
from conftest import TINY_TEXT_CLIP_VOCABULARY, TINY_VISION
from hub_helpers import tiny_batch, tiny_hbi_config
from huggingface_hub import ModelCard, hf_hub_download, list_repo_files
from transformers import AutoProcessor, CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

from hbi_hf import AutoModelForVideoTextRetrieval, HBIBanzhafEstimator, HBIBanzhafEstimatorConfig, HBIForRetrieval
from hbi_hf.hub import HBIHubUnreachableError, push_to_hub
from hbi_hf.training import HBIDataArguments, HBIModelArguments, HBITrainingArguments, train_retrieval

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


def push_script():
    spec = importlib.util.spec_from_file_location("push_script", REPO_ROOT / "scripts/push_to_hub.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


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
    push_script().main(["--folder", str(folder), "--repo_id", "org/hbi-folder", "--dataset_name", "msrvtt"])

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
    observations["refused_push"] = refused_push(workdir)
    return observations


def refused_push(workdir: Path) -> dict:
    """Both ways of pushing, where the Hub cannot be reached (offline mode or no endpoint): the messages."""
    model = HBIForRetrieval(tiny_hbi_config(representation_reconstruction=False))
    model.save_pretrained(workdir / "output")
    observations = {}
    try:
        push_to_hub("org/hbi-offline", model, dataset_name="msrvtt")
        observations["push_to_hub"] = "pushed"
    except HBIHubUnreachableError as error:
        observations["push_to_hub"] = str(error)
    try:
        push_script().main(
            ["--folder", str(workdir / "output"), "--repo_id", "org/hbi-offline", "--dataset_name", "msrvtt"]
        )
        observations["script"] = "pushed"
    except SystemExit as error:
        observations["script"] = str(error.code)
    return observations


def roundtrip(workdir: Path, data_root: str) -> dict:
    """A CLIP on the Hub; a few training steps from it with the training script's function, evaluation into the
    output folder; the push script on that folder; and what the Hub then holds."""
    torch.manual_seed(0)
    clip_config = CLIPConfig(text_config=TINY_TEXT_CLIP_VOCABULARY, vision_config=TINY_VISION, projection_dim=32)
    CLIPModel(clip_config).push_to_hub("org/tiny-clip")
    output_dir = workdir / "run"
    model_args = HBIModelArguments(
        clip_name_or_path="org/tiny-clip",
        num_frames=4,
        max_words=12,
        video_cluster_counts=[2, 1],
        text_cluster_counts=[4, 2],
    )
    data_args = HBIDataArguments(dataset_name="synthetic", data_root=data_root)
    training_args = HBITrainingArguments(
        output_dir=str(output_dir),
        do_train=True,
        do_eval=True,
        max_steps=2,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        use_cpu=True,
        save_strategy="no",
        report_to="none",
        dataloader_num_workers=0,
        seed=0,
    )
    train_retrieval(model_args, data_args, training_args)
    local_files = sorted(path.name for path in output_dir.iterdir())
    push_script().main(["--folder", str(output_dir), "--repo_id", "org/hbi-roundtrip"])
    card = ModelCard.load("org/hbi-roundtrip")
    with open(hf_hub_download("org/hbi-roundtrip", "eval_results.json")) as handle:
        pushed_results = json.load(handle)
    return {
        "local_files": local_files,
        "local_results": json.loads((output_dir / "eval_results.json").read_text()),
        "hub_files": sorted(list_repo_files("org/hbi-roundtrip")),
        "pushed_results": pushed_results,
        "card_metadata": card.data.to_dict(),
        "card_text": card.text,
        "refused_push": refused_push_to("http://127.0.0.1:9", workdir),
    }


def refused_push_to(endpoint: str, workdir: Path) -> dict:
    """[`refused_push`] with the Hub client pointed at `endpoint` (read by every `HfApi` made afterwards)."""
    from huggingface_hub import constants

    constants.ENDPOINT = endpoint
    return refused_push(workdir)


if __name__ == "__main__":
    action, workdir = sys.argv[1], Path(sys.argv[2])
    actions = {"push": push, "offline": offline, "roundtrip": roundtrip}
    print(json.dumps(actions[action](workdir, *sys.argv[3:])))
