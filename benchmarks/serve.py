"""`hbi-hf serve` on a 10,000-video index: start-up until the first answer, and the latency of warm served queries.

The index is built as in benchmarks/search.py: a model with ViT-B/32 shapes where search happens (the ViT-B/32 text
tower that encodes each query, 512-d tokens, 12 frames, 32 words; a tiny vision tower, unused because the video
features are synthetic), saved with the package's real processor (CLIP tokenizer), and `--num-videos` synthetic videos
whose features have the structure of CLIP features (benchmarks/search.py's docstring). Every indexed path is a real
file: hard links to a few small H.264 clips, so the server reads each hit's header for its span as it would for real
videos (once per file, then cached).

The server runs as `hbi-hf serve` in its own process with `--threads` torch threads; queries are HTTP requests from
this process, one at a time, timed from sending to the end of the JSON answer. The first `--warmup` queries are not
counted; then `--num-queries` distinct queries (hits not yet seen: their headers are read), then the same queries
again (everything cached).

    python benchmarks/serve.py --num-videos 10000 --threads 2
"""

import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import torch
from search import SearchBenchmarkArguments, build_model, synthetic_gallery
from transformers import HfArgumentParser

from hbi_hf.search_index import MARKER_NAME, HBIModelFingerprint, HBIVideoIndex, file_sha256

WORDS = (
    "a man woman dog cat car ball red blue green plays runs jumps cooks sings talks drives swims kitchen street "
    "beach field stage room guitar song food water game people child horse bike train news crowd night rain"
).split()


@dataclass
class ServeBenchmarkArguments:
    num_videos: int = field(default=10_000, metadata={"help": "indexed videos"})
    num_queries: int = field(default=50, metadata={"help": "timed queries (distinct)"})
    warmup: int = field(default=5, metadata={"help": "queries answered before timing"})
    threads: int = field(default=2, metadata={"help": "torch CPU threads of the server (OMP_NUM_THREADS)"})
    shortlist: int = field(default=1000, metadata={"help": "the server's --shortlist"})
    read_per_query: bool = field(default=False, metadata={"help": "the server's --read-per-query"})
    seed: int = field(default=0)


def write_clip(path: Path, colour: tuple[int, int, int], frames: int = 48, fps: int = 12) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            image = np.full((48, 64, 3), colour, dtype=np.uint8)
            image[:, i % 64 : i % 64 + 2] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def build(directory: Path, args: ServeBenchmarkArguments) -> Path:
    """The model folder, the video folder (hard links) and the index; returns the index folder."""
    from hbi_hf.data.tokenizer import build_clip_tokenizer
    from hbi_hf.processing_hbi import HBIProcessor
    from hbi_hf.video_processing_hbi import HBIVideoProcessor

    search_args = SearchBenchmarkArguments(num_videos=args.num_videos, seed=args.seed)
    model = build_model(search_args)
    model_dir, video_dir, index_dir = directory / "model", directory / "videos", directory / "index"
    model.save_pretrained(model_dir)
    processor = HBIProcessor(HBIVideoProcessor(num_frames=model.config.num_frames), build_clip_tokenizer())
    processor.save_pretrained(model_dir)
    sources = []
    (directory / "clips").mkdir()
    for number, colour in enumerate([(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]):
        sources.append(directory / "clips" / f"clip{number}.mp4")
        write_clip(sources[-1], colour)
    digests = {source: file_sha256(source) for source in sources}
    video_dir.mkdir()
    gallery = synthetic_gallery(model, search_args, torch.Generator().manual_seed(args.seed))[0]
    index_dir.mkdir()
    (index_dir / MARKER_NAME).write_text("benchmark index\n")
    index = HBIVideoIndex(index_dir, HBIModelFingerprint.of(model_dir), video_root=str(video_dir.resolve()))
    for start in range(0, args.num_videos, 1000):
        metadata = []
        for number in range(start, min(start + 1000, args.num_videos)):
            source = sources[number % len(sources)]
            link = video_dir / f"video{number:05d}.mp4"
            os.link(source, link)
            stat = link.stat()
            metadata.append(dict(path=link.name, size=stat.st_size, mtime_ns=stat.st_mtime_ns, sha256=digests[source]))
        index.append_shard(gallery[start : start + len(metadata)], metadata)
    shard_bytes = sum(path.stat().st_size for path in index_dir.glob("shard-*.safetensors"))
    print(f"index features: {shard_bytes / args.num_videos / 1024:.1f} KiB a video ({shard_bytes / 2**20:.0f} MiB)")
    return index_dir


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ask(port: int, query: str) -> tuple[float, dict]:
    url = f"http://127.0.0.1:{port}/api/search?" + urllib.parse.urlencode({"q": query, "k": 10})
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        answer = json.loads(response.read())
    return time.perf_counter() - start, answer


def percentile(values: list[float], fraction: float) -> float:
    return sorted(values)[math.ceil(fraction * len(values)) - 1]


def report(name: str, times: list[float], server_ms: list[float]) -> None:
    print(
        f"{name:<34} {statistics.median(times) * 1000:>9.1f} {percentile(times, 0.95) * 1000:>8.1f} "
        f"{max(times) * 1000:>8.1f} {statistics.median(server_ms):>12.1f}"
    )


def main() -> None:
    (args,) = HfArgumentParser(ServeBenchmarkArguments).parse_args_into_dataclasses()
    generator = np.random.default_rng(args.seed)
    queries = [" ".join(generator.choice(WORDS, size=6)) for _ in range(args.warmup + args.num_queries)]
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        index_dir = build(Path(folder), args)
        print(f"index of {args.num_videos} videos built in {time.perf_counter() - started:.0f} s (not timed below)")
        port = free_port()
        environment = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        command = [sys.executable, "-m", "hbi_hf_cli", "serve", str(index_dir), "--port", str(port)]
        command += ["--shortlist", str(args.shortlist)] + (["--read-per-query"] if args.read_per_query else [])
        started = time.perf_counter()
        server = subprocess.Popen(
            command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            while True:
                if server.poll() is not None:
                    raise SystemExit(f"the server stopped:\n{server.stdout.read()}")
                try:
                    ask(port, "a dog runs on the beach")
                    break
                except OSError:
                    time.sleep(0.1)
            startup = time.perf_counter() - started
            with open("/proc/loadavg") as handle:
                load = handle.read().split()[0]
            print(
                f"start-up of `hbi-hf serve` until the first answer: {startup:.1f} s (load average {load}; "
                f"torch threads {args.threads})"
            )
            for query in queries[: args.warmup]:
                ask(port, query)
            print(f"{'served query, warm server':<34} {'median ms':>9} {'p95 ms':>8} {'max ms':>8} {'server ms':>12}")
            for name in ("distinct queries (new hits)", "the same queries again"):
                answers = [ask(port, query) for query in queries[args.warmup :]]
                report(name, [elapsed for elapsed, _ in answers], [answer["milliseconds"] for _, answer in answers])
        finally:
            server.terminate()
            server.wait(30)
        breakdown(index_dir, queries[args.warmup :], args)


def breakdown(index_dir: Path, queries: list[str], args: ServeBenchmarkArguments) -> None:
    """Where a query's time goes, measured in this process with the server's code: encoding the query, then ranking
    (shortlist + full HBI scoring); the rest of a served query is the hits' spans and HTTP."""
    from hbi_hf.search_index import rank_videos
    from hbi_hf.serve import HBISearchService

    torch.set_num_threads(args.threads)
    service = HBISearchService(index_dir, shortlist=args.shortlist, in_memory=not args.read_per_query)
    encode, rank = [], []
    with torch.no_grad():
        for query in queries:
            start = time.perf_counter()
            features = service.encode_query(query)
            encode.append(time.perf_counter() - start)
            start = time.perf_counter()
            rank_videos(service.model, features, service.gallery, 10, args.shortlist)
            rank.append(time.perf_counter() - start)
    print(
        f"in one process, median: encoding the query {statistics.median(encode) * 1000:.1f} ms, ranking "
        f"(shortlist {args.shortlist} + HBI scoring) {statistics.median(rank) * 1000:.1f} ms"
    )
    with open("/proc/loadavg") as handle:
        print(f"load average at the end: {handle.read().split()[0]}")


if __name__ == "__main__":
    main()
