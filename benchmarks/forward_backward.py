"""Parameter count and one training step (forward + backward) of HBIForRetrieval at ViT-B/32 shapes.

Random weights (no download): CLIP ViT-B/32 text and image towers, 12 frames x 32 words, batch 8 by default.
Also prints the time the Banzhaf teacher (`--teacher`, default the config's exact teacher) takes inside the
step, at every level, as a fraction of the step.

    python benchmarks/forward_backward.py [--batch-size 8] [--repeats 3] [--no-reconstruction]
        [--teacher exact|monte_carlo|none] [--banzhaf-samples N]
"""

import argparse
import time
from functools import wraps

import torch

from hbi_hf import HBIConfig, HBIForRetrieval


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--words", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-reconstruction", action="store_true", help="HBI (CVPR) instead of HBI V2")
    parser.add_argument("--teacher", default="exact", choices=["exact", "monte_carlo", "none"])
    parser.add_argument("--banzhaf-samples", type=int, default=HBIConfig().banzhaf_num_samples)
    args = parser.parse_args()

    torch.manual_seed(0)
    config = HBIConfig(
        num_frames=args.frames,
        max_words=args.words,
        representation_reconstruction=not args.no_reconstruction,
        banzhaf_teacher=args.teacher,
        banzhaf_num_samples=args.banzhaf_samples,
    )
    model = HBIForRetrieval(config).train()
    teacher_seconds = []
    teacher = model.alignment.teacher_interaction

    @wraps(teacher)
    def timed_teacher(*teacher_args, **teacher_kwargs):
        start = time.perf_counter()
        result = teacher(*teacher_args, **teacher_kwargs)
        teacher_seconds[-1] += time.perf_counter() - start
        return result

    model.alignment.teacher_interaction = timed_teacher
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    inference = sum(p.numel() for p in model.hbi.parameters())
    print(f"HBIForRetrieval ({'HBI' if args.no_reconstruction else 'HBI V2'}), ViT-B/32 shapes")
    print(f"  parameters: {total:,} total, {trainable:,} trainable, {inference:,} used at inference (HBIModel)")

    batch = args.batch_size
    input_ids = torch.randint(1, 49406, (batch, args.words))
    input_ids[:, 0], input_ids[:, -1] = 49406, 49407
    inputs = dict(
        input_ids=input_ids,
        attention_mask=torch.ones(batch, args.words, dtype=torch.long),
        pixel_values=torch.randn(batch, args.frames, 3, 224, 224),
        video_mask=torch.ones(batch, args.frames, dtype=torch.long),
    )
    timings = []
    for _ in range(args.repeats + 1):
        model.zero_grad(set_to_none=True)
        teacher_seconds.append(0.0)
        start = time.perf_counter()
        model(**inputs).loss.backward()
        timings.append(time.perf_counter() - start)
    steady = sorted(timings[1:])
    print(
        f"  forward+backward, batch {batch}, {args.frames} frames x {args.words} words, "
        f"{torch.get_num_threads()} threads: median {steady[len(steady) // 2]:.2f} s "
        f"(first call {timings[0]:.2f} s, {args.repeats} timed repeats)"
    )
    fractions = sorted(t / s for t, s in zip(teacher_seconds[1:], timings[1:]))
    teacher_steady = sorted(teacher_seconds[1:])
    samples = f", {args.banzhaf_samples} samples" if args.teacher == "monte_carlo" else ""
    print(
        f"  Banzhaf teacher ({args.teacher}{samples}, 3 levels) inside the step: median "
        f"{teacher_steady[len(teacher_steady) // 2] * 1000:.0f} ms = {100 * fractions[len(fractions) // 2]:.2f} % "
        f"of the step (range {100 * fractions[0]:.2f}-{100 * fractions[-1]:.2f} %)"
    )


if __name__ == "__main__":
    main()
