"""Caption generation time per token with and without the decoder's key/value cache (HBIForCaptioning.generate).

Random weights (no download): the default HBIConfig (CLIP ViT-B/32 towers, width-512 one-layer caption decoder over
CLIP's 49,408 tokens). The videos are encoded once; only decoding is timed: `generate` from the precomputed video
memory, forced to `N` new tokens (`min_new_tokens = max_new_tokens = N`), greedy or beam search. Per-token time =
the median CPU time of a call / N (one thread by default, so CPU time is the work done and depends little on other
jobs on the machine), and its wall time / N. Without the cache every step re-decodes the whole prefix, so its
per-token time grows with N; with it, each step decodes one token. Also checks that both give the same tokens.

    python benchmarks/generation.py [--batch-size 8] [--new-tokens 8 16 31] [--num-beams 1] [--repeats 3] [--threads 1]
"""

import argparse
import time

import torch
import transformers

from hbi_hf import HBIConfig, HBIForCaptioning
from hbi_hf.modeling_hbi import CACHE_NAME


def time_generation(
    model: HBIForCaptioning, memory, new_tokens: int, num_beams: int, use_cache: bool, repeats: int
) -> tuple[float, float, torch.Tensor]:
    """Median wall and CPU (all threads) seconds of one `generate` call of `new_tokens` tokens, after a warm-up
    call, and the generated sequences."""

    def generate() -> torch.Tensor:
        with torch.no_grad():
            return model.generate(
                encoder_outputs=memory,
                num_beams=num_beams,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                use_cache=use_cache,
            )

    sequences = generate()
    wall, cpu = [], []
    for _ in range(repeats):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        generate()
        wall.append(time.perf_counter() - wall_start)
        cpu.append(time.process_time() - cpu_start)
    return sorted(wall)[repeats // 2], sorted(cpu)[repeats // 2], sequences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--new-tokens", type=int, nargs="+", default=[8, 16, 31], help="31 = max_words 32 - 1")
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = HBIForCaptioning(HBIConfig(num_frames=args.frames, max_words=max(args.new_tokens) + 1)).eval()
    pixel_values = torch.randn(args.batch_size, args.frames, 3, 224, 224)
    with torch.no_grad():
        start = time.perf_counter()
        memory = model.encode_video(pixel_values)
        encode_seconds = time.perf_counter() - start

    print(
        f"HBIForCaptioning.generate, transformers {transformers.__version__} (cache keyword: {CACHE_NAME}), "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"  batch {args.batch_size} videos x {args.frames} frames, {args.num_beams} beam(s); video encoding (once, "
        f"not in the figures below): {encode_seconds:.2f} s"
    )
    print(
        f"  {'new tokens':>10} | ms/token with cache: CPU, wall | without cache: CPU, wall | speed-up (CPU) | same tokens"
    )
    for new_tokens in args.new_tokens:
        cached_wall, cached_cpu, cached = time_generation(
            model, memory, new_tokens, args.num_beams, True, args.repeats
        )
        uncached_wall, uncached_cpu, uncached = time_generation(
            model, memory, new_tokens, args.num_beams, False, args.repeats
        )
        per_token = [1000 * seconds / new_tokens for seconds in (cached_cpu, cached_wall, uncached_cpu, uncached_wall)]
        print(
            f"  {new_tokens:>10} | {per_token[0]:>19.1f}, {per_token[1]:>6.1f} | {per_token[2]:>16.1f}, "
            f"{per_token[3]:>6.1f} | {uncached_cpu / cached_cpu:>12.2f}x | "
            f"{'yes' if torch.equal(cached, uncached) else 'NO'}"
        )


if __name__ == "__main__":
    main()
