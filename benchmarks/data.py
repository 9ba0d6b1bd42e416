"""Data-pipeline throughput: decoded + preprocessed frames per second through HBIRetrievalCollator and a DataLoader.

    python benchmarks/data.py --num_workers 0 1 2 --num_frames 12 --batch_size 8

Uses the embedded synthetic dataset (generated into the cache on first use) unless --videos_dir / --captions_file
point at a folder of your own videos.
"""

import time
from dataclasses import dataclass, field

import torch
from transformers import HfArgumentParser

from hbi_hf import HBIProcessor, HBIVideoProcessor
from hbi_hf.data import HBIRetrievalCollator, build_clip_tokenizer, load_synthetic_retrieval, load_video_folder


@dataclass
class DataBenchmarkArguments:
    num_workers: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "DataLoader worker counts."})
    num_frames: int = field(default=12, metadata={"help": "Frames per video."})
    image_size: int = field(default=224, metadata={"help": "Crop size (CLIP: 224)."})
    sampling_mode: str = field(default="fps", metadata={"help": "'fps' or 'uniform'."})
    video_backend: str | None = field(default=None, metadata={"help": "'decord' or 'pyav' (default: decord)."})
    batch_size: int = field(default=8, metadata={"help": "Videos per batch."})
    num_batches: int = field(default=16, metadata={"help": "Batches timed per setting."})
    videos_dir: str | None = field(default=None, metadata={"help": "Your own videos (with --captions_file)."})
    captions_file: str | None = field(default=None, metadata={"help": "CSV / JSON Lines captions file."})


def frames_per_second(loader, num_batches: int) -> tuple[float, float]:
    """(frames per second, videos per second) over `num_batches` batches, after one warm-up batch."""
    iterator = iter(loader)
    next(iterator)
    frames = videos = 0
    start = time.perf_counter()
    for _, batch in zip(range(num_batches), iterator, strict=False):
        frames += int(batch["video_mask"].sum())
        videos += batch["video_mask"].shape[0]
    elapsed = time.perf_counter() - start
    return frames / elapsed, videos / elapsed


def main() -> None:
    (args,) = HfArgumentParser(DataBenchmarkArguments).parse_args_into_dataclasses()
    if args.videos_dir:
        dataset = load_video_folder(args.videos_dir, args.captions_file)
    else:
        dataset = load_synthetic_retrieval()["train"]
    size = {"shortest_edge": args.image_size}
    crop = {"height": args.image_size, "width": args.image_size}
    video_processor = HBIVideoProcessor(
        num_frames=args.num_frames,
        sampling_mode=args.sampling_mode,
        video_backend=args.video_backend,
        size=size,
        crop_size=crop,
    )
    collator = HBIRetrievalCollator(HBIProcessor(video_processor, build_clip_tokenizer(), max_words=32))
    needed = args.batch_size * (args.num_batches + 1)
    dataset = dataset.select([i % len(dataset) for i in range(needed)])
    print(
        f"torch threads {torch.get_num_threads()}; {args.num_frames} frames at {args.image_size}px, "
        f"batch {args.batch_size}, {args.num_batches} batches, sampling {args.sampling_mode}"
    )
    print(f"{'workers':>8} {'frames/s':>10} {'videos/s':>10}")
    for workers in args.num_workers:
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=args.batch_size, num_workers=workers, collate_fn=collator
        )
        fps, vps = frames_per_second(loader, args.num_batches)
        print(f"{workers:>8} {fps:>10.1f} {vps:>10.1f}")


if __name__ == "__main__":
    main()
