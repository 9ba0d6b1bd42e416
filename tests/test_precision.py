"""Half precision: every model class runs forward, loss and scoring in bf16 and fp16 (loaded with `dtype=` or cast
afterwards), scores are accumulated in float32, and a checkpoint saved in bf16 goes through evaluation and search.

The tiny models run *in* half precision on the CPU (torch's CPU kernels cover bf16 and fp16 matrix products)."""

import json

import numpy as np
import pytest
import torch
from conftest import TINY_TEXT_CLIP_VOCABULARY, tiny_batch, tiny_hbi_config

from hbi_hf import HBIForCaptioning, HBIForRetrieval, HBIForVideoQA, HBIModel, HBIProcessor, HBIVideoProcessor
from hbi_hf.cli import main
from hbi_hf.data import build_clip_tokenizer
from hbi_hf.data.synthetic import write_video
from hbi_hf.retrieval_evaluation import score_gallery
from hbi_hf.retrieval_metrics import compute_retrieval_metrics
from hbi_hf.search_index import load_hbi_model, rank_videos

HALF = [torch.bfloat16, torch.float16]
CASTS = {
    "to(dtype)": lambda model, dtype: model.to(dtype),
    "half()/bfloat16()": lambda model, dtype: model.half() if dtype == torch.float16 else model.bfloat16(),
}


def build(model_class, seed=0, **overrides):
    torch.manual_seed(seed)
    if model_class is HBIForVideoQA:
        overrides.setdefault("num_labels", 5)
    return model_class(tiny_hbi_config(**overrides)).eval()


def inputs_for(model_class, dtype, batch_size=4):
    batch = tiny_batch(batch_size)
    batch["pixel_values"] = batch["pixel_values"].to(dtype)
    if model_class is HBIForVideoQA:
        batch["labels"] = torch.arange(batch_size) % 5
    if model_class is HBIForCaptioning:
        batch["return_loss"] = True
    return batch


def upcast(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.float() if tensor.is_floating_point() else tensor


@pytest.mark.parametrize("cast", CASTS, ids=list(CASTS))
@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
@pytest.mark.parametrize("reconstruction", [True, False], ids=["HBI-V2", "HBI"])
def test_retrieval_forward_loss_and_backward_run_in_half_precision(dtype, cast, reconstruction):
    model = CASTS[cast](build(HBIForRetrieval, representation_reconstruction=reconstruction), dtype).train()
    output = model(**inputs_for(HBIForRetrieval, dtype))
    output.loss.backward()
    assert output.logits_per_text.dtype == torch.float32 and torch.isfinite(output.logits_per_text).all()
    assert output.loss.dtype == torch.float32 and torch.isfinite(output.loss)
    gradients = [p.grad for p in model.parameters() if p.grad is not None]
    assert gradients and all(g.dtype == dtype and torch.isfinite(g).all() for g in gradients)


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
@pytest.mark.parametrize("model_class", [HBIModel, HBIForRetrieval, HBIForVideoQA, HBIForCaptioning])
def test_every_model_class_runs_forward_and_loss_in_half_precision(model_class, dtype):
    model = build(model_class).to(dtype)
    batch = inputs_for(model_class, dtype)
    with torch.no_grad():
        output = model(**batch)
    logits = output.logits_per_text if model_class in (HBIModel, HBIForRetrieval) else output.logits
    assert torch.isfinite(logits).all()
    if model_class is not HBIModel:
        loss = model.train()(**batch).loss
        loss.backward()
        assert torch.isfinite(loss)


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
@pytest.mark.parametrize("reconstruction", [True, False], ids=["HBI-V2", "HBI"])
def test_scores_of_half_precision_features_are_accumulated_in_float32(dtype, reconstruction):
    """A half-precision model scores exactly as a float32 model with the same (rounded) weights scores the same
    (rounded) features: nothing in scoring runs in half precision, so it creates no ties float32 would not."""
    half = build(HBIModel, representation_reconstruction=reconstruction).to(dtype)
    full = build(HBIModel, representation_reconstruction=reconstruction).to(dtype).float()
    batch = inputs_for(HBIModel, dtype, batch_size=6)
    with torch.no_grad():
        text = half.get_text_features(batch["input_ids"], batch["attention_mask"])
        video = half.get_video_features(batch["pixel_values"], batch["video_mask"])
        assert text.level_tokens[0].dtype == dtype
        scores = half.score(text, video, chunk_size=4)
        reference = full.score(text.map(upcast), video.map(upcast), chunk_size=4)
        logits = half(**batch).logits_per_text
    assert scores.dtype == logits.dtype == torch.float32
    torch.testing.assert_close(scores, reference, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
def test_half_precision_scores_stay_close_to_float32(dtype):
    model = build(HBIModel)
    batch = inputs_for(HBIModel, torch.float32, batch_size=6)
    with torch.no_grad():
        reference = model(**batch).logits_per_text
        half_batch = dict(batch, pixel_values=batch["pixel_values"].to(dtype))
        scores = model.to(dtype)(**half_batch).logits_per_text
    assert (scores - reference).abs().max() < 0.05 * reference.abs().max()


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
def test_from_pretrained_with_dtype_loads_half_weights_and_scores(tmp_path, dtype):
    build(HBIForRetrieval).save_pretrained(tmp_path)
    model = HBIForRetrieval.from_pretrained(tmp_path, dtype=dtype).eval()
    assert model.dtype == dtype
    batch = inputs_for(HBIForRetrieval, dtype)
    with torch.no_grad():
        text = model.get_text_features(batch["input_ids"], batch["attention_mask"])
        video = model.get_video_features(batch["pixel_values"], batch["video_mask"])
        assert model.score(text, video).dtype == torch.float32


def test_checkpoint_saved_in_bf16_loads_in_bf16_and_runs_evaluation_and_search(tmp_path):
    """transformers 5 loads a checkpoint in the dtype it was saved in: evaluation and search must work on it."""
    build(HBIForRetrieval).to(torch.bfloat16).save_pretrained(tmp_path)
    model, teacher = load_hbi_model(tmp_path)
    assert model.dtype == teacher.dtype == torch.bfloat16
    batch = tiny_batch(6)  # float32 pixels from a processor: the towers cast them to their dtype
    with torch.inference_mode():
        text = model.get_text_features(batch["input_ids"], batch["attention_mask"])
        video = model.get_video_features(batch["pixel_values"], batch["video_mask"])
    scores = score_gallery(model, text, video, chunk_size=4)
    metrics = compute_retrieval_metrics(scores, torch.arange(6))
    assert scores.dtype == torch.float32 and 0 <= metrics["t2v_R@1"] <= 100
    for shortlist in (0, 4):
        top_scores, indices = rank_videos(model, text[:1], video, top_k=3, shortlist=shortlist)
        assert top_scores.dtype == torch.float32 and len(indices) == 3
        torch.testing.assert_close(top_scores, scores[0, indices])


def test_hbi_hf_index_and_search_run_on_a_checkpoint_saved_in_bf16(tmp_path, capsys):
    """The command line on a bf16 HBI V2 checkpoint with its real processor: index a folder, then search it."""
    model_dir, videos = tmp_path / "model", tmp_path / "videos"
    videos.mkdir()
    for name, level in (("dark.mp4", 40), ("bright.mp4", 200)):
        write_video(np.full((8, 32, 32, 3), level, dtype=np.uint8), videos / name, fps=4)
    config = tiny_hbi_config(text_config=dict(TINY_TEXT_CLIP_VOCABULARY))
    torch.manual_seed(0)
    HBIForRetrieval(config).to(torch.bfloat16).save_pretrained(model_dir)
    video_processor = HBIVideoProcessor(
        num_frames=6, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    HBIProcessor(video_processor, build_clip_tokenizer(), max_words=10).save_pretrained(model_dir)

    assert (
        main(["index", str(videos), "--model", str(model_dir), "--out", str(tmp_path / "index"), "--no-progress"]) == 0
    )
    capsys.readouterr()
    assert main(["search", str(tmp_path / "index"), "a bright square", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert sorted(hit["path"] for hit in hits) == ["bright.mp4", "dark.mp4"]
