"""Retrieval in half precision: what bf16 / fp16 weights change in R@1 and MdR, and what they cost in scoring time.

    python benchmarks/precision.py --model outputs/demo      # a trained model on the embedded dataset's test split
    python benchmarks/precision.py                           # ViT-B/32 shapes, a 1000 x 1000 gallery of features

With `--model`, the saved model is cast to each precision (`model.to(dtype)`), the test split of the embedded
synthetic dataset (or `--data_root`) is encoded by each, and each scores its own features; without it, a ViT-B/32-wide
HBI V2 scorer scores synthetic gallery features (each text's words are noisy copies of its video's frames) stored in
each precision. Scoring always accumulates in float32 (`HBIModel.level_inputs`); the table shows what the rounding of
weights and features changes. Printed per precision: t2v / v2t R@1 and MdR with their difference from fp32, texts
whose best video differs from fp32's, texts whose best score is tied, and the best of `--repeats`
scoring times, the precisions interleaved. With `--model`, also the time to encode the gallery (one pass).
"""

import argparse
import copy
import time
from functools import partial

import torch

from hbi_hf import HBIConfig, HBIModel
from hbi_hf.modeling_hbi import HBIModalityFeatures, HBITextFeatures, HBIVideoFeatures
from hbi_hf.retrieval_metrics import compute_retrieval_metrics

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TEXT_TOKENS, VIDEO_TOKENS, DIM = (32, 16, 4), (12, 6, 2), 512


def interleaved_best_times(jobs: dict, repeats: int) -> tuple[dict[str, float], dict]:
    """Best wall time of each job over `repeats` rounds after one warm-up round, the jobs interleaved within each
    round (so that a machine whose load changes during the run slows every precision alike), and each job's result."""
    results = {name: job() for name, job in jobs.items()}
    best = dict.fromkeys(jobs, float("inf"))
    for _ in range(repeats):
        for name, job in jobs.items():
            start = time.perf_counter()
            results[name] = job()
            best[name] = min(best[name], time.perf_counter() - start)
    return best, results


def cast_features(features: HBIModalityFeatures, dtype: torch.dtype) -> HBIModalityFeatures:
    return features.map(lambda tensor: tensor.to(dtype) if tensor.is_floating_point() else tensor)


def synthetic_gallery(model: HBIModel, n: int, noise: float, seed: int = 0):
    """Features of `n` videos and `n` captions (caption i of video i): frames are random, each word is a frame of
    its video (word j copies frame j mod 12) plus Gaussian noise of `noise` times a frame's scale."""
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randn(n, VIDEO_TOKENS[0], DIM, generator=generator)
    words = frames[:, torch.arange(TEXT_TOKENS[0]) % VIDEO_TOKENS[0]]
    words = words + noise * torch.randn(words.shape, generator=generator)
    lengths = torch.randint(8, TEXT_TOKENS[0] + 1, (n,), generator=generator)
    word_mask = torch.arange(TEXT_TOKENS[0]) < lengths.unsqueeze(1)
    features = []
    for modality, first, mask, cls in (
        ("text", words * word_mask.unsqueeze(-1), word_mask, HBITextFeatures),
        ("video", frames, torch.ones(n, VIDEO_TOKENS[0], dtype=torch.bool), HBIVideoFeatures),
    ):
        counts = TEXT_TOKENS if modality == "text" else VIDEO_TOKENS
        # coarser levels: means of consecutive tokens, as merged tokens would be
        tokens = [first] + [first[:, : counts[0] // c * c].unflatten(1, (c, -1)).mean(2) for c in counts[1:]]
        masks = [mask] + [torch.ones(n, c, dtype=torch.bool) for c in counts[1:]]
        with torch.no_grad():
            weight_logits, gate_logits = [], []
            for level, level_tokens in enumerate(tokens):
                module = model.levels[level]
                weight_logits.append((module.text_weight if modality == "text" else module.video_weight)(level_tokens))
                gate_logits.append(module.reconstruction.gate_logits(level_tokens, modality))
        global_embeddings = first[torch.arange(n), lengths - 1] if modality == "text" else first.mean(1)
        features.append(
            cls(
                level_tokens=tuple(tokens),
                level_masks=tuple(masks),
                level_weight_logits=tuple(weight_logits),
                level_gate_logits=tuple(gate_logits),
                global_embeddings=global_embeddings,
                cluster_assignments=(),
            )
        )
    return features[0], features[1], torch.arange(n)


def scorer(seed: int = 0) -> HBIModel:
    """An HBI V2 scorer at ViT-B/32 width, entity level (the default inference score); tiny towers never run."""
    tower = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=1)
    config = HBIConfig(
        text_config=tower, vision_config={**tower, "image_size": 32, "patch_size": 16}, projection_dim=DIM
    )
    torch.manual_seed(seed)
    return HBIModel(config).eval()


def run_synthetic(args) -> dict[str, dict]:
    base = scorer()
    text, video, text_to_video = synthetic_gallery(base, args.n, args.noise)
    jobs = {}
    for name, dtype in PRECISIONS.items():
        model = copy.deepcopy(base).to(dtype)
        features = cast_features(text, dtype), cast_features(video, dtype)
        jobs[name] = partial(model.score, *features, chunk_size=args.chunk_size)
    with torch.inference_mode():
        seconds, scores = interleaved_best_times(jobs, args.repeats)
    return {name: dict(scores=scores[name], text_to_video=text_to_video, seconds=seconds[name]) for name in jobs}


def run_model(args) -> dict[str, dict]:
    from transformers import AutoProcessor

    import hbi_hf  # noqa: F401 - registers the Auto classes
    from hbi_hf.retrieval_data import synthetic_retrieval_splits
    from hbi_hf.retrieval_evaluation import HBIRetrievalGallery, encode_gallery
    from hbi_hf.search_index import load_hbi_model

    base = load_hbi_model(args.model)[0].float()
    processor = AutoProcessor.from_pretrained(args.model)
    gallery = HBIRetrievalGallery.from_dataset(synthetic_retrieval_splits(args.data_root)["test"])
    jobs, encoding, galleries = {}, {}, {}
    for name, dtype in PRECISIONS.items():
        model = copy.deepcopy(base).to(dtype)
        start = time.perf_counter()
        encoded = encode_gallery(model, processor, gallery, batch_size=16)
        encoding[name] = time.perf_counter() - start
        galleries[name] = encoded.gallery
        jobs[name] = partial(model.score, encoded.text_features, encoded.video_features, chunk_size=args.chunk_size)
    with torch.inference_mode():
        seconds, scores = interleaved_best_times(jobs, args.repeats)
    return {
        name: dict(
            scores=scores[name],
            text_to_video=galleries[name].text_to_video,
            seconds=seconds[name],
            encoding=encoding[name],
        )
        for name in jobs
    }


def report(results: dict[str, dict]) -> None:
    reference = results["fp32"]
    reference_metrics = compute_retrieval_metrics(reference["scores"], reference["text_to_video"])
    reference_best = reference["scores"].argmax(1)
    n_text, n_video = reference["scores"].shape
    print(f"{n_text} captions x {n_video} videos; differences are vs fp32\n")
    header = (
        f"{'precision':<9} {'t2v R@1':>8} {'diff':>6} {'t2v MdR':>8} {'diff':>6} {'v2t R@1':>8} {'diff':>6} "
        f"{'v2t MdR':>8} {'diff':>6} {'top-1 changed':>13} {'tied top-1':>10} {'score dtype':>11} {'scoring s':>9}"
    )
    if "encoding" in reference:
        header += f" {'encoding s':>10}"
    print(header)
    for name, result in results.items():
        metrics = compute_retrieval_metrics(result["scores"], result["text_to_video"])
        scores = result["scores"]
        top2 = scores.topk(2, dim=1).values
        tied = int((top2[:, 0] == top2[:, 1]).sum())
        changed = int((scores.argmax(1) != reference_best).sum())
        row = f"{name:<9}"
        for key in ("t2v_R@1", "t2v_MdR", "v2t_R@1", "v2t_MdR"):
            row += f" {metrics[key]:>8.2f} {metrics[key] - reference_metrics[key]:>+6.2f}"
        row += f" {changed:>13d} {tied:>10d} {str(scores.dtype).removeprefix('torch.'):>11} {result['seconds']:>9.3f}"
        if "encoding" in result:
            row += f" {result['encoding']:>10.1f}"
        print(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="A saved HBIModel / HBIForRetrieval with its processor (e.g. outputs/demo).")
    parser.add_argument("--data_root", help="With --model: the synthetic dataset folder (default: the cache).")
    parser.add_argument("--n", type=int, default=1000, help="Without --model: captions and videos in the gallery.")
    parser.add_argument("--noise", type=float, default=4.0, help="Without --model: noise on the words' frames.")
    parser.add_argument("--chunk_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5, help="Timed rounds (the best is shown).")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's).")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    report(run_model(args) if args.model else run_synthetic(args))


if __name__ == "__main__":
    main()
