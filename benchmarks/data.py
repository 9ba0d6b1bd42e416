"""Video input benchmark: frames right, decode time and peak memory per backend, and data-pipeline throughput.

    python benchmarks/data.py                                   # all four sections
    python benchmarks/data.py --sections throughput --num_workers 0 2

* `painted`: for each clip of the painted-index test set (`hbi_hf.data.painted_video`: H.264 mp4/mkv with B-frames,
  MPEG-4 Part 2 AVI with B-frames plain and XVID-tagged, without B-frames, short-GOP HEVC, VP9, MJPEG, variable frame
  rate) and each backend, how many of the frames returned are not the frames asked for (every 4th frame, and the
  paper's sampling of 12 frames).
* `decode`: time and peak resident memory of decoding the 12 frames the processor samples, per backend, each in a
  fresh process, for a 10 s 360p H.264 mp4, a 10 s 320x240 MPEG-4 Part 2 AVI with B-frames (MSVD-like) and a 2-minute
  720p H.264 mp4 (textured, moving content with the frame index painted in a corner, generated once into
  --clips_dir). "before": resident memory after the imports; "peak": the high-water mark while decoding (Linux); "added":
  their difference, the memory decoding needs.
* `many_files`: resident memory while decoding --many_files copies of a short 3840x2160 H.264 clip one after the
  other through the lenient video collator (the indexing path: 12 frames per file, resized to 224 as they are
  decoded), per backend, each in a fresh process: after the imports, after the 1st, 5th and last file, and the peak.
  Memory that keeps growing from the 5th file on is a leak (decord#197 / #208).
* `throughput`: decoded + preprocessed frames per second through HBIRetrievalCollator and a DataLoader, per backend
  and worker count, on the embedded synthetic dataset unless --videos_dir / --captions_file point at your own videos.
"""

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import HfArgumentParser

from hbi_hf import HBIProcessor, HBIVideoProcessor
from hbi_hf.data import HBIRetrievalCollator, build_clip_tokenizer, load_synthetic_retrieval, load_video_folder
from hbi_hf.data.painted_video import paint_frame_index, read_painted_index, write_painted_test_set
from hbi_hf.video_processing_hbi import VIDEO_BACKENDS, read_video

# runs in a fresh process: prints seconds, resident MiB before decoding, peak resident MiB while decoding (Linux: the
# high-water mark reset after the imports; elsewhere the process's peak), wrong frames
DECODE_PROBE = """
import resource, sys, time
from pathlib import Path
from hbi_hf import HBIVideoProcessor
from hbi_hf.data.painted_video import read_painted_index
from hbi_hf.video_processing_hbi import read_video

def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024

path, backend, num_frames = sys.argv[1], sys.argv[2], int(sys.argv[3])
processor = HBIVideoProcessor(num_frames=num_frames)
try:
    Path("/proc/self/clear_refs").write_text("5")
    before = status("VmRSS:")
except OSError:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.perf_counter()
frames, metadata = read_video(path, processor.sample_frames, backend)
seconds = time.perf_counter() - start
peak = status("VmHWM:") if Path("/proc/self/status").exists() else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
wrong = sum(read_painted_index(f[:128, :128]) != i for f, i in zip(frames, metadata.frames_indices))
print(seconds, before, peak, wrong, len(frames))
"""

# runs in a fresh process: decodes the files argv[2:] through the video collator on backend argv[1]; prints seconds,
# then the resident MiB after the imports, after each file, and the peak (Linux)
MANY_FILES_PROBE = """
import sys, time
from pathlib import Path
from hbi_hf import HBIProcessor, HBIVideoProcessor
from hbi_hf.data import HBIVideoCollator, build_clip_tokenizer

def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024

backend, paths = sys.argv[1], sys.argv[2:]
processor = HBIVideoProcessor(num_frames=12, sampling_mode="uniform", video_backend=backend)
collator = HBIVideoCollator(HBIProcessor(processor, build_clip_tokenizer()))
Path("/proc/self/clear_refs").write_text("5")
resident = [status("VmRSS:")]
start = time.perf_counter()
for path in paths:
    collator([{"video_id": path, "video_path": path}])
    resident.append(status("VmRSS:"))
print(time.perf_counter() - start, *resident, status("VmHWM:"))
"""


@dataclass
class DataBenchmarkArguments:
    sections: list[str] = field(
        default_factory=lambda: ["painted", "decode", "many_files", "throughput"],
        metadata={"help": "Any of painted, decode, many_files, throughput."},
    )
    backends: list[str] = field(default_factory=lambda: list(VIDEO_BACKENDS), metadata={"help": "Video backends."})
    clips_dir: str = field(default="/tmp/hbi_hf_benchmark_clips", metadata={"help": "Where clips are generated."})
    long_seconds: int = field(default=120, metadata={"help": "Length of the long 720p clip."})
    many_files: int = field(default=20, metadata={"help": "Files decoded one after the other (many_files)."})
    num_workers: list[int] = field(default_factory=lambda: [0, 2], metadata={"help": "DataLoader worker counts."})
    num_frames: int = field(default=12, metadata={"help": "Frames per video."})
    image_size: int = field(default=224, metadata={"help": "Crop size (CLIP: 224)."})
    sampling_mode: str = field(default="fps", metadata={"help": "'fps' or 'uniform'."})
    batch_size: int = field(default=8, metadata={"help": "Videos per batch."})
    num_batches: int = field(default=16, metadata={"help": "Batches timed per setting."})
    videos_dir: str | None = field(default=None, metadata={"help": "Your own videos (with --captions_file)."})
    captions_file: str | None = field(default=None, metadata={"help": "CSV / JSON Lines captions file."})


def painted_section(args: DataBenchmarkArguments) -> None:
    clips = write_painted_test_set(Path(args.clips_dir) / "painted", num_frames=150)
    processor = HBIVideoProcessor(num_frames=args.num_frames)
    print(f"\nwrong frames (every 4th frame + the paper's {args.num_frames}-frame sampling), per backend")
    print(f"{'clip':<22}" + "".join(f"{backend:>10}" for backend in args.backends) + f"{'asked':>8}")
    totals = dict.fromkeys(args.backends, 0)
    for name, path in clips.items():
        cells, asked = [], 0
        for backend in args.backends:
            wrong = asked = 0
            for sample in (lambda m: np.arange(0, m.total_num_frames, 4), processor.sample_frames):
                frames, metadata = read_video(path, sample, backend)
                wrong += sum(read_painted_index(f) != i for f, i in zip(frames, metadata.frames_indices, strict=True))
                asked += len(frames)
            totals[backend] += wrong
            cells.append(f"{wrong:>10}")
        print(f"{name:<22}" + "".join(cells) + f"{asked:>8}")
    print(f"{'total':<22}" + "".join(f"{totals[backend]:>10}" for backend in args.backends))


def write_textured_clip(path: Path, seconds: int, height: int, width: int, codec: str, options: dict, **settings):
    """A moving smooth texture (rolled 4 px per frame) with the frame index painted in the top-left 128x128."""
    import av

    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, size=(height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    texture = np.repeat(np.repeat(coarse, 16, axis=0), 16, axis=1)[:height, :width]
    partial = path.with_suffix(".partial" + path.suffix)
    with av.open(str(partial), mode="w", format=settings.pop("format", None)) as container:
        stream = container.add_stream(codec, rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = options
        for name, value in settings.items():
            setattr(stream.codec_context, name, value)
        for index in range(seconds * 30):
            frame = np.roll(texture, 4 * index, axis=1)
            frame[:128, :128] = paint_frame_index(index, 128, 128)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    partial.rename(path)


def decode_section(args: DataBenchmarkArguments) -> None:
    folder = Path(args.clips_dir)
    folder.mkdir(parents=True, exist_ok=True)
    x264 = {"preset": "veryfast", "crf": "23", "threads": "2"}
    clips = {
        "10 s 640x360 H.264": (folder / "short_360p.mp4", 10, 360, 640, "libx264", x264, {}),
        "10 s 320x240 MPEG-4 AVI": (
            folder / "short_msvd.avi",
            10,
            240,
            320,
            "mpeg4",
            {"qscale": "4"},
            {"max_b_frames": 2, "gop_size": 30},
        ),
        f"{args.long_seconds} s 1280x720 H.264": (
            folder / f"long_720p_{args.long_seconds}s.mp4",
            args.long_seconds,
            720,
            1280,
            "libx264",
            x264,
            {},
        ),
    }
    print(f"\ndecoding {args.num_frames} sampled frames, each in a fresh process (peak RSS in MiB)")
    print(f"{'clip':<26}{'backend':>8}{'seconds':>9}{'before':>8}{'peak':>8}{'added':>8}{'wrong':>7}")
    for label, (path, seconds, height, width, codec, options, settings) in clips.items():
        if not path.is_file():
            start = time.perf_counter()
            write_textured_clip(path, seconds, height, width, codec, options, **settings)
            print(f"(generated {path} in {time.perf_counter() - start:.0f} s)")
        for backend in args.backends:
            probe = [sys.executable, "-c", DECODE_PROBE, str(path), backend, str(args.num_frames)]
            output = subprocess.run(probe, check=True, capture_output=True, text=True).stdout.split()
            elapsed, before, peak, wrong = (float(value) for value in output[:4])
            print(
                f"{label:<26}{backend:>8}{elapsed:>9.2f}{before:>8.0f}{peak:>8.0f}{peak - before:>8.0f}{int(wrong):>7}"
            )


def many_files_section(args: DataBenchmarkArguments) -> None:
    folder = Path(args.clips_dir)
    folder.mkdir(parents=True, exist_ok=True)
    clip = folder / "short_4k.mp4"
    if not clip.is_file():
        start = time.perf_counter()
        write_textured_clip(clip, 2, 2160, 3840, "libx264", {"preset": "ultrafast", "threads": "2"})
        print(f"(generated {clip} in {time.perf_counter() - start:.0f} s)")
    copies = folder / "many_4k"
    copies.mkdir(exist_ok=True)
    paths = []
    for index in range(args.many_files):
        path = copies / f"clip{index:03d}.mp4"
        if not path.is_file():
            shutil.copyfile(clip, path)
        paths.append(str(path))
    print(f"\n{args.many_files} files of 2 s 3840x2160 H.264, 12 frames each, one after the other (resident MiB)")
    print(f"{'backend':>8}{'seconds':>9}{'imports':>9}{'1st':>7}{'5th':>7}{'last':>7}{'peak':>7}{'5th->last':>11}")
    for backend in args.backends:
        probe = [sys.executable, "-c", MANY_FILES_PROBE, backend, *paths]
        output = subprocess.run(probe, check=True, capture_output=True, text=True).stdout.split()
        elapsed, *resident, peak = (float(value) for value in output)
        first, fifth, last = resident[1], resident[min(5, len(resident) - 1)], resident[-1]
        print(
            f"{backend:>8}{elapsed:>9.1f}{resident[0]:>9.0f}{first:>7.0f}{fifth:>7.0f}{last:>7.0f}{peak:>7.0f}"
            f"{last - fifth:>+11.0f}"
        )


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


def throughput_section(args: DataBenchmarkArguments) -> None:
    if args.videos_dir:
        dataset = load_video_folder(args.videos_dir, args.captions_file)
    else:
        dataset = load_synthetic_retrieval()["train"]
    needed = args.batch_size * (args.num_batches + 1)
    dataset = dataset.select([i % len(dataset) for i in range(needed)])
    print(
        f"\nthroughput: torch threads {torch.get_num_threads()}; {args.num_frames} frames at {args.image_size}px, "
        f"batch {args.batch_size}, {args.num_batches} batches, sampling {args.sampling_mode}"
    )
    print(f"{'backend':>8} {'workers':>8} {'frames/s':>10} {'videos/s':>10}")
    for backend in args.backends:
        video_processor = HBIVideoProcessor(
            num_frames=args.num_frames,
            sampling_mode=args.sampling_mode,
            video_backend=backend,
            size={"shortest_edge": args.image_size},
            crop_size={"height": args.image_size, "width": args.image_size},
        )
        collator = HBIRetrievalCollator(HBIProcessor(video_processor, build_clip_tokenizer(), max_words=32))
        for workers in args.num_workers:
            loader = torch.utils.data.DataLoader(
                dataset, batch_size=args.batch_size, num_workers=workers, collate_fn=collator
            )
            fps, vps = frames_per_second(loader, args.num_batches)
            print(f"{backend:>8} {workers:>8} {fps:>10.1f} {vps:>10.1f}")


def main() -> None:
    (args,) = HfArgumentParser(DataBenchmarkArguments).parse_args_into_dataclasses()
    sections = {
        "painted": painted_section,
        "decode": decode_section,
        "many_files": many_files_section,
        "throughput": throughput_section,
    }
    unknown = sorted(set(args.sections) - set(sections))
    if unknown:
        raise ValueError(f"--sections must be among {sorted(sections)}; got {unknown}")
    for name in args.sections:
        sections[name](args)


if __name__ == "__main__":
    main()
