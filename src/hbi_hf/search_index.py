"""A searchable index of videos encoded once by an HBI model.

On disk an index is a folder:

* `manifest.json`: format version, the model folder, the video root, and one entry per indexed video (path relative
  to the root, size, modification time, SHA-256 of the content, the shard and row holding its features), plus the
  files that could not be encoded in the last run and why;
* `shard-NNNNN.safetensors`: the [`HBIVideoFeatures`] of a group of videos stacked along the batch axis, one tensor per
  field and level (`level_tokens.0`, `level_masks.0`, ..., `global_embeddings`, `cluster_assignments.1`).

Every file is written to a temporary name and renamed into place, and the manifest is rewritten only after the shard it
refers to is complete, so an interrupted run leaves a consistent index: the next run encodes only what is missing.
"""

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoProcessor
from transformers.utils import logging

from .auto import AutoModelForVideoTextRetrieval
from .modeling_hbi import HBIBanzhafEstimator, HBIModel, HBITextFeatures, HBIVideoFeatures

logger = logging.get_logger(__name__)

INDEX_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SHARD_PATTERN = re.compile(r"^shard-(\d{5})\.safetensors$")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp")


# ---------------------------------------------------------------------------------------------------------------------
# Model and processor
# ---------------------------------------------------------------------------------------------------------------------


def load_hbi_model(model_name_or_path: str | os.PathLike) -> tuple[HBIModel, HBIBanzhafEstimator | None]:
    """
    Load a saved HBI model in evaluation mode: an [`HBIModel`], or an [`HBIForRetrieval`] whose encoder and frozen
    Banzhaf teacher are returned.

    Returns:
        `(model, teacher)`; `teacher` is `None` for a bare [`HBIModel`].
    """
    config = AutoConfig.from_pretrained(model_name_or_path)
    architectures = config.architectures or ["HBIModel"]
    if architectures[0] == "HBIModel":
        return HBIModel.from_pretrained(model_name_or_path).eval(), None
    if architectures[0] == "HBIForRetrieval":
        model = AutoModelForVideoTextRetrieval.from_pretrained(model_name_or_path).eval()
        return model.hbi, model.alignment.banzhaf_teacher
    raise ValueError(
        f"{model_name_or_path}: expected a saved HBIModel or HBIForRetrieval; the config names {architectures}"
    )


def load_processor(model_name_or_path: str | os.PathLike):
    """The processor saved with the model (`processor(text=[...])` gives `input_ids` / `attention_mask`,
    `processor(videos=[path])` gives `pixel_values` / `video_mask`)."""
    processor = AutoProcessor.from_pretrained(model_name_or_path)
    if getattr(processor, "video_processor", None) is None:
        raise ValueError(
            f"{model_name_or_path}: expected an HBI processor (tokenizer + video processor) saved with the model; "
            f"AutoProcessor found a {type(processor).__name__}. Save one with `HBIProcessor.save_pretrained`."
        )
    return processor


@torch.no_grad()
def encode_text(model: HBIModel, processor, text: str) -> tuple[HBITextFeatures, torch.Tensor]:
    """Tokenise and encode one text. Returns its features and its `input_ids` `(1, words)`."""
    inputs = processor(text=[text], return_tensors="pt")
    device = model.device
    input_ids = inputs["input_ids"].to(device)
    return model.get_text_features(input_ids, inputs["attention_mask"].to(device)), input_ids


def decode_video(processor, path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode and preprocess one video: `pixel_values` `(frames, 3, H, W)` and `video_mask` `(frames,)`."""
    inputs = processor(videos=[str(path)], return_tensors="pt")
    pixel_values = inputs["pixel_values"][0]
    video_mask = inputs.get("video_mask")
    video_mask = torch.ones(pixel_values.shape[0], dtype=torch.long) if video_mask is None else video_mask[0]
    if not video_mask.bool().any():
        raise ValueError("no decodable frame")
    return pixel_values, video_mask


@torch.no_grad()
def encode_video_batch(model: HBIModel, pixel_values: torch.Tensor, video_mask: torch.Tensor) -> HBIVideoFeatures:
    """Encode preprocessed videos `(batch, frames, 3, H, W)` with their masks `(batch, frames)`, on the CPU."""
    features = model.get_video_features(pixel_values.to(model.device), video_mask.to(model.device))
    return features.map(lambda tensor: tensor.detach().cpu())


# ---------------------------------------------------------------------------------------------------------------------
# Features <-> flat tensors
# ---------------------------------------------------------------------------------------------------------------------


def features_to_tensors(features: HBIVideoFeatures) -> dict[str, torch.Tensor]:
    """Flatten features into named tensors: tuple fields become `name.level`."""
    tensors = {}
    for item in fields(features):
        value = getattr(features, item.name)
        if isinstance(value, tuple):
            tensors.update({f"{item.name}.{i}": tensor.contiguous() for i, tensor in enumerate(value)})
        elif value is not None:
            tensors[item.name] = value.contiguous()
    return tensors


def tensors_to_features(tensors: dict[str, torch.Tensor]) -> HBIVideoFeatures:
    """Inverse of [`features_to_tensors`]."""
    values: dict[str, dict[int, torch.Tensor] | torch.Tensor] = {}
    for key, tensor in tensors.items():
        name, _, level = key.partition(".")
        if level:
            values.setdefault(name, {})[int(level)] = tensor
        else:
            values[name] = tensor
    return HBIVideoFeatures(
        **{
            name: tuple(value[i] for i in sorted(value)) if isinstance(value, dict) else value
            for name, value in values.items()
        }
    )


# ---------------------------------------------------------------------------------------------------------------------
# The index on disk
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class HBIIndexEntry:
    """One indexed video: `path` relative to the video root, its fingerprint and where its features are stored."""

    path: str
    size: int
    mtime_ns: int
    sha256: str
    shard: str
    row: int


@dataclass
class HBIIndexFailure:
    """A file that could not be indexed, with the reason."""

    path: str
    reason: str


@dataclass
class HBIIndexReport:
    """What one `build_index` run did."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    failed: list[HBIIndexFailure] = field(default_factory=list)


def _atomic_write_bytes(path: Path, write: Callable[[Path], None]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    write(temporary)
    os.replace(temporary, path)


def file_sha256(path: str | os.PathLike, block_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(block_size):
            digest.update(block)
    return digest.hexdigest()


def scan_videos(video_root: Path, extensions: Iterable[str] = VIDEO_EXTENSIONS) -> list[Path]:
    """Video files under `video_root` (recursively, by extension), sorted by relative path."""
    suffixes = {suffix.lower() for suffix in extensions}
    return sorted(path for path in video_root.rglob("*") if path.is_file() and path.suffix.lower() in suffixes)


class HBIVideoIndex:
    r"""
    The manifest of an index folder and access to its shards. Use [`build_index`] to create or update one and
    [`HBIVideoIndex.load`] + [`HBIVideoIndex.features`] to search it.

    Args:
        directory (`Path`): the index folder.
        model (`str`): the model folder the features were encoded with.
        video_root (`str`): the folder the entries' paths are relative to.
        entries (`list[HBIIndexEntry]`), failed (`list[HBIIndexFailure]`)
    """

    def __init__(
        self,
        directory: Path,
        model: str,
        video_root: str,
        entries: list[HBIIndexEntry] | None = None,
        failed: list[HBIIndexFailure] | None = None,
    ):
        self.directory = Path(directory)
        self.model = model
        self.video_root = video_root
        self.entries = entries or []
        self.failed = failed or []

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "HBIVideoIndex":
        directory = Path(directory)
        manifest_path = directory / MANIFEST_NAME
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{directory} is not an HBI video index: {MANIFEST_NAME} is missing")
        manifest = json.loads(manifest_path.read_text())
        version = manifest.get("format_version")
        if version != INDEX_FORMAT_VERSION:
            raise ValueError(f"{manifest_path}: format_version {version}; this version reads {INDEX_FORMAT_VERSION}")
        return cls(
            directory,
            model=manifest["model"],
            video_root=manifest["video_root"],
            entries=[HBIIndexEntry(**entry) for entry in manifest["videos"]],
            failed=[HBIIndexFailure(**failure) for failure in manifest["failed"]],
        )

    def __len__(self) -> int:
        return len(self.entries)

    def save(self) -> None:
        """Write the manifest atomically."""
        manifest = {
            "format_version": INDEX_FORMAT_VERSION,
            "model": self.model,
            "video_root": self.video_root,
            "videos": [vars(entry) for entry in self.entries],
            "failed": [vars(failure) for failure in self.failed],
        }
        _atomic_write_bytes(
            self.directory / MANIFEST_NAME, lambda path: path.write_text(json.dumps(manifest, indent=1))
        )

    def shard_names(self) -> list[str]:
        return sorted(path.name for path in self.directory.iterdir() if SHARD_PATTERN.match(path.name))

    def _next_shard_name(self) -> str:
        existing = [int(SHARD_PATTERN.match(name).group(1)) for name in self.shard_names()]
        return f"shard-{max(existing, default=-1) + 1:05d}.safetensors"

    def _write_shard(self, tensors: dict[str, torch.Tensor]) -> str:
        name = self._next_shard_name()
        _atomic_write_bytes(self.directory / name, lambda path: save_file(tensors, str(path)))
        return name

    def append_shard(self, features: HBIVideoFeatures, metadata: list[dict]) -> None:
        """Store features of `len(metadata)` new videos in a new shard, then record them in the manifest."""
        name = self._write_shard(features_to_tensors(features))
        self.entries.extend(HBIIndexEntry(**item, shard=name, row=row) for row, item in enumerate(metadata))
        self.save()

    def compact(self) -> None:
        """
        Drop the rows no entry refers to: a shard with dropped rows is copied (live rows only) to a new shard, the
        manifest is pointed at it, and only then is the old shard deleted; shards without live rows and leftovers of
        interrupted writes are deleted. Call after saving the manifest without the dropped entries.
        """
        rows_by_shard: dict[str, list[HBIIndexEntry]] = {}
        for entry in self.entries:
            rows_by_shard.setdefault(entry.shard, []).append(entry)
        for leftover in self.directory.glob(".*.tmp"):
            leftover.unlink()
        for name in self.shard_names():
            live = rows_by_shard.get(name, [])
            path = self.directory / name
            if live:
                tensors = load_file(str(path))
                if len(live) == next(iter(tensors.values())).shape[0]:
                    continue
                rows = torch.tensor([entry.row for entry in live])
                new_name = self._write_shard({key: tensor[rows].contiguous() for key, tensor in tensors.items()})
                for new_row, entry in enumerate(live):
                    entry.shard, entry.row = new_name, new_row
                self.save()
            path.unlink()

    def features(self) -> HBIVideoFeatures:
        """The features of every indexed video, in manifest order."""
        if not self.entries:
            raise ValueError(f"the index {self.directory} holds no video")
        parts, order = [], []
        rows_by_shard: dict[str, list[int]] = {}
        for position, entry in enumerate(self.entries):
            rows_by_shard.setdefault(entry.shard, []).append(position)
        for name, positions in rows_by_shard.items():
            tensors = load_file(str(self.directory / name))
            rows = torch.tensor([self.entries[p].row for p in positions])
            parts.append(tensors_to_features(tensors)[rows])
            order.extend(positions)
        features = HBIVideoFeatures.concatenate(parts)
        return features[torch.tensor(order).argsort()]

    def paths(self) -> list[str]:
        return [entry.path for entry in self.entries]


def _pad_frames(videos: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack `(frames_i, 3, H, W)` videos, padding to the longest with masked frames."""
    longest = max(pixel_values.shape[0] for pixel_values, _ in videos)
    pixel_values = torch.stack(
        [F.pad(pixels, (0, 0, 0, 0, 0, 0, 0, longest - pixels.shape[0])) for pixels, _ in videos]
    )
    video_mask = torch.stack([F.pad(mask, (0, longest - mask.shape[0])) for _, mask in videos])
    return pixel_values, video_mask


def _plan_update(index: HBIVideoIndex, files: list[Path], video_root: Path, report: HBIIndexReport) -> list[dict]:
    """Drop entries of removed and changed files from `index`; return the metadata of the files to encode."""
    known = {entry.path: entry for entry in index.entries}
    to_encode, kept = [], []
    for path in files:
        relative = path.relative_to(video_root).as_posix()
        stat = path.stat()
        entry = known.pop(relative, None)
        if entry is not None and (entry.size, entry.mtime_ns) == (stat.st_size, stat.st_mtime_ns):
            kept.append(entry)
            continue
        digest = file_sha256(path)
        if entry is not None and entry.sha256 == digest:
            entry.size, entry.mtime_ns = stat.st_size, stat.st_mtime_ns
            kept.append(entry)
            continue
        (report.updated if entry is not None else report.added).append(relative)
        to_encode.append(dict(path=relative, size=stat.st_size, mtime_ns=stat.st_mtime_ns, sha256=digest))
    report.removed.extend(sorted(known))
    report.unchanged = len(kept)
    index.entries = kept
    return to_encode


def build_index(
    video_dir: str | os.PathLike,
    index_dir: str | os.PathLike,
    model_name_or_path: str | os.PathLike | None = None,
    batch_size: int = 8,
    checkpoint_every: int = 64,
    extensions: Iterable[str] = VIDEO_EXTENSIONS,
    device: str | torch.device = "cpu",
    show_progress: bool = True,
) -> HBIIndexReport:
    r"""
    Create or update the index of the videos under `video_dir`: new files are encoded, files whose content changed are
    re-encoded, removed files are dropped, unchanged files (same size and modification time, or same SHA-256) are kept.
    Features are written every `checkpoint_every` encoded videos (and on interruption), so a run that is stopped
    resumes where it stopped. A file that cannot be decoded is skipped and reported, never fatal.

    Args:
        video_dir (`str` or `os.PathLike`): folder searched recursively for files with a video extension.
        index_dir (`str` or `os.PathLike`): the index folder, created if needed.
        model_name_or_path (`str`, *optional*): saved HBI model with its processor; required for a new index, and
            for an existing one it must be the model the index was built with (default: that model).
        batch_size (`int`, *optional*, defaults to 8): videos encoded per forward pass.
        checkpoint_every (`int`, *optional*, defaults to 64): videos per shard.
        extensions (`Iterable[str]`, *optional*): file suffixes treated as videos.
        device (`str` or `torch.device`, *optional*, defaults to `"cpu"`): where the model runs.
        show_progress (`bool`, *optional*, defaults to `True`): show a progress bar.

    Returns:
        [`HBIIndexReport`]
    """
    video_root = Path(video_dir).resolve()
    if not video_root.is_dir():
        raise NotADirectoryError(f"video_dir {video_dir} is not a folder")
    index_path = Path(index_dir)
    if (index_path / MANIFEST_NAME).is_file():
        index = HBIVideoIndex.load(index_path)
        requested = str(Path(model_name_or_path).resolve()) if model_name_or_path is not None else index.model
        if requested != index.model:
            raise ValueError(
                f"the index {index_dir} was built with the model {index.model}; got {model_name_or_path}. "
                "Features of different models cannot be mixed: use a new index folder."
            )
        index.video_root = str(video_root)
    else:
        if model_name_or_path is None:
            raise ValueError(f"{index_dir} holds no index yet: a model is needed to create one")
        index_path.mkdir(parents=True, exist_ok=True)
        index = HBIVideoIndex(index_path, model=str(Path(model_name_or_path).resolve()), video_root=str(video_root))

    report = HBIIndexReport()
    to_encode = _plan_update(index, scan_videos(video_root, extensions), video_root, report)
    index.failed = []
    index.save()
    index.compact()
    if not to_encode:
        return report

    model, _ = load_hbi_model(index.model)
    model.to(device)
    processor = load_processor(index.model)
    encoded: list[HBIVideoFeatures] = []
    encoded_metadata: list[dict] = []
    batch: list[tuple[torch.Tensor, torch.Tensor]] = []
    batch_metadata: list[dict] = []

    def encode_pending_batch() -> None:
        if batch:
            encoded.append(encode_video_batch(model, *_pad_frames(batch)))
            encoded_metadata.extend(batch_metadata)
            batch.clear()
            batch_metadata.clear()

    def write_checkpoint() -> None:
        if encoded:
            index.append_shard(HBIVideoFeatures.concatenate(encoded), list(encoded_metadata))
            encoded.clear()
            encoded_metadata.clear()

    try:
        for item in tqdm(to_encode, desc="indexing", unit="video", disable=not show_progress):
            try:
                batch.append(decode_video(processor, video_root / item["path"]))
            except Exception as error:  # any decoder failure: the file is reported, the run goes on
                reason = f"{type(error).__name__}: {error}"
                logger.warning("skipping %s: %s", item["path"], reason)
                report.failed.append(HBIIndexFailure(item["path"], reason))
                (report.updated if item["path"] in report.updated else report.added).remove(item["path"])
                continue
            batch_metadata.append(item)
            if len(batch) == batch_size:
                encode_pending_batch()
            if len(encoded_metadata) >= checkpoint_every:
                write_checkpoint()
        encode_pending_batch()
    finally:
        write_checkpoint()
        index.failed = report.failed
        index.save()
    return report


# ---------------------------------------------------------------------------------------------------------------------
# Search
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class HBISearchHit:
    """One ranked video."""

    rank: int
    path: str
    score: float


def global_shortlist(text_features: HBITextFeatures, video_features: HBIVideoFeatures, size: int) -> torch.Tensor:
    """Indices of the `size` videos whose global embedding (mean frame token) has the highest cosine with the text's
    sentence embedding; `(size,)`, best first."""
    text = F.normalize(text_features.global_embeddings[:1].float(), dim=-1)
    videos = F.normalize(video_features.global_embeddings.float(), dim=-1)
    cosine = (videos @ text.t()).squeeze(1)
    return cosine.topk(min(size, cosine.shape[0])).indices


@torch.no_grad()
def rank_videos(
    model: HBIModel,
    text_features: HBITextFeatures,
    video_features: HBIVideoFeatures,
    top_k: int = 10,
    shortlist: int = 0,
    chunk_size: int | None = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""
    Rank videos for one text. With `shortlist > 0`, a two-stage search: the `shortlist` videos closest by global
    embedding ([`global_shortlist`]), then the full HBI score ([`HBIModel.score`]) of those only; with `shortlist=0`
    every video gets the full score.

    Args:
        text_features ([`HBITextFeatures`]): one text (batch 1).
        video_features ([`HBIVideoFeatures`]): the gallery.
        top_k (`int`), shortlist (`int`), chunk_size (`int`, *optional*): videos scored per block.

    Returns:
        `(scores, indices)`, each of shape `(min(top_k, candidates),)`, best first; indices into `video_features`.
    """
    if shortlist > 0:
        candidates = global_shortlist(text_features, video_features, shortlist)
        scores = model.score(text_features, video_features[candidates], chunk_size=chunk_size)[0]
    else:
        candidates = torch.arange(len(video_features))
        scores = model.score(text_features, video_features, chunk_size=chunk_size)[0]
    best = scores.topk(min(top_k, scores.shape[0]))
    return best.values, candidates[best.indices]


def search_index(
    index_dir: str | os.PathLike,
    query: str,
    top_k: int = 10,
    shortlist: int = 1000,
    model_name_or_path: str | os.PathLike | None = None,
) -> list[HBISearchHit]:
    """Rank the videos of an index for `query` with the index's model (or `model_name_or_path`); see
    [`rank_videos`]."""
    index = HBIVideoIndex.load(index_dir)
    model, _ = load_hbi_model(model_name_or_path or index.model)
    processor = load_processor(model_name_or_path or index.model)
    text_features, _ = encode_text(model, processor, query)
    scores, indices = rank_videos(model, text_features.map(lambda t: t.cpu()), index.features(), top_k, shortlist)
    paths = index.paths()
    return [
        HBISearchHit(rank=rank, path=paths[i], score=float(score))
        for rank, (score, i) in enumerate(zip(scores.tolist(), indices.tolist()), start=1)
    ]


__all__ = [
    "HBIIndexEntry",
    "HBIIndexFailure",
    "HBIIndexReport",
    "HBISearchHit",
    "HBIVideoIndex",
    "build_index",
    "decode_video",
    "encode_text",
    "encode_video_batch",
    "features_to_tensors",
    "global_shortlist",
    "load_hbi_model",
    "load_processor",
    "rank_videos",
    "scan_videos",
    "search_index",
    "tensors_to_features",
]
