"""Time to score a text x video gallery from cached features at ViT-B/32 shapes, next to the floor of one matrix product.

    python benchmarks/eval_similarity.py                     # 1000 x 1000, chunk 64
    python benchmarks/eval_similarity.py --n 200 --chunk_size 64

Prints, for HBI V2 (reconstruction on) and HBI (V1, off), all three levels:
* the time of the fast scorer (`HBIModel.similarity_per_level` with `chunk_size`), and of the entity level alone,
  for captions of 8-32 tokens (the scorer skips padding: texts are ordered by length and each block is cut to the
  tokens its longest caption uses) and for captions that all fill the 32 tokens (no padding to skip);
* the floor: one `(n*32, 512) @ (512, n*12)` matrix product (the word x frame dot products every pair needs);
* the per-pair reference (`hbi_hf.scoring_reference`), timed on `--reference_pairs` sampled pairs and extrapolated to
  the whole gallery, with the largest difference from the fast scorer on those pairs (must be < 1e-4);
* peak resident memory of the scorer above its inputs (sampled every millisecond, each in a fresh process), for
  several chunk and gallery sizes, next to the size of the three result matrices themselves: the rest, the scoring's
  scratch, is bounded by the chunk size and not by the gallery.
"""

import argparse
import ctypes
import gc
import os
import random
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import torch

from hbi_hf import HBIConfig, HBIModel
from hbi_hf.modeling_hbi import HBITextFeatures, HBIVideoFeatures
from hbi_hf.scoring_reference import reference_similarity

TEXT_TOKENS = (32, 16, 4)
VIDEO_TOKENS = (12, 6, 2)
DIM = 512


def build_model(reconstruction: bool) -> HBIModel:
    """An HBI scorer at ViT-B/32 width (the CLIP towers are tiny: scoring never runs them)."""
    tower = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=1)
    config = HBIConfig(
        text_config=tower,
        vision_config={**tower, "image_size": 32, "patch_size": 16},
        projection_dim=DIM,
        representation_reconstruction=reconstruction,
    )
    torch.manual_seed(0)
    model = HBIModel(config).eval()
    with torch.no_grad():
        for parameter in model.levels.parameters():
            parameter.normal_(0.0, 0.02)
    return model


def cached_features(
    model: HBIModel, n: int, seed: int = 0, shortest_caption: int = 8
) -> tuple[HBITextFeatures, HBIVideoFeatures]:
    """Features as `get_text_features` / `get_video_features` would cache them, with random tokens, captions of
    `shortest_caption`-32 tokens (the sentence embedding is the last one, as CLIP's end token) and every frame valid."""
    generator = torch.Generator().manual_seed(seed)
    features = []
    for modality, counts, cls in (("text", TEXT_TOKENS, HBITextFeatures), ("video", VIDEO_TOKENS, HBIVideoFeatures)):
        tokens = [torch.randn(n, count, DIM, generator=generator) for count in counts]
        masks = [torch.ones(n, count, dtype=torch.bool) for count in counts]
        if modality == "text":
            lengths = torch.randint(shortest_caption, counts[0] + 1, (n,), generator=generator)
            masks[0] = torch.arange(counts[0]).unsqueeze(0) < lengths.unsqueeze(1)
            tokens[0] = tokens[0] * masks[0].unsqueeze(-1)
        weight_logits, gate_logits = [], []
        with torch.no_grad():
            for level, level_tokens in enumerate(tokens):
                level_module = model.levels[level]
                mlp = level_module.text_weight if modality == "text" else level_module.video_weight
                weight_logits.append(mlp(level_tokens))
                if level_module.reconstruction is not None:
                    gate_logits.append(level_module.reconstruction.gate_logits(level_tokens, modality))
        if modality == "text":
            global_embeddings = tokens[0][torch.arange(n), lengths - 1]
        else:
            global_embeddings = tokens[0].mean(1)
        features.append(
            cls(
                level_tokens=tuple(tokens),
                level_masks=tuple(masks),
                level_weight_logits=tuple(weight_logits),
                level_gate_logits=tuple(gate_logits) or None,
                global_embeddings=global_embeddings,
                cluster_assignments=(),
            )
        )
    return features[0], features[1]


def timed(fn, repeats: int) -> tuple[float, object]:
    """Best wall time of `repeats` runs (after one warm-up run) and the last result."""
    result = fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def resident_mb() -> float:
    """Current resident memory of this process (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def release_free_memory() -> None:
    """Hand memory that was freed but kept by the C allocator back to the system (glibc), so that a later peak shows
    in the resident size instead of silently reusing it."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory_mb(fn) -> float:
    """Highest resident memory above the starting level while `fn` runs, sampled every millisecond."""
    release_free_memory()
    baseline = resident_mb()
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], resident_mb())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        fn()
    finally:
        done.set()
        sampler.join()
    return peak[0] - baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="texts = videos in the gallery")
    parser.add_argument("--chunk_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--reference_pairs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--memory_probe", type=int, nargs=2, metavar=("GALLERY", "CHUNK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        memory_probe(*args.memory_probe)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    n, chunk = args.n, args.chunk_size
    print(
        f"gallery {n} texts x {n} videos, dim {DIM}, words/phrases/paragraphs {TEXT_TOKENS}, "
        f"frames/clips/segments {VIDEO_TOKENS}, chunk {chunk}, torch threads {torch.get_num_threads()}"
    )

    words, frames = torch.randn(n * TEXT_TOKENS[0], DIM), torch.randn(DIM, n * VIDEO_TOKENS[0])
    floor, _ = timed(partial(torch.matmul, words, frames), args.repeats)
    print(f"floor: ({n * TEXT_TOKENS[0]}, {DIM}) @ ({DIM}, {n * VIDEO_TOKENS[0]}) matrix product: {floor:.3f} s")
    del words, frames

    rows = []
    times = {}
    for captions, shortest in (("8-32", 8), ("32", TEXT_TOKENS[0])):
        for name, reconstruction in (("V2", True), ("V1", False)):
            model = build_model(reconstruction)
            text, video = cached_features(model, n, shortest_caption=shortest)
            with torch.no_grad():
                full_time, per_level = timed(
                    partial(model.similarity_per_level, text, video, (0, 1, 2), chunk), args.repeats
                )
                entity_time, _ = timed(partial(model.similarity_per_level, text, video, (0,), chunk), args.repeats)
            random.seed(0)
            pairs = [(random.randrange(n), random.randrange(n)) for _ in range(args.reference_pairs)]
            start = time.perf_counter()
            reference = [reference_similarity(model, text, video, level, pairs) for level in range(3)]
            reference_time = (time.perf_counter() - start) * n * n / len(pairs)
            index = torch.tensor(pairs)
            difference = max(
                float((per_level[level][index[:, 0], index[:, 1]] - reference[level]).abs().max())
                for level in range(3)
            )
            times[captions, name] = full_time
            rows.append((captions, name, full_time, entity_time, reference_time, difference))

    print()
    print(
        f"{'caption tokens':<14} {'method':<6} {'3 levels (s)':>12} {'x floor':>8} {'entity (s)':>10} "
        f"{'per-pair ref (s, extrap.)':>26} {'max |diff|':>10}"
    )
    for captions, name, full_time, entity_time, reference_time, difference in rows:
        print(
            f"{captions:<14} {name:<6} {full_time:>12.3f} {full_time / floor:>8.2f} {entity_time:>10.3f} "
            f"{reference_time:>26.0f} {difference:>10.2e}"
        )
    for captions, _ in (("8-32", 8), ("32", TEXT_TOKENS[0])):
        print(
            f"V2 / V1 (3 levels), captions of {captions} tokens: {times[captions, 'V2'] / times[captions, 'V1']:.2f}"
        )

    print()
    print(
        "peak memory of V2 scoring, 3 levels (MB; each in a fresh process, resident size above the cached features):"
    )
    print(f"  {'gallery':>7} {'chunk':>5} {'peak':>8} {'results':>8} {'scratch':>8}")
    for gallery in sorted({min(n, 250), n, 2 * n}):
        for chunk_size in (32, 64, 128):
            probe = [sys.executable, __file__, "--memory_probe", str(gallery), str(chunk_size)]
            peak = float(subprocess.run(probe, check=True, capture_output=True, text=True).stdout.split()[-1])
            results = 3 * gallery * gallery * 4 / 2**20
            print(f"  {gallery:>7} {chunk_size:>5} {peak:>8.1f} {results:>8.1f} {peak - results:>8.1f}")


def memory_probe(gallery: int, chunk_size: int) -> None:
    """Print the peak resident memory (MB) of one V2 scoring of a `gallery` x `gallery` gallery above its features."""
    model = build_model(True)
    text, video = cached_features(model, gallery)
    with torch.no_grad():
        print(peak_memory_mb(partial(model.similarity_per_level, text, video, (0, 1, 2), chunk_size)))


if __name__ == "__main__":
    main()
