"""Trainable parameters and training-step peak memory: full fine-tuning vs LoRA (with and without the fully trained
HBI modules), at ViT-B/32 shapes (random weights).

Each setting runs in a fresh process, so its peak resident memory (CPU RSS, `ru_maxrss`) is its own. A step is
forward + backward of the HBI retrieval loss + an AdamW update; the first step allocates the optimizer state, so
the peak is taken over `--steps` steps.

    python benchmarks/peft_memory.py [--batch_size 2 --num_frames 12 --max_words 32 --steps 2 --lora_r 8]
"""

import json
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
from transformers import HfArgumentParser

from hbi_hf import HBIConfig, HBIForRetrieval
from hbi_hf.peft_utils import apply_lora


@dataclass
class BenchmarkArguments:
    batch_size: int = field(default=2, metadata={"help": "Matched text-video pairs per step."})
    num_frames: int = field(default=12, metadata={"help": "Frames per video (224 px)."})
    max_words: int = field(default=32, metadata={"help": "Tokens per caption."})
    steps: int = field(default=2, metadata={"help": "Training steps per setting."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    representation_reconstruction: bool = field(default=True, metadata={"help": "HBI V2 (True) or HBI (False)."})
    worker: str | None = field(
        default=None, metadata={"help": "Internal: run one setting ('full', 'lora', 'lora_only')."}
    )


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_setting(args: BenchmarkArguments) -> dict:
    torch.manual_seed(0)
    config = HBIConfig(
        num_frames=args.num_frames,
        max_words=args.max_words,
        representation_reconstruction=args.representation_reconstruction,
    )
    model = HBIForRetrieval(config)
    if args.worker in ("lora", "lora_only"):
        model = apply_lora(
            model, r=args.lora_r, alpha=2 * args.lora_r, dropout=0.05, train_hbi_modules=args.worker == "lora"
        )
    model.train()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    batch = {
        "input_ids": torch.randint(1, 49405, (args.batch_size, args.max_words)),
        "attention_mask": torch.ones(args.batch_size, args.max_words, dtype=torch.long),
        "pixel_values": torch.randn(args.batch_size, args.num_frames, 3, 224, 224),
        "video_mask": torch.ones(args.batch_size, args.num_frames, dtype=torch.long),
    }
    batch["input_ids"][:, 0], batch["input_ids"][:, -1] = 49406, 49407
    rss_before = _rss_mib()
    started = time.perf_counter()
    for _ in range(args.steps):
        loss = model(**batch, return_loss=True).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = (time.perf_counter() - started) / args.steps
    return {
        "setting": args.worker,
        "trainable": trainable,
        "total": total,
        "rss_after_build_mib": rss_before,
        "peak_rss_mib": _rss_mib(),
        "seconds_per_step": seconds,
    }


def main() -> None:
    (args,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses()
    if args.worker is not None:
        print(json.dumps(run_setting(args)))
        return
    options = [f"--{k}={v}" for k, v in asdict(args).items() if k != "worker"]
    rows = []
    for setting in ("full", "lora", "lora_only"):
        output = subprocess.run(
            [sys.executable, __file__, *options, f"--worker={setting}"], capture_output=True, text=True, check=True
        ).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
    print(
        f"HBIForRetrieval, ViT-B/32 shapes, random weights, representation_reconstruction="
        f"{args.representation_reconstruction}; batch {args.batch_size} x {args.num_frames} frames x "
        f"{args.max_words} words, AdamW, {args.steps} steps, CPU ({torch.get_num_threads()} threads)"
    )
    names = {"full": "full", "lora": f"LoRA r={args.lora_r} + HBI modules", "lora_only": f"LoRA r={args.lora_r} only"}
    print(
        f"{'setting':<28}{'trainable':>14}{'of total':>14}{'share':>8}{'RSS built':>12}{'peak RSS':>12}{'s/step':>9}"
    )
    for row in rows:
        print(
            f"{names[row['setting']]:<28}{row['trainable']:>14,}{row['total']:>14,}{100 * row['trainable'] / row['total']:>7.1f}%"
            f"{row['rss_after_build_mib']:>9.0f} MiB{row['peak_rss_mib']:>8.0f} MiB{row['seconds_per_step']:>9.1f}"
        )


if __name__ == "__main__":
    main()
