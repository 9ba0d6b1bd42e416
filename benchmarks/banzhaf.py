"""Banzhaf interaction: Monte-Carlo labelling vs the estimator, and Monte-Carlo error against exact values.

Prints, for 32 words x 12 frames: Monte-Carlo time per matrix at 100 and 1000 samples (matrices labelled 128 at a
time and one at a time; vectorised incremental sampler and the per-coalition reference path), the estimator's time
per matrix (batch 128 and one at a time; the paper's network and the `row_column` one without attention with 3x3 and
with 1x1 kernels, or the
`--estimator` given), the speed-ups with like batching on both sides, and the relative error of
the Monte-Carlo estimate against exact enumeration on small (8 x 6) games. Times are the best of a few repeats.

    PYTHONPATH=src python benchmarks/banzhaf.py [--threads N] [--estimator DIR]
"""

import argparse
import time
from functools import partial

import torch

from hbi_hf import HBIBanzhafEstimator, HBIBanzhafEstimatorConfig
from hbi_hf.banzhaf import exact_banzhaf_interaction, sampled_banzhaf_interaction
from hbi_hf.estimator_training import synthetic_similarity_matrices


def seconds_per_call(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--estimator", default=None, help="a trained estimator folder (default: random weights)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    matrices = synthetic_similarity_matrices(128, seed=0)
    full = torch.ones(128, 32, dtype=torch.bool), torch.ones(128, 12, dtype=torch.bool)
    print(f"torch threads: {torch.get_num_threads()}; matrices 32 words x 12 frames")

    monte_carlo = {}
    for samples in (100, 1000):
        batched = (
            seconds_per_call(
                lambda s=samples: sampled_banzhaf_interaction(
                    matrices.similarity, s, text_mask=full[0], video_mask=full[1], logit_scale=1000.0
                ),
                repeats=4,
            )
            / 128
        )
        single = seconds_per_call(
            lambda s=samples: sampled_banzhaf_interaction(matrices.similarity[:1], s, logit_scale=1000.0), repeats=5
        )
        monte_carlo[samples] = batched, single
        print(
            f"Monte-Carlo {samples:>4} samples: {1e3 * batched:8.2f} ms/matrix (batch 128), "
            f"{1e3 * single:8.2f} ms/matrix (one at a time)"
        )
    direct = seconds_per_call(
        lambda: sampled_banzhaf_interaction(matrices.similarity[:1], 10, logit_scale=1000.0, method="direct"),
        repeats=1,
    )
    direct_per_sample = direct / 10
    print(
        f"Monte-Carlo, direct evaluation of the 4 coalitions (per-coalition reference path): "
        f"{1e3 * direct_per_sample * 100:8.1f} ms/matrix at 100 samples, {direct_per_sample * 1000:8.2f} s/matrix "
        f"at 1000 samples (measured at 10 samples, scaled linearly)"
    )

    if args.estimator:
        estimators = {args.estimator: HBIBanzhafEstimator.from_pretrained(args.estimator)}
    else:
        estimators = {
            "paper (similarity, attention, hidden 64)": HBIBanzhafEstimator(HBIBanzhafEstimatorConfig()),
            "row_column features, no attention, hidden 8, 3x3 kernels": HBIBanzhafEstimator(
                HBIBanzhafEstimatorConfig(input_features="row_column", use_attention=False, hidden_size=8)
            ),
            "row_column features, no attention, hidden 8, 1x1 kernels": HBIBanzhafEstimator(
                HBIBanzhafEstimatorConfig(
                    input_features="row_column", use_attention=False, hidden_size=8, kernel_size=1
                )
            ),
        }
    for name, estimator in estimators.items():
        estimator.eval()
        with torch.no_grad():
            per_matrix = seconds_per_call(partial(estimator, matrices.similarity, *full), repeats=20) / 128
            single_estimate = seconds_per_call(
                partial(estimator, matrices.similarity[:1], full[0][:1], full[1][:1]), repeats=20
            )
        print(f"Estimator {name}:")
        print(
            f"  {1e6 * per_matrix:8.1f} us/matrix (batch 128), {1e6 * single_estimate:8.1f} us/matrix (one at a time)"
        )
        print("  speed-up (same batching on both sides; the issue's target is 1000x over 1000 samples):")
        print(
            f"    over vectorised Monte-Carlo, batch 128:     {monte_carlo[100][0] / per_matrix:9.1f}x (100 samples) "
            f"{monte_carlo[1000][0] / per_matrix:9.1f}x (1000 samples)"
        )
        print(
            f"    over vectorised Monte-Carlo, one at a time: {monte_carlo[100][1] / single_estimate:9.1f}x "
            f"(100 samples) {monte_carlo[1000][1] / single_estimate:9.1f}x (1000 samples)"
        )
        print(
            f"    over the per-coalition reference path, one at a time: "
            f"{100 * direct_per_sample / single_estimate:9.0f}x (100 samples) "
            f"{1000 * direct_per_sample / single_estimate:9.0f}x (1000 samples)"
        )

    small = synthetic_similarity_matrices(16, words=8, frames=6, min_words=8, min_frames=6, seed=1)
    exact = exact_banzhaf_interaction(small.similarity, logit_scale=1000.0)
    generator = torch.Generator().manual_seed(0)
    print("Monte-Carlo error on 16 exact 8 x 6 games (relative RMS error = RMS(estimate - exact) / RMS(exact)):")
    scale = exact.pow(2).mean().sqrt()
    for samples in (100, 1000, 10000):
        estimate = sampled_banzhaf_interaction(small.similarity, samples, logit_scale=1000.0, generator=generator)
        error = (estimate - exact).pow(2).mean().sqrt() / scale
        print(f"  {samples:>5} samples: {error.item():.4f}")


if __name__ == "__main__":
    main()
