"""Query latency of `hbi-hf search` over a large index, full HBI scoring versus two-stage search, and the recall of
two-stage search against full scoring.

The gallery is synthetic but has the structure of real video features, so that the global (mean frame) embedding
carries information about the video as it does for CLIP features:

* a vocabulary of `--concepts` random unit "concepts" in the 512-d space, plus one direction shared by every token
  (CLIP embeddings are anisotropic: all tokens share a large common component);
* a video is 2-4 scenes, each a run of consecutive frames showing one concept; a frame token is
  `common + concept + video style + noise`, so frames of one scene are correlated and the mean frame token mixes the
  video's concepts;
* a query describes one video: a start token, a few stop words (shared vectors), one word per concept of two of the
  video's scenes (concept + word noise), and an end token whose feature (the sentence embedding t_c) is the mean of
  the content words plus noise; padded to `max_words`.

Those entity-level tokens go through the model's own token merges (DPC-KNN + attention refinement, with random
weights) to build the action and event levels and the per-token weight logits, exactly as in `get_video_features` /
`get_text_features` after the encoders. Scoring uses `HBIModel.score` with the configured level weights.

    python benchmarks/search.py --num-videos 10000 --threads 2
"""

import math
import statistics
import tempfile
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import HfArgumentParser

from hbi_hf import HBIConfig, HBIModel, HBITextFeatures, HBIVideoFeatures
from hbi_hf.search_index import HBIIndexGallery, HBIModelFingerprint, HBIVideoIndex, rank_videos

TINY_VISION = dict(
    hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=1, image_size=32, patch_size=16
)


@dataclass
class SearchBenchmarkArguments:
    num_videos: int = field(default=10_000, metadata={"help": "indexed videos"})
    num_queries: int = field(default=50, metadata={"help": "queries timed (each describes one random video)"})
    shortlists: list[int] = field(default_factory=lambda: [100, 200, 500, 1000, 2000], metadata={"help": "sizes"})
    shard_size: int = field(default=64, metadata={"help": "videos per shard (`hbi-hf index --checkpoint-every`)"})
    top_k: int = field(default=10, metadata={"help": "recall@k of two-stage against full scoring"})
    threads: int = field(default=2, metadata={"help": "torch CPU threads"})
    concepts: int = field(default=100, metadata={"help": "size of the synthetic concept vocabulary (fewer = harder)"})
    representation_reconstruction: bool = field(default=True, metadata={"help": "HBI V2 (True) or HBI (False)"})
    seed: int = field(default=0)


def build_model(args: SearchBenchmarkArguments) -> HBIModel:
    """ViT-B/32 shapes where scoring happens (512-d tokens, 12 frames, 32 words, the default cluster counts); the
    ViT-B/32 text tower for timing text encoding; a tiny vision tower (unused: video tokens are synthetic)."""
    torch.manual_seed(args.seed)
    config = HBIConfig(vision_config=TINY_VISION, representation_reconstruction=args.representation_reconstruction)
    return HBIModel(config).eval()


def synthetic_gallery(model: HBIModel, args: SearchBenchmarkArguments, generator: torch.Generator):
    """Video features of `num_videos` videos and the scene concepts of each video."""
    dim, frames = model.config.projection_dim, model.config.num_frames
    concepts = F.normalize(torch.randn(args.concepts, dim, generator=generator), dim=-1)
    common = F.normalize(torch.randn(dim, generator=generator), dim=-1)
    parts, scene_concepts = [], []
    for start in range(0, args.num_videos, 1000):
        batch = min(1000, args.num_videos - start)
        tokens = torch.empty(batch, frames, dim)
        for row in range(batch):
            scenes = int(torch.randint(2, 5, (1,), generator=generator))
            chosen = torch.randperm(args.concepts, generator=generator)[:scenes]
            cuts = sorted(torch.randperm(frames - 1, generator=generator)[: scenes - 1].add(1).tolist())
            bounds = [0, *cuts, frames]
            style = 0.4 * F.normalize(torch.randn(dim, generator=generator), dim=-1)
            for scene, concept in enumerate(chosen):
                length = bounds[scene + 1] - bounds[scene]
                noise = 0.5 * F.normalize(torch.randn(length, dim, generator=generator), dim=-1)
                tokens[row, bounds[scene] : bounds[scene + 1]] = common + concepts[concept] + style + noise
            scene_concepts.append(chosen)
        mask = torch.ones(batch, frames, dtype=torch.bool)
        with torch.no_grad():
            parts.append(model._build_levels(tokens, mask, tokens.mean(1), "video", HBIVideoFeatures))
    return HBIVideoFeatures.concatenate(parts), concepts, common, scene_concepts


def synthetic_query(model, concepts, common, scene_concepts, generator) -> HBITextFeatures:
    """Features of one caption describing a random video of the gallery."""
    dim, words = model.config.projection_dim, model.config.max_words
    target = int(torch.randint(len(scene_concepts), (1,), generator=generator))
    described = scene_concepts[target][torch.randperm(len(scene_concepts[target]), generator=generator)[:2]]
    stop_words = F.normalize(torch.randn(4, dim, generator=torch.Generator().manual_seed(1)), dim=-1)
    content = common + concepts[described] + 0.6 * F.normalize(torch.randn(len(described), dim, generator=generator))
    filler = common + stop_words[torch.randint(4, (3,), generator=generator)]
    sentence = content.mean(0, keepdim=True) + 0.3 * F.normalize(torch.randn(1, dim, generator=generator))
    start = common.unsqueeze(0) + stop_words[:1]
    sequence = torch.cat([start, filler[:1], content[:1], filler[1:], content[1:], sentence])
    tokens = torch.zeros(1, words, dim)
    tokens[0, : len(sequence)] = sequence
    mask = torch.zeros(1, words, dtype=torch.bool)
    mask[0, : len(sequence)] = True
    with torch.no_grad():
        return model._build_levels(tokens, mask, sentence, "text", HBITextFeatures)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    (args,) = HfArgumentParser(SearchBenchmarkArguments).parse_args_into_dataclasses()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(args.seed)
    model = build_model(args)
    (gallery, concepts, common, scene_concepts), build_time = timed(lambda: synthetic_gallery(model, args, generator))
    queries = [synthetic_query(model, concepts, common, scene_concepts, generator) for _ in range(args.num_queries)]
    print(
        f"gallery: {args.num_videos} videos x {model.config.num_frames} frames x {model.config.projection_dim}-d, "
        f"clusters video {model.config.video_cluster_counts} text {model.config.text_cluster_counts}, "
        f"V2 reconstruction {model.config.representation_reconstruction}, level weights "
        f"{model.config.similarity_level_weights}; built in {build_time:.1f} s; torch threads {args.threads}"
    )

    directory = tempfile.TemporaryDirectory()
    index = HBIVideoIndex(directory.name, HBIModelFingerprint("synthetic", sha256=""), video_root="synthetic")
    for start in range(0, args.num_videos, args.shard_size):
        part = gallery[start : start + args.shard_size]
        metadata = [dict(path=f"v{start + i}.mp4", size=0, mtime_ns=0, sha256="") for i in range(len(part))]
        index.append_shard(part, metadata)
    _, load_time = timed(lambda: HBIVideoIndex.load(directory.name).features())
    disk_gallery, open_time = timed(lambda: HBIIndexGallery(HBIVideoIndex.load(directory.name)))
    print(
        f"loading the index from disk ({args.shard_size} videos per shard, warm cache): every feature "
        f"{load_time * 1000:.0f} ms; the global embeddings only (what `hbi-hf search` loads) {open_time * 1000:.0f} ms"
    )

    input_ids = torch.randint(1, 49000, (1, 16))
    with torch.no_grad():
        model.get_text_features(input_ids)
        text_times = [timed(lambda: model.get_text_features(input_ids))[1] for _ in range(10)]
    print(f"text encoding (ViT-B/32 text tower, 16 tokens): {statistics.median(text_times) * 1000:.1f} ms median")

    with torch.no_grad():
        rank_videos(model, queries[0], gallery, args.top_k, 0)
        full = [timed(lambda q=q: rank_videos(model, q, gallery, args.top_k, 0)) for q in queries]
    full_top = [set(indices.tolist()) for (_, indices), _ in full]
    full_times = [elapsed for _, elapsed in full]
    header = f"{'search':<22} {'median ms':>10} {'p90 ms':>8} {'recall@' + str(args.top_k):>10}"
    print(header)
    print("-" * len(header))

    def report(name: str, times: list[float], recall: float) -> None:
        p90 = sorted(times)[math.ceil(0.9 * len(times)) - 1]
        print(f"{name:<22} {statistics.median(times) * 1000:>10.1f} {p90 * 1000:>8.1f} {recall:>10.3f}")

    report("full scoring", full_times, 1.0)
    for size in args.shortlists:
        with torch.no_grad():
            staged = [timed(lambda q=q, n=size: rank_videos(model, q, gallery, args.top_k, n)) for q in queries]
        recall = statistics.mean(
            len(set(indices.tolist()) & reference) / len(reference)
            for ((_, indices), _), reference in zip(staged, full_top)
        )
        report(f"two-stage, shortlist {size}", [elapsed for _, elapsed in staged], recall)
    print("the same, reading the shortlisted videos' features from the index on disk (as `hbi-hf search` does):")
    for size in args.shortlists:
        with torch.no_grad():
            staged = [timed(lambda q=q, n=size: rank_videos(model, q, disk_gallery, args.top_k, n)) for q in queries]
        recall = statistics.mean(
            len(set(indices.tolist()) & reference) / len(reference)
            for ((_, indices), _), reference in zip(staged, full_top)
        )
        report(f"from disk, shortlist {size}", [elapsed for _, elapsed in staged], recall)
    directory.cleanup()


if __name__ == "__main__":
    main()
