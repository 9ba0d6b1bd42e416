"""Start-up time of the `hbi-hf` command, next to the time a query takes once everything is loaded.

Builds a tiny index (a few generated mp4 files, a model folder holding a saved HBI model and the package's
`HBIProcessor` with OpenAI's CLIP tokenizer) with `hbi-hf index`, then times, each in a fresh process, best of
`--repeats` (and the first run, whose file cache may be cold):

* `python -c pass`, the floor of any Python command;
* `hbi-hf --help`;
* `hbi-hf search INDEX "query"`, one query: start-up + loading index, model and processor + one query;
* the import (`python -X importtime`, cumulative) of the entry module, of torch, of `transformers.modeling_utils`
  (what loading any transformers model imports: the floor of a command that runs the model) and of `hbi_hf`;

and, in one long-running process, `hbi-hf search INDEX --queries-file FILE` over `--queries` queries: the per-query
time each answer line reports (text encoding + scoring + ranking) and the scoring step alone (`rank_videos`, in this
process).

The command is run as its console script does: `python -c "from ENTRY import main; main()"`. To time another
checkout (for example the code before a change), pass its `src` folder as `--pythonpath` and its entry module
(`hbi_hf.cli` before the parser moved to `hbi_hf_cli`):

    python benchmarks/cli_startup.py
    python benchmarks/cli_startup.py --pythonpath /tmp/old/src --entry hbi_hf.cli
"""

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

QUERIES = ("a red circle", "a blue square moves left", "green", "a yellow triangle turns red", "something grey")


@dataclass
class StartupBenchmarkArguments:
    entry: str = field(default="hbi_hf_cli", metadata={"help": "module whose main() is the hbi-hf command"})
    pythonpath: str | None = field(default=None, metadata={"help": "src folder of the checkout to time"})
    repeats: int = field(default=3, metadata={"help": "fresh processes per command (best of)"})
    queries: int = field(default=50, metadata={"help": "queries of the long-running search"})
    videos: int = field(default=6, metadata={"help": "videos in the tiny index"})
    vit_b32: bool = field(default=False, metadata={"help": "ViT-B/32 towers (a 700 MB model folder) instead of tiny"})
    threads: int = field(default=1, metadata={"help": "OMP_NUM_THREADS of the commands"})


def write_inputs(root: Path, args: StartupBenchmarkArguments) -> tuple[Path, Path]:
    """A model folder (random weights, the package's processor) and a folder of tiny videos."""
    import av
    import numpy as np

    from hbi_hf import HBIConfig, HBIForRetrieval, HBIProcessor, HBIVideoProcessor
    from hbi_hf.data import build_clip_tokenizer

    tokenizer = build_clip_tokenizer()
    if args.vit_b32:
        config = HBIConfig(num_frames=12, max_words=32)
        size = 224
    else:
        text = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2)
        vision = dict(text, image_size=32, patch_size=16)
        text.update(vocab_size=len(tokenizer), max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407)
        config = HBIConfig(
            text_config=text,
            vision_config=vision,
            projection_dim=32,
            temporal_num_attention_heads=4,
            temporal_intermediate_size=64,
            merge_num_attention_heads=4,
            num_frames=6,
            max_words=16,
            video_cluster_counts=[3, 2],
            text_cluster_counts=[4, 2],
            estimator_config=dict(hidden_size=8),
        )
        size = 32
    model_dir = root / "model"
    HBIForRetrieval(config).save_pretrained(model_dir)
    video_processor = HBIVideoProcessor(
        num_frames=config.num_frames, size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )
    HBIProcessor(video_processor, tokenizer, max_words=config.max_words).save_pretrained(model_dir)

    video_dir = root / "videos"
    video_dir.mkdir()
    for number in range(args.videos):
        container = av.open(str(video_dir / f"{number}.mp4"), "w")
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for frame in range(8):
            image = np.full((64, 64, 3), (40 * number % 256, 255 - 30 * number % 256, 8 * frame), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        container.close()
    return model_dir, video_dir


def command(args: StartupBenchmarkArguments, *argv: str, python_flags: tuple[str, ...] = ()) -> list[str]:
    launcher = f"import sys; sys.argv[0] = 'hbi-hf'; from {args.entry} import main; sys.exit(main())"
    return [sys.executable, *python_flags, "-c", launcher, *argv]


def environment(args: StartupBenchmarkArguments) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TRANSFORMERS_VERBOSITY="error")
    if args.pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.pythonpath, env.get("PYTHONPATH")]))
    return env


def wall_times(cmd: list[str], env: dict[str, str], repeats: int, stdin: str | None = None) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, input=stdin)
        times.append(time.perf_counter() - start)
        if result.returncode != 0:
            raise RuntimeError(f"{cmd} failed:\n{result.stderr[-3000:]}")
    return times


def import_seconds(args: StartupBenchmarkArguments, env: dict[str, str], module: str) -> float:
    """Cumulative import time of `module` in a fresh process (`python -X importtime`), best of `repeats`."""
    best = float("inf")
    for _ in range(args.repeats):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", f"import {module}"], env=env, capture_output=True, text=True
        )
        for line in result.stderr.splitlines():
            match = re.match(rf"import time:\s+\d+ \|\s+(\d+) \| {re.escape(module)}$", line)
            if match:
                best = min(best, int(match.group(1)) / 1e6)
    return best


def main() -> None:
    (args,) = HfArgumentParser(StartupBenchmarkArguments).parse_args_into_dataclasses()
    env = environment(args)
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        model_dir, video_dir = write_inputs(root, args)
        index_dir = root / "index"
        subprocess.run(
            command(
                args, "index", str(video_dir), "--model", str(model_dir), "--out", str(index_dir), "--no-progress"
            ),
            env=env,
            check=True,
            capture_output=True,
        )
        queries = [QUERIES[i % len(QUERIES)] + f" {i}" for i in range(args.queries)]
        (root / "queries.txt").write_text("\n".join(queries) + "\n")

        floor = wall_times([sys.executable, "-c", "pass"], env, args.repeats)
        help_times = wall_times(command(args, "--help"), env, args.repeats)
        search_times = wall_times(command(args, "search", str(index_dir), QUERIES[0]), env, args.repeats)
        imported = {
            module: import_seconds(args, env, module)
            for module in (args.entry, "torch", "transformers.modeling_utils", "hbi_hf")
        }

        long_running = None
        if args.entry == "hbi_hf_cli":
            cmd = command(args, "search", str(index_dir), "--queries-file", str(root / "queries.txt"))
            start = time.perf_counter()
            result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            total = time.perf_counter() - start
            per_query = [json.loads(line)["milliseconds"] for line in result.stdout.splitlines()]
            long_running = (total, per_query)

        scoring_ms = scoring_time(index_dir, model_dir, args) if args.entry == "hbi_hf_cli" else None

    model = "ViT-B/32 towers" if args.vit_b32 else "tiny towers (width 32)"
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"hbi-hf start-up: entry {args.entry}, {args.videos}-video index, {model}, OMP_NUM_THREADS={args.threads}; "
        f"{os.cpu_count()} CPUs, load average {load} (other jobs slow every figure down)"
    )
    print(f"{'what':<52} {'best s':>8} {'first s':>8}")
    print("-" * 70)
    for name, times in (
        ("python -c pass", floor),
        ("hbi-hf --help", help_times),
        ("hbi-hf search INDEX QUERY (whole command)", search_times),
    ):
        print(f"{name:<52} {min(times):>8.2f} {times[0]:>8.2f}")
    for module, seconds in imported.items():
        print(f"{'import ' + module + ' (-X importtime, cumulative)':<52} {seconds:>8.2f}")
    if long_running is not None:
        total, per_query = long_running
        print(
            f"long-running search, {len(per_query)} queries in one process: whole process {total:.2f} s; per query "
            f"median {statistics.median(per_query):.1f} ms, max {max(per_query):.1f} ms (text encoding + scoring + "
            "ranking, as each JSON line reports)"
        )
    if scoring_ms is not None:
        print(f"scoring step alone (rank_videos over the {args.videos} videos, median of 20): {scoring_ms:.2f} ms")


def scoring_time(index_dir: Path, model_dir: Path, args: StartupBenchmarkArguments) -> float:
    """Median time of `rank_videos` for one encoded query over the index, in this process."""
    import torch

    from hbi_hf.search_index import HBIVideoSearcher, encode_text, rank_videos

    torch.set_num_threads(args.threads)
    searcher = HBIVideoSearcher(index_dir, model_dir)
    text_features, _ = encode_text(searcher.model, searcher.processor, QUERIES[0])
    times = []
    for _ in range(20):
        start = time.perf_counter()
        rank_videos(searcher.model, text_features, searcher.features, top_k=10, shortlist=1000)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


if __name__ == "__main__":
    main()
