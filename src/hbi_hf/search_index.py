"""A searchable index of videos encoded once by an HBI model.

On disk an index is a folder:

* `manifest.json`: format version; the model folder and its fingerprint (SHA-256 of its weights, config and processor
  files); the video root; per shard its SHA-256, size and row count; per indexed video its path relative to the root,
  size, modification time, SHA-256 of the content, and the shard and row holding its features; the files that could
  not be indexed in the last run, with the kind of failure and the reason;
* `shard-<32 hex digits>.safetensors`: the [`HBIVideoFeatures`] of a group of videos stacked along the batch axis, one
  tensor per field and level (`level_tokens.0`, `level_masks.0`, ..., `global_embeddings`, `cluster_assignments.1`);
* `.hbi-index`: the marker saying that this package created the folder (only then does it delete anything in it);
* `.hbi-index.lock`: the writer lock, held by one `build_index` run at a time.

Every file is written to a unique temporary name and renamed into place, and the manifest is replaced only after the
shard it refers to is complete, so an interrupted run leaves a consistent index: the next run encodes only what is
missing. The next run also verifies every shard against its checksum and re-encodes the videos of a missing or damaged
one.
"""

import hashlib
import json
import math
import os
import re
import stat
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from filelock import FileLock, Timeout
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoProcessor
from transformers.utils import logging

from .auto import AutoModelForVideoTextRetrieval
from .errors import HBIInputError
from .modeling_hbi import CLIP_VOCAB_SIZE, HBIBanzhafEstimator, HBIModel, HBITextFeatures, HBIVideoFeatures

logger = logging.get_logger(__name__)

INDEX_FORMAT_VERSION = 2
MANIFEST_NAME = "manifest.json"
MARKER_NAME = ".hbi-index"
LOCK_NAME = ".hbi-index.lock"
TEMPORARY_PREFIX = ".hbi-tmp-"
SHARD_PATTERN = re.compile(r"^shard-[0-9a-f]{32}\.safetensors$")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp")
_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
"""The safetensors dtype names a shard can hold, as torch dtypes (shards are read row by row by
[`HBIVideoIndex.read_features`])."""
ROW_SPAN = 64
"""A shard's rows asked for that span at most this many rows are read from the file in one call."""
ROW_GAP = 16
"""Otherwise rows less than this far apart are read together (see `HBIVideoIndex._read_rows`)."""
# Files of a model folder that decide the features: the weights (every `*.safetensors`) and these.
MODEL_FILES = (
    "config.json",
    "model.safetensors.index.json",
    "processor_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
)


class HBIIndexDamagedError(HBIInputError):
    """A shard or the manifest of an index cannot be read, or holds non-finite features; rerunning `hbi-hf index`
    verifies the shards and re-encodes the videos of the damaged ones."""


class HBIModelMismatchError(HBIInputError):
    """The model given to `search` is not the one (same weights and processor) the index was built with."""


class HBIIndexLockedError(TimeoutError):
    """Another `build_index` run holds the index's writer lock."""


class HBIIndexInterrupted(KeyboardInterrupt):
    """
    A `build_index` run was interrupted (Ctrl-C) while encoding, after saving what it had encoded: running it again
    continues where it stopped.

    Args:
        index_dir (`Path`): the index folder.
        saved (`int`): videos encoded by this run and saved. total (`int`): videos in the index now.
        left (`int`): videos this run still had to encode.
    """

    def __init__(self, index_dir: Path, saved: int, total: int, left: int):
        self.index_dir, self.saved, self.total, self.left = index_dir, saved, total, left
        super().__init__(
            f"interrupted: saved the {saved} videos encoded by this run ({total} in the index {index_dir}, "
            f"{left} left to encode); run the same command to continue"
        )


# ---------------------------------------------------------------------------------------------------------------------
# Model and processor
# ---------------------------------------------------------------------------------------------------------------------


def _is_index_folder(path: Path) -> bool:
    return (path / MARKER_NAME).is_file() and (path / MANIFEST_NAME).is_file()


def resolve_model_folder(model_name_or_path: str | os.PathLike | None, index: "HBIVideoIndex | None" = None) -> Path:
    """
    The absolute path of a saved model folder: how `hbi-hf index`, `search` and `explain` find their model.

    Args:
        model_name_or_path (`str` or `os.PathLike`, *optional*): a model folder written by `save_pretrained`, or an
            index folder written by [`build_index`] (then the model the index was built with). `None`: the model of
            `index`.
        index ([`HBIVideoIndex`], *optional*): the index whose model is meant when `model_name_or_path` is `None`.

    Raises:
        `FileNotFoundError`: the folder does not exist (for the model recorded in an index, the message says to give
            its new place with `--model`), or holds no `config.json`.
    """
    if model_name_or_path is not None and _is_index_folder(Path(model_name_or_path).expanduser()):
        index = HBIVideoIndex.load(Path(model_name_or_path).expanduser())
        model_name_or_path = None
    if model_name_or_path is None:
        if index is None:
            raise HBIInputError("no model given: name a saved model folder (--model) or an index built with one")
        path = Path(index.model.path)
        if not path.is_dir():
            raise FileNotFoundError(
                f"model {path}: no such folder: the index {index.directory} was built with the model in that folder, "
                "which has moved or was deleted. Give the model's folder with --model FOLDER (the same model: "
                "same weights, config and processor)"
            )
    else:
        path = Path(model_name_or_path).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(
                f"model {model_name_or_path}: no such folder (expected a folder written by save_pretrained that "
                "holds the HBI model and its processor, or an index folder; download a Hub model first, e.g. with "
                "`hf download`)"
            )
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model {path}: the folder holds no config.json (not a saved model)")
    return path.resolve()


def file_sha256(path: str | os.PathLike, block_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(block_size):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class HBIModelFingerprint:
    r"""
    What identifies the features a model folder produces: a SHA-256 over the names and contents of its weights
    (`*.safetensors`) and of its config and processor files ([`MODEL_FILES`]), never its path.

    Args:
        path (`str`): the absolute model folder.
        sha256 (`str`): the fingerprint.
        files (`list[dict]`): per hashed file its `name`, `size`, `mtime_ns` and `sha256` (a file whose size and
            modification time are unchanged is not hashed again).
    """

    path: str
    sha256: str
    files: list[dict] = field(default_factory=list)

    @classmethod
    def of(cls, model_dir: str | os.PathLike, known: "HBIModelFingerprint | None" = None) -> "HBIModelFingerprint":
        """Fingerprint `model_dir`, reusing the file hashes of `known` for files of the same folder whose size and
        modification time are unchanged."""
        model_dir = resolve_model_folder(model_dir)
        cached = {item["name"]: item for item in known.files} if known and known.path == str(model_dir) else {}
        files = []
        for path in sorted(model_dir.iterdir()):
            if not path.is_file() or not (path.suffix == ".safetensors" or path.name in MODEL_FILES):
                continue
            stat = path.stat()
            hit = cached.get(path.name)
            same = hit is not None and (hit["size"], hit["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns)
            digest = hit["sha256"] if same else file_sha256(path)
            files.append(dict(name=path.name, size=stat.st_size, mtime_ns=stat.st_mtime_ns, sha256=digest))
        if not any(item["name"].endswith(".safetensors") for item in files):
            raise FileNotFoundError(f"model {model_dir}: no *.safetensors weights in the folder")
        overall = hashlib.sha256(json.dumps([[item["name"], item["sha256"]] for item in files]).encode())
        return cls(path=str(model_dir), sha256=overall.hexdigest(), files=files)


def load_hbi_model(model_name_or_path: str | os.PathLike) -> tuple[HBIModel, HBIBanzhafEstimator | None]:
    """
    Load a saved HBI model folder in evaluation mode: an [`HBIModel`], or an [`HBIForRetrieval`] whose encoder and
    frozen Banzhaf teacher are returned.

    Returns:
        `(model, teacher)`; `teacher` is `None` for a bare [`HBIModel`].

    Raises:
        `FileNotFoundError`: no such folder, or no `config.json` in it (see [`resolve_model_folder`]).
        [`HBIInputError`]: the folder holds another architecture.
    """
    model_dir = resolve_model_folder(model_name_or_path)
    config = AutoConfig.from_pretrained(model_dir)
    architectures = config.architectures or ["HBIModel"]
    if architectures[0] == "HBIModel":
        return HBIModel.from_pretrained(model_dir).eval(), None
    if architectures[0] == "HBIForRetrieval":
        model = AutoModelForVideoTextRetrieval.from_pretrained(model_dir).eval()
        return model.hbi, model.alignment.banzhaf_teacher
    raise HBIInputError(
        f"{model_name_or_path}: expected a saved HBIModel or HBIForRetrieval; the config names {architectures}"
    )


PROCESSOR_FILES = ("processor_config.json", "video_preprocessor_config.json", "preprocessor_config.json")
"""A model folder holds its processor when it holds one of these (`HBIProcessor.save_pretrained` writes the first)."""


def load_processor(model_name_or_path: str | os.PathLike):
    """
    The processor saved with the model (`processor(text=[...])` gives `input_ids` / `attention_mask`,
    `processor(videos=[path])` gives `pixel_values` / `video_mask`).

    Raises:
        [`HBIInputError`]: the folder holds no processor (none of [`PROCESSOR_FILES`]), the saved processor cannot
            be loaded, or it is not an HBI processor; one line naming the folder and the call that fixes it.
    """
    folder = Path(model_name_or_path)
    if not any((folder / name).is_file() for name in PROCESSOR_FILES):
        raise HBIInputError(
            f"model {folder}: the folder holds no processor (no {PROCESSOR_FILES[0]}): {_processor_fix(folder)}"
        )
    try:
        processor = AutoProcessor.from_pretrained(folder)
    except OSError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise HBIInputError(
            f"model {folder}: its processor cannot be loaded ({first_line}): {_processor_fix(folder)}"
        ) from error
    if getattr(processor, "video_processor", None) is None:
        raise HBIInputError(
            f"model {folder}: expected an HBI processor (tokenizer + video processor) saved with the model; "
            f"AutoProcessor found a {type(processor).__name__}: {_processor_fix(folder)}"
        )
    return processor


def _processor_fix(folder: Path) -> str:
    """The one call that saves a processor into a model folder: the default processor (`default_processor`, the one
    the package saves with a model) when the text tower has CLIP's vocabulary, else the user's own."""
    try:
        clip_vocabulary = AutoConfig.from_pretrained(folder).text_config.vocab_size == CLIP_VOCAB_SIZE
    except (OSError, ValueError, AttributeError):
        clip_vocabulary = False
    if clip_vocabulary:
        return (
            "save the default one (OpenAI's CLIP tokenizer, the model's frames and words) into it with "
            f"`hbi_hf.modeling_hbi.default_processor(hbi_hf.HBIConfig.from_pretrained({str(folder)!r}))"
            f".save_pretrained({str(folder)!r})`"
        )
    return (
        f"the text tower does not have CLIP's vocabulary, so save the model's own HBIProcessor into it with "
        f"`processor.save_pretrained({str(folder)!r})`"
    )


def text_token_count(processor, text: str) -> int | None:
    """How many tokens `text` has before truncation (start and end tokens included), by the processor's tokenizer;
    `None` when the processor has no callable tokenizer."""
    tokenizer = getattr(processor, "tokenizer", None)
    if not callable(tokenizer):
        return None
    return len(tokenizer(text, truncation=False)["input_ids"])


@torch.no_grad()
def encode_text(
    model: HBIModel, processor, text: str, what: str = "the query"
) -> tuple[HBITextFeatures, torch.Tensor]:
    """
    Tokenise and encode one text. Returns its features and its `input_ids` `(1, words)`.

    A text longer than the model reads (`max_words` tokens, start and end included) is cut by the processor; the cut
    is logged as a warning naming `what` (e.g. `"the query"`, `"the caption"`) and both lengths. `hbi-hf search` and
    `explain` both warn through here.

    Raises:
        [`HBIInputError`]: `text` is not valid Unicode (lone surrogates: bytes that are not UTF-8, decoded with
            `surrogateescape` as Python does for the command line), naming the text.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "backslashreplace")
        raise HBIInputError(f"{what} {raw!r} is not UTF-8 text: give it in UTF-8") from None
    inputs = processor(text=[text], return_tensors="pt")
    input_ids = inputs["input_ids"]
    length = text_token_count(processor, text)
    if length is not None and length > input_ids.shape[1]:
        shown = text if len(text) <= 60 else text[:57] + "..."
        logger.warning(
            f"{what} {shown!r} has {length} tokens (start and end included); the model reads the first "
            f"{input_ids.shape[1]} (its max_words): the words after them are not used"
        )
    device = model.device
    input_ids = input_ids.to(device)
    return model.get_text_features(input_ids, inputs["attention_mask"].to(device)), input_ids


def decode_video(processor, path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode and preprocess one video: `pixel_values` `(frames, 3, H, W)` and `video_mask` `(frames,)`."""
    inputs = processor(videos=[str(path)], return_tensors="pt")
    pixel_values = inputs["pixel_values"][0]
    video_mask = inputs.get("video_mask")
    video_mask = torch.ones(pixel_values.shape[0], dtype=torch.long) if video_mask is None else video_mask[0]
    if not video_mask.bool().any():
        raise HBIInputError("no decodable frame")
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


def non_finite_rows(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """`(rows,)` bool: the rows (videos) whose floating-point tensors hold a NaN or an infinity."""
    bad = torch.zeros(next(iter(tensors.values())).shape[0], dtype=torch.bool)
    for tensor in tensors.values():
        if tensor.is_floating_point():
            bad |= ~torch.isfinite(tensor).flatten(1).all(1)
    return bad


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
    """
    A file that could not be indexed (or a shard that was found damaged).

    Args:
        path (`str`): the video path relative to the video root (the shard name for a damaged shard).
        kind (`str`): `"unreadable"` (the file or its folder cannot be read: no permission, a symbolic link whose
            target is missing, not a regular file, vanished between listing and decoding), `"undecodable"` (the
            decoder failed or found no frame), `"non-finite features"` (the model produced NaN or infinity), and for shards
            `"missing"` or `"damaged"`.
        reason (`str`): the error.
    """

    path: str
    kind: str
    reason: str


@dataclass
class HBIIndexReport:
    """What one `build_index` run did: videos added, re-encoded (`updated`), removed (their file is gone), unchanged,
    failed; `dropped`: the failed files that were in the index (changed, damaged shard or new model) and were removed
    from it, since their stored features no longer describe the file with this model; the shards found missing or
    damaged (`damaged_shards`) and the videos re-encoded because of them (`repaired`); whether the model's fingerprint
    changed (every video re-encoded)."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    failed: list[HBIIndexFailure] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    damaged_shards: list[HBIIndexFailure] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    model_changed: bool = False

    def failure_totals(self) -> dict[str, int]:
        """Failed files per kind of failure."""
        return dict(Counter(failure.kind for failure in self.failed))


def _temporary_path(directory: Path) -> Path:
    return directory / f"{TEMPORARY_PREFIX}{uuid.uuid4().hex}.tmp"


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to a unique temporary file beside `path`, flush it to disk, then rename it over `path`."""
    temporary = _temporary_path(path.parent)
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def scan_videos(
    video_root: Path, extensions: Iterable[str] = VIDEO_EXTENSIONS
) -> tuple[list[Path], list[HBIIndexFailure]]:
    """
    The video files under `video_root` (recursively, by extension; symbolic links to folders are not followed), and
    what could not be listed or read: a folder that cannot be listed, an entry with a video extension that cannot be
    examined (no permission), a symbolic link whose target is missing, or that is not a regular file (all of kind
    `"unreadable"`, paths relative to `video_root`, a folder's ending in `/`).

    Returns:
        `(files, problems)`, each sorted by relative path.
    """
    suffixes = {suffix.lower() for suffix in extensions}
    files: list[Path] = []
    problems: list[HBIIndexFailure] = []

    def relative(path: str | os.PathLike) -> str:
        return Path(path).relative_to(video_root).as_posix()

    def unlisted(error: OSError) -> None:
        folder = relative(error.filename) if error.filename else "."
        reason = f"the folder cannot be listed ({type(error).__name__}: {error.strerror})"
        problems.append(HBIIndexFailure(f"{folder}/", "unreadable", reason))

    for folder, _, names in os.walk(video_root, onerror=unlisted):
        for name in names:
            path = Path(folder, name)
            if path.suffix.lower() not in suffixes:
                continue
            try:
                mode = path.stat().st_mode
            except FileNotFoundError:
                target = os.readlink(path) if path.is_symlink() else None
                reason = f"a symbolic link to {target}, which does not exist" if target else "the file vanished"
                problems.append(HBIIndexFailure(relative(path), "unreadable", reason))
                continue
            except OSError as error:
                problems.append(HBIIndexFailure(relative(path), "unreadable", f"{type(error).__name__}: {error}"))
                continue
            if stat.S_ISREG(mode):
                files.append(path)
            else:
                problems.append(HBIIndexFailure(relative(path), "unreadable", "not a regular file"))
    return sorted(files), sorted(problems, key=lambda problem: problem.path)


def _manifest_error(manifest_path: Path, where: str, problem: str) -> HBIIndexDamagedError:
    return HBIIndexDamagedError(
        f"{manifest_path}: {where}: {problem}. The manifest is damaged or was not written by hbi-hf; "
        "build the index again in a new folder"
    )


class HBIVideoIndex:
    r"""
    The manifest of an index folder and access to its shards. Use [`build_index`] to create or update one and
    [`HBIVideoIndex.load`] + [`HBIVideoIndex.features`] (or [`HBIVideoSearcher`]) to search it.

    Args:
        directory (`Path`): the index folder.
        model ([`HBIModelFingerprint`]): the model folder the features were encoded with, and its fingerprint.
        video_root (`str`): the folder the entries' paths are relative to.
        entries (`list[HBIIndexEntry]`), failed (`list[HBIIndexFailure]`)
        shards (`dict[str, dict]`): per shard file name its `sha256`, `size` (bytes) and `rows`.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        model: HBIModelFingerprint,
        video_root: str,
        entries: list[HBIIndexEntry] | None = None,
        failed: list[HBIIndexFailure] | None = None,
        shards: dict[str, dict] | None = None,
    ):
        self.directory = Path(directory)
        self.model = model
        self.video_root = video_root
        self.entries = entries or []
        self.failed = failed or []
        self.shards = shards or {}
        self._layouts: dict[str, tuple[int, dict]] = {}

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "HBIVideoIndex":
        """
        Read the manifest of `directory`.

        Raises:
            `FileNotFoundError`: no manifest.
            [`HBIIndexDamagedError`]: the manifest is not valid JSON, has another format version, or names a shard
                that is not a plain shard file name of the folder (nothing outside the folder is ever read).
        """
        directory = Path(directory)
        manifest_path = directory / MANIFEST_NAME
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{directory} is not an HBI video index: {MANIFEST_NAME} is missing")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise _manifest_error(manifest_path, "the file", f"not valid JSON ({error})") from error
        version = manifest.get("format_version") if isinstance(manifest, dict) else None
        if version != INDEX_FORMAT_VERSION:
            raise HBIIndexDamagedError(
                f"{manifest_path}: format_version {version}; this version of hbi-hf reads {INDEX_FORMAT_VERSION}. "
                "Build the index again in a new folder"
            )
        try:
            shards = {
                str(name): dict(sha256=str(v["sha256"]), size=int(v["size"]), rows=int(v["rows"]))
                for name, v in manifest["shards"].items()
            }
            entries = [HBIIndexEntry(**entry) for entry in manifest["videos"]]
            index = cls(
                directory,
                model=HBIModelFingerprint(**manifest["model"]),
                video_root=str(manifest["video_root"]),
                entries=entries,
                failed=[HBIIndexFailure(**failure) for failure in manifest["failed"]],
                shards=shards,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise _manifest_error(manifest_path, "a field", f"missing or of the wrong type ({error!r})") from error
        for name in shards:
            if not SHARD_PATTERN.match(name):
                raise _manifest_error(manifest_path, f"shards[{name!r}]", "not a shard file name of this index")
        for number, entry in enumerate(entries):
            if entry.shard not in shards:
                raise _manifest_error(
                    manifest_path, f"videos[{number}] ({entry.path!r})", f"unknown shard {entry.shard!r}"
                )
            if not isinstance(entry.row, int) or not 0 <= entry.row < shards[entry.shard]["rows"]:
                raise _manifest_error(
                    manifest_path, f"videos[{number}] ({entry.path!r})", f"row {entry.row!r} out of range"
                )
        return index

    def __len__(self) -> int:
        return len(self.entries)

    def save(self) -> None:
        """Replace the manifest atomically (unique temporary file, flushed to disk, renamed)."""
        manifest = {
            "format_version": INDEX_FORMAT_VERSION,
            "model": asdict(self.model),
            "video_root": self.video_root,
            "shards": self.shards,
            "videos": [asdict(entry) for entry in self.entries],
            "failed": [asdict(failure) for failure in self.failed],
        }
        _atomic_write_bytes(self.directory / MANIFEST_NAME, json.dumps(manifest, indent=1).encode())

    def shard_files(self) -> list[str]:
        """Shard files present in the folder, referenced by the manifest or not."""
        return sorted(path.name for path in self.directory.iterdir() if SHARD_PATTERN.match(path.name))

    def _write_shard(self, tensors: dict[str, torch.Tensor]) -> str:
        name = f"shard-{uuid.uuid4().hex}.safetensors"
        temporary = _temporary_path(self.directory)
        save_file(tensors, str(temporary))
        _fsync(temporary)
        rows = next(iter(tensors.values())).shape[0]
        record = dict(sha256=file_sha256(temporary), size=temporary.stat().st_size, rows=rows)
        os.replace(temporary, self.directory / name)
        self.shards[name] = record  # after the file is in place: the manifest never names a shard not written
        return name

    def append_shard(self, features: HBIVideoFeatures, metadata: list[dict]) -> None:
        """Store features of `len(metadata)` new videos in a new shard, then record them in the manifest."""
        name = self._write_shard(features_to_tensors(features))
        self.entries.extend(HBIIndexEntry(**item, shard=name, row=row) for row, item in enumerate(metadata))
        self.save()

    def verify_shards(self) -> list[HBIIndexFailure]:
        """Check every shard of the manifest against its recorded size and SHA-256; returns the missing and damaged
        ones (`path` is the shard name)."""
        problems = []
        for name, record in self.shards.items():
            path = self.directory / name
            if not path.is_file():
                problems.append(HBIIndexFailure(name, "missing", "the file is missing"))
            elif path.stat().st_size != record["size"]:
                problems.append(
                    HBIIndexFailure(
                        name, "damaged", f"{path.stat().st_size} bytes; the manifest records {record['size']}"
                    )
                )
            elif file_sha256(path) != record["sha256"]:
                problems.append(HBIIndexFailure(name, "damaged", "the SHA-256 differs from the manifest's"))
        return problems

    def compact(self) -> None:
        """
        Drop the rows no entry refers to: a shard with dropped rows is copied (live rows only) to a new shard, the
        manifest is pointed at it, and only then is the old shard deleted; shards no entry refers to and leftovers
        of interrupted writes are deleted. Call with the writer lock held, after saving the manifest without the
        dropped entries; only files of this package's own names are touched.
        """
        rows_by_shard: dict[str, list[HBIIndexEntry]] = {}
        for entry in self.entries:
            rows_by_shard.setdefault(entry.shard, []).append(entry)
        for leftover in self.directory.glob(f"{TEMPORARY_PREFIX}*.tmp"):
            leftover.unlink()
        for name in list(self.shards):
            if name not in rows_by_shard:
                del self.shards[name]
        self.save()
        for name in self.shard_files():
            live = rows_by_shard.get(name, [])
            if len(live) == self.shards.get(name, {}).get("rows"):
                continue
            if live:
                tensors = self._load_shard(name)
                rows = torch.tensor([entry.row for entry in live])
                new_name = self._write_shard({key: tensor[rows].contiguous() for key, tensor in tensors.items()})
                for new_row, entry in enumerate(live):
                    entry.shard, entry.row = new_name, new_row
                del self.shards[name]
                self.save()
            (self.directory / name).unlink()

    def _damaged(self, name: str, problem: str) -> HBIIndexDamagedError:
        return HBIIndexDamagedError(
            f"{self.directory / name}: {problem}. Rerun `hbi-hf index {self.video_root} --out {self.directory}`: it "
            "verifies every shard and re-encodes the videos of damaged ones"
        )

    def _checked_shard_file(self, name: str) -> tuple[dict, Path, int]:
        """The manifest record, path and size in bytes of a shard, after checking that its file exists and has the
        recorded size.

        Raises:
            [`HBIIndexDamagedError`]: the shard is missing or its size differs from the manifest's (truncated?).
        """
        record, path = self.shards[name], self.directory / name
        if not path.is_file():
            raise self._damaged(name, "the shard is missing")
        size = path.stat().st_size
        if size != record["size"]:
            raise self._damaged(
                name, f"the shard has {size} bytes, the manifest records {record['size']} (truncated?)"
            )
        return record, path, size

    def _load_shard(self, name: str) -> dict[str, torch.Tensor]:
        """The tensors of one shard of the manifest, after checking its size and row count (not its SHA-256, which
        `build_index` verifies).

        Raises:
            [`HBIIndexDamagedError`]: the shard is missing, truncated or unreadable; the message names the file.
        """
        record, path, _ = self._checked_shard_file(name)
        try:
            tensors = load_file(str(path))
        except Exception as error:  # safetensors raises its own error type for every malformed file
            raise self._damaged(name, f"the shard cannot be read ({type(error).__name__}: {error})") from error
        if not tensors or any(tensor.shape[0] != record["rows"] for tensor in tensors.values()):
            raise self._damaged(name, f"the shard does not hold {record['rows']} rows")
        return tensors

    def features(self) -> HBIVideoFeatures:
        """
        The features of every indexed video, in manifest order.

        Raises:
            [`HBIIndexDamagedError`]: a shard is missing, truncated or unreadable, or holds NaN / infinite features
                (the message names the shard and the videos).
        """
        if not self.entries:
            raise HBIInputError(f"the index {self.directory} holds no video")
        parts, order = [], []
        rows_by_shard: dict[str, list[int]] = {}
        for position, entry in enumerate(self.entries):
            rows_by_shard.setdefault(entry.shard, []).append(position)
        for name, positions in rows_by_shard.items():
            tensors = self._load_shard(name)
            rows = torch.tensor([self.entries[p].row for p in positions])
            bad = non_finite_rows({key: tensor[rows] for key, tensor in tensors.items()})
            if bad.any():
                videos = [self.entries[p].path for p, is_bad in zip(positions, bad.tolist()) if is_bad]
                raise self._damaged(name, f"the features of {videos} hold NaN or infinite values")
            parts.append(tensors_to_features(tensors)[rows])
            order.extend(positions)
        features = HBIVideoFeatures.concatenate(parts)
        return features[torch.tensor(order).argsort()]

    def paths(self) -> list[str]:
        return [entry.path for entry in self.entries]

    def _shard_layout(self, name: str) -> tuple[int, dict[str, tuple[torch.dtype, list[int], int]]]:
        """
        Where each tensor of a shard lies in its file, from the safetensors header (an 8-byte little-endian length,
        then JSON naming each tensor's dtype, shape and byte range after the header), after checking the file's size
        and every tensor's row count and extent.

        Returns:
            `(data_start, tensors)`: the file offset of the tensor data and, per tensor name, its dtype, shape and
            byte offset from `data_start`.

        Raises:
            [`HBIIndexDamagedError`]: the shard is missing, truncated, or its header is not a valid safetensors
                header of the recorded rows.
        """
        record, path, size = self._checked_shard_file(name)
        try:
            with open(path, "rb") as handle:
                header_size = int.from_bytes(handle.read(8), "little")
                if not 0 < header_size <= size - 8:
                    raise ValueError(f"header length {header_size}")
                header = json.loads(handle.read(header_size))
            data_start, tensors = 8 + header_size, {}
            for key, item in header.items():
                if key == "__metadata__":
                    continue
                dtype, shape = _SAFETENSORS_DTYPES[item["dtype"]], [int(n) for n in item["shape"]]
                begin, end = (int(n) for n in item["data_offsets"])
                expected = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
                if end - begin != expected or not 0 <= begin <= end <= size - data_start:
                    raise ValueError(f"tensor {key}: byte range {begin}-{end} for shape {shape}")
                tensors[key] = (dtype, shape, begin)
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as error:
            raise self._damaged(name, f"the shard cannot be read ({type(error).__name__}: {error})") from error
        if not tensors or any(shape[:1] != [record["rows"]] for _, shape, _ in tensors.values()):
            raise self._damaged(name, f"the shard does not hold {record['rows']} rows")
        return data_start, tensors

    def _read_rows(self, name: str, rows: list[int], keys: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """The given rows of the tensors `keys` (default: all) of one shard, read from the file without loading the
        shard. Per tensor, the rows from the first to the last asked for are read in one call when they span at most
        `max(ROW_SPAN, 4 * len(rows))` rows (always, for shards of the default 64 videos); otherwise rows at most
        `ROW_GAP` apart are read together. Memory grows with `len(rows)`, never with the shard or the index."""
        if name not in self._layouts:
            self._layouts[name] = self._shard_layout(name)
        data_start, layout = self._layouts[name]
        wanted = sorted(set(rows))
        if wanted[-1] - wanted[0] < max(ROW_SPAN, 4 * len(wanted)):
            runs = [(wanted[0], wanted[-1] + 1)]
        else:
            runs = []
            for row in wanted:
                if runs and row - runs[-1][1] < ROW_GAP:
                    runs[-1] = (runs[-1][0], row + 1)
                else:
                    runs.append((row, row + 1))
        where, read = {}, 0
        for start, stop in runs:
            where.update({row: read + row - start for row in range(start, stop)})
            read += stop - start
        pick = torch.tensor([where[row] for row in rows], dtype=torch.long)
        tensors = {}
        with open(self.directory / name, "rb", buffering=0) as handle:
            for key in keys if keys is not None else layout:
                dtype, shape, begin = layout[key]
                row_bytes = math.prod(shape[1:]) * torch.empty((), dtype=dtype).element_size()
                data = bytearray(read * row_bytes)
                view, filled = memoryview(data), 0
                for start, stop in runs:
                    size = (stop - start) * row_bytes
                    handle.seek(data_start + begin + start * row_bytes)
                    if handle.readinto(view[filled : filled + size]) != size:
                        raise self._damaged(name, "the shard ends before its last row (truncated?)")
                    filled += size
                block = torch.frombuffer(data, dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)
                tensors[key] = block.view(dtype).reshape(read, *shape[1:])[pick]
        return tensors

    def _rows_by_shard(self, positions: list[int]) -> dict[str, list[int]]:
        grouped: dict[str, list[int]] = {}
        for position in positions:
            grouped.setdefault(self.entries[position].shard, []).append(position)
        return grouped

    def read_features(self, positions: list[int]) -> HBIVideoFeatures:
        """
        The features of the indexed videos at `positions` (indices into `entries`), in that order, reading only
        their rows from the shards: memory grows with `len(positions)`, not with the index.

        Raises:
            [`HBIIndexDamagedError`]: a shard is missing, truncated or unreadable, or holds NaN / infinite features
                for one of these videos (the message names the shard and the videos).
        """
        parts, order = [], []
        for name, members in self._rows_by_shard(positions).items():
            tensors = self._read_rows(name, [self.entries[p].row for p in members])
            bad = non_finite_rows(tensors)
            if bad.any():
                videos = [self.entries[p].path for p, is_bad in zip(members, bad.tolist()) if is_bad]
                raise self._damaged(name, f"the features of {videos} hold NaN or infinite values")
            parts.append(tensors_to_features(tensors))
            order.extend(members)
        features = HBIVideoFeatures.concatenate(parts) if len(parts) > 1 else parts[0]
        if order == list(positions):
            return features
        where = {position: i for i, position in enumerate(order)}
        return features[torch.tensor([where[p] for p in positions], dtype=torch.long)]

    def global_embeddings(self) -> torch.Tensor:
        """
        The global embedding (mean frame token) of every indexed video `(videos, dim)`, in manifest order, read
        without the token features (a 20th or less of the index at CLIP shapes).

        Raises:
            [`HBIInputError`]: the index holds no video. [`HBIIndexDamagedError`]: a shard is missing, truncated or
                unreadable, or a global embedding is NaN / infinite (naming the videos).
        """
        if not self.entries:
            raise HBIInputError(f"the index {self.directory} holds no video")
        parts, order = [], []
        for name, members in self._rows_by_shard(range(len(self.entries))).items():
            embeddings = self._read_rows(name, [self.entries[p].row for p in members], ["global_embeddings"])
            bad = non_finite_rows(embeddings)
            if bad.any():
                videos = [self.entries[p].path for p, is_bad in zip(members, bad.tolist()) if is_bad]
                raise self._damaged(name, f"the features of {videos} hold NaN or infinite values")
            parts.append(embeddings["global_embeddings"])
            order.extend(members)
        return torch.cat(parts)[torch.tensor(order).argsort()]


def _pad_frames(videos: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack `(frames_i, 3, H, W)` videos, padding to the longest with masked frames."""
    longest = max(pixel_values.shape[0] for pixel_values, _ in videos)
    pixel_values = torch.stack(
        [F.pad(pixels, (0, 0, 0, 0, 0, 0, 0, longest - pixels.shape[0])) for pixels, _ in videos]
    )
    video_mask = torch.stack([F.pad(mask, (0, longest - mask.shape[0])) for _, mask in videos])
    return pixel_values, video_mask


def _index_folder_is_ours(index_path: Path) -> bool:
    """Whether `index_path` carries this package's marker. A folder that exists without the marker must be empty.

    Raises:
        `FileExistsError`: the folder holds files that this package did not create; nothing is written or deleted.
    """
    if not index_path.exists():
        return False
    if not index_path.is_dir():
        raise NotADirectoryError(f"index folder (--out) {index_path}: exists and is not a folder")
    if (index_path / MARKER_NAME).is_file():
        return True
    foreign = sorted(path.name for path in index_path.iterdir() if path.name != LOCK_NAME)
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise FileExistsError(
            f"index folder (--out) {index_path}: holds files that `hbi-hf index` did not create ({shown}) and no "
            f"{MARKER_NAME} marker. Nothing was written or deleted: give a new or an empty folder"
        )
    return False


def _create_index_folder(index_path: Path) -> None:
    """Create `index_path` (or adopt it if empty) and write the marker that lets this package manage its files."""
    index_path.mkdir(parents=True, exist_ok=True)
    if not _index_folder_is_ours(index_path):
        (index_path / MARKER_NAME).write_text(
            "This folder is a video index written by `hbi-hf index`; it deletes only the files it created here.\n"
        )


class _WriterLock:
    """The index's writer lock (a `filelock.FileLock` on `.hbi-index.lock`): a second writer waits for the first,
    saying so, for at most `timeout` seconds (`None`: as long as it takes)."""

    def __init__(self, index_path: Path, timeout: float | None):
        self.index_path, self.timeout = index_path, timeout
        self.lock = FileLock(str(index_path / LOCK_NAME))

    def __enter__(self) -> None:
        try:
            self.lock.acquire(timeout=0)
            return
        except Timeout:
            logger.warning("%s: another `hbi-hf index` run is updating this index; waiting for it", self.index_path)
        try:
            self.lock.acquire(timeout=-1 if self.timeout is None else self.timeout)
        except Timeout as error:
            raise HBIIndexLockedError(
                f"{self.index_path}: another `hbi-hf index` run held the writer lock ({LOCK_NAME}) for more than "
                f"{self.timeout} s"
            ) from error

    def __exit__(self, *exc_info) -> None:
        self.lock.release()


def _load_encoder(model_dir: str | os.PathLike, device: str | torch.device):
    model, _ = load_hbi_model(model_dir)
    return model.to(device), load_processor(model_dir)


def _drop_from_lists(report: HBIIndexReport, path: str) -> None:
    for listed in (report.added, report.updated, report.repaired):
        if path in listed:
            listed.remove(path)


def _plan_update(
    index: HBIVideoIndex,
    files: list[Path],
    problems: list[HBIIndexFailure],
    video_root: Path,
    report: HBIIndexReport,
    stale_shards: set[str],
    reencode_all: bool,
) -> list[dict]:
    """Drop from `index` the entries of removed and changed files, of files in `stale_shards` (every entry if
    `reencode_all`) and of the listed files that cannot be read (`problems` from [`scan_videos`], and files whose
    hashing fails); return the metadata of the files to encode. A file that cannot be read is reported, not fatal;
    one that was indexed is also reported as `dropped`. The planned files that were indexed are marked `indexed`."""
    known = {entry.path: entry for entry in index.entries}

    def unreadable(failure: HBIIndexFailure) -> None:
        if failure.path.endswith("/"):  # a folder that cannot be listed: the indexed videos in it
            inside = sorted(path for path in known if failure.path == "./" or path.startswith(failure.path))
            for path in inside:
                del known[path]
            if inside:
                failure.reason += f"; the {len(inside)} indexed videos in it were removed from the index"
                report.dropped.extend(inside)
        elif known.pop(failure.path, None) is not None:
            failure.reason += "; it was in the index and was removed from it"
            report.dropped.append(failure.path)
        logger.warning("skipping %s: %s", failure.path, failure.reason)
        report.failed.append(failure)

    for problem in problems:
        unreadable(problem)
    to_encode, kept = [], []
    for path in files:
        relative = path.relative_to(video_root).as_posix()
        entry = known.get(relative)
        stale = entry is not None and (reencode_all or entry.shard in stale_shards)
        try:
            stat_result = path.stat()
            same_stat = entry is not None and (entry.size, entry.mtime_ns) == (
                stat_result.st_size,
                stat_result.st_mtime_ns,
            )
            if not stale and same_stat:
                kept.append(known.pop(relative))
                continue
            digest = file_sha256(path)
        except OSError as error:
            vanished = " (it vanished after it was listed)" if isinstance(error, FileNotFoundError) else ""
            unreadable(HBIIndexFailure(relative, "unreadable", f"{type(error).__name__}: {error}{vanished}"))
            continue
        known.pop(relative, None)
        if entry is not None and not stale and entry.sha256 == digest:
            entry.size, entry.mtime_ns = stat_result.st_size, stat_result.st_mtime_ns
            kept.append(entry)
            continue
        if entry is None:
            report.added.append(relative)
        elif entry.shard in stale_shards and entry.sha256 == digest:
            report.repaired.append(relative)
        else:
            report.updated.append(relative)
        metadata = dict(path=relative, size=stat_result.st_size, mtime_ns=stat_result.st_mtime_ns, sha256=digest)
        to_encode.append(dict(metadata, indexed=entry is not None))
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
    lock_timeout: float | None = None,
) -> HBIIndexReport:
    r"""
    Create or update the index of the videos under `video_dir`: new files are encoded, files whose content changed are
    re-encoded, removed files are dropped, unchanged files (same size and modification time, or same SHA-256) are kept.
    Features are written every `checkpoint_every` encoded videos (and on interruption), so a run that is stopped
    resumes where it stopped.

    Safety:

    * the whole run holds the index's writer lock: a second run on the same folder waits for it (see `lock_timeout`);
    * every shard is verified against the SHA-256 in the manifest; the videos of a missing or damaged shard are
      re-encoded (`report.damaged_shards`, `report.repaired`);
    * when the model's fingerprint ([`HBIModelFingerprint`]: weights, config and processor files) differs from the
      one the index was built with (retrained in place, or another `model_name_or_path`), every video is re-encoded;
    * a file that cannot be read or decoded, or whose features are not finite, is skipped and reported
      (`report.failed`, totals per kind in `report.failure_totals()`), never fatal;
    * nothing is written before the model loads, and files are deleted only in a folder this package created.

    Args:
        video_dir (`str` or `os.PathLike`): folder searched recursively for files with a video extension.
        index_dir (`str` or `os.PathLike`): the index folder; created if missing; an existing folder must be an index
            or empty.
        model_name_or_path (`str`, *optional*): saved HBI model folder with its processor; required for a new index
            (default: the index's model folder).
        batch_size (`int`, *optional*, defaults to 8): videos encoded per forward pass (>= 1).
        checkpoint_every (`int`, *optional*, defaults to 64): videos per shard (>= 1).
        extensions (`Iterable[str]`, *optional*): file suffixes treated as videos.
        device (`str` or `torch.device`, *optional*, defaults to `"cpu"`): where the model runs.
        show_progress (`bool`, *optional*, defaults to `True`): show a progress bar.
        lock_timeout (`float`, *optional*): seconds to wait for another run's writer lock (default: no limit).

    Returns:
        [`HBIIndexReport`]

    Raises:
        `NotADirectoryError`: `video_dir` is not a folder. `FileNotFoundError`: no such model folder.
        `FileExistsError`: `index_dir` holds files this package did not create. [`HBIIndexLockedError`]: the lock
        was not free within `lock_timeout`. [`HBIIndexDamagedError`]: the manifest is unreadable.
    """
    if batch_size < 1 or checkpoint_every < 1:
        raise HBIInputError(f"batch_size and checkpoint_every must be >= 1; got {batch_size} and {checkpoint_every}")
    video_root = Path(video_dir).resolve()
    if not video_root.is_dir():
        raise NotADirectoryError(f"video folder {video_dir}: no such folder")
    index_path = Path(index_dir)
    if model_name_or_path is not None:
        model_name_or_path = resolve_model_folder(model_name_or_path)
    encoder = None
    if not _index_folder_is_ours(index_path):
        if model_name_or_path is None:
            raise HBIInputError(f"{index_dir} holds no index yet: a model (--model) is needed to create one")
        encoder = _load_encoder(model_name_or_path, device)  # a wrong model fails here, before anything is written
        _create_index_folder(index_path)
    with _WriterLock(index_path, lock_timeout):
        return _update_index(
            index_path,
            video_root,
            model_name_or_path,
            encoder,
            batch_size,
            checkpoint_every,
            extensions,
            device,
            show_progress,
        )


def _update_index(
    index_path: Path,
    video_root: Path,
    model_name_or_path: str | os.PathLike | None,
    encoder: tuple | None,
    batch_size: int,
    checkpoint_every: int,
    extensions: Iterable[str],
    device: str | torch.device,
    show_progress: bool,
) -> HBIIndexReport:
    """The body of [`build_index`], run with the writer lock held."""
    report = HBIIndexReport()
    if (index_path / MANIFEST_NAME).is_file():
        index = HBIVideoIndex.load(index_path)
        fingerprint = HBIModelFingerprint.of(resolve_model_folder(model_name_or_path, index), known=index.model)
        if fingerprint.sha256 != index.model.sha256:
            logger.warning(
                "the model %s differs from the one %s was built with (%s; weights, config or processor changed): "
                "re-encoding every video",
                fingerprint.path,
                index_path,
                index.model.path,
            )
            report.model_changed = True
    elif model_name_or_path is None:
        raise HBIInputError(f"{index_path} holds no index yet: a model (--model) is needed to create one")
    else:
        fingerprint = HBIModelFingerprint.of(model_name_or_path)
        index = HBIVideoIndex(index_path, model=fingerprint, video_root=str(video_root))
    index.video_root = str(video_root)

    report.damaged_shards = index.verify_shards()
    for problem in report.damaged_shards:
        logger.warning("%s: shard %s: %s; its videos are re-encoded", problem.kind, problem.path, problem.reason)
    stale_shards = {problem.path for problem in report.damaged_shards}
    extensions = tuple(extensions)
    files, problems = scan_videos(video_root, extensions)
    if not files and not problems:
        emptied = f"; the {len(index.entries)} videos of the index are removed from it" if index.entries else ""
        logger.warning(
            f"{video_root}: no video file in this folder or its subfolders (looked for {' '.join(extensions)}): "
            f"nothing to index{emptied}"
        )
    to_encode = _plan_update(
        index, files, problems, video_root, report, stale_shards, reencode_all=report.model_changed
    )
    if to_encode and encoder is None:
        encoder = _load_encoder(fingerprint.path, device)  # before the manifest changes
    index.model = fingerprint
    index.failed = list(report.failed)
    index.compact()
    if not to_encode:
        return report

    model, processor = encoder
    encoded: list[HBIVideoFeatures] = []
    encoded_metadata: list[dict] = []
    batch: list[tuple[torch.Tensor, torch.Tensor]] = []
    batch_metadata: list[dict] = []

    kept_before, failed_before = len(index.entries), len(report.failed)

    def fail(item: dict, kind: str, reason: str) -> None:
        if item["indexed"]:
            reason += "; it was in the index and was removed from it"
            report.dropped.append(item["path"])
        logger.warning("skipping %s: %s", item["path"], reason)
        report.failed.append(HBIIndexFailure(item["path"], kind, reason))
        _drop_from_lists(report, item["path"])

    def decode_failure(path: Path, error: Exception) -> tuple[str, str]:
        """The kind and reason of a file the processor could not decode."""
        reason = f"{type(error).__name__}: {error}"
        if not path.exists():
            return "unreadable", f"the file vanished after it was listed ({reason})"
        if isinstance(error, PermissionError) or isinstance(error.__cause__, PermissionError):
            return "unreadable", reason
        return "undecodable", reason

    def encode_pending_batch() -> None:
        if not batch:
            return
        features = encode_video_batch(model, *_pad_frames(batch))
        bad = non_finite_rows(features_to_tensors(features))
        for item, is_bad in zip(batch_metadata, bad.tolist()):
            if is_bad:
                fail(item, "non-finite features", "the model's features hold NaN or infinite values")
        encoded.append(features[(~bad).nonzero().squeeze(1)])
        encoded_metadata.extend(item for item, is_bad in zip(batch_metadata, bad.tolist()) if not is_bad)
        batch.clear()
        batch_metadata.clear()

    def write_checkpoint() -> None:
        if not encoded_metadata:
            return
        features = HBIVideoFeatures.concatenate(encoded)
        metadata = [{key: value for key, value in item.items() if key != "indexed"} for item in encoded_metadata]
        encoded.clear()  # before writing: a write interrupted half-way is completed by the final save, never repeated
        encoded_metadata.clear()
        index.append_shard(features, metadata)

    try:
        try:
            with tqdm(to_encode, desc="indexing", unit="video", disable=not show_progress) as progress:
                for item in progress:
                    path = video_root / item["path"]
                    try:
                        batch.append(decode_video(processor, path))
                    except Exception as error:  # any decoder failure: the file is reported, the run goes on
                        fail(item, *decode_failure(path, error))
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
    except KeyboardInterrupt as interrupt:
        saved = len(index.entries) - kept_before  # every entry is in the manifest saved just above
        left = len(to_encode) - saved - (len(report.failed) - failed_before)
        raise HBIIndexInterrupted(index_path, saved, len(index), left) from interrupt
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


class HBIIndexGallery:
    r"""
    The videos of an index as [`rank_videos`] reads them: their global embeddings `(videos, dim)` held in memory
    (read once), the other features read from the shards for the videos asked for (`gallery[positions]`, an
    [`HBIVideoFeatures`]), so the memory of a search grows with the shortlist and the scoring block, not with the
    index.

    Args:
        index ([`HBIVideoIndex`]): a loaded index.

    Raises:
        [`HBIInputError`]: the index holds no video. [`HBIIndexDamagedError`]: see
            [`HBIVideoIndex.global_embeddings`].
    """

    def __init__(self, index: HBIVideoIndex):
        self.index = index
        self.global_embeddings = index.global_embeddings()

    def __len__(self) -> int:
        return len(self.index.entries)

    def __getitem__(self, positions: torch.Tensor) -> HBIVideoFeatures:
        return self.index.read_features(positions.tolist())


def global_shortlist(
    text_features: HBITextFeatures, video_features: "HBIVideoFeatures | HBIIndexGallery", size: int
) -> torch.Tensor:
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
    video_features: "HBIVideoFeatures | HBIIndexGallery",
    top_k: int = 10,
    shortlist: int = 0,
    chunk_size: int | None = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""
    Rank videos for one text. With `shortlist > 0`, a two-stage search: the `shortlist` videos closest by global
    embedding ([`global_shortlist`]), then the full HBI score ([`HBIModel.score`]) of those only; with `shortlist=0`
    every video gets the full score, `chunk_size` videos at a time.

    Args:
        text_features ([`HBITextFeatures`]): one text (batch 1).
        video_features ([`HBIVideoFeatures`] or [`HBIIndexGallery`]): the gallery; from an [`HBIIndexGallery`] only
            the shortlisted videos (or one block of `chunk_size` videos at a time) are read from disk.
        top_k (`int`): results (>= 1). shortlist (`int`): >= 0. chunk_size (`int`, *optional*): videos scored per
            block (`None`: all at once).

    Returns:
        `(scores, indices)`, each of shape `(min(top_k, candidates),)`, best first; indices into `video_features`.

    Raises:
        [`HBIInputError`]: `top_k < 1` or `shortlist < 0`; [`HBIIndexDamagedError`]: a score is NaN (never ranked: the
            message gives the indices of the videos, or says that the text's features are not finite).
    """
    if top_k < 1 or shortlist < 0:
        raise HBIInputError(f"top_k must be >= 1 and shortlist >= 0; got {top_k} and {shortlist}")
    if shortlist > 0:
        candidates = global_shortlist(text_features, video_features, shortlist)
        scores = model.score(text_features, video_features[candidates], chunk_size=chunk_size)[0]
    else:
        candidates = torch.arange(len(video_features))
        step = chunk_size or len(candidates)
        scores = torch.cat(
            [
                model.score(text_features, video_features[block], chunk_size=chunk_size)[0]
                for block in candidates.split(step)
            ]
        )
    nan = torch.isnan(scores)
    if nan.any():
        text_finite = all(
            bool(torch.isfinite(t).all()) for t in features_to_tensors(text_features).values() if t.is_floating_point()
        )
        culprit = "the query's features" if not text_finite else f"videos {candidates[nan].tolist()}"
        raise HBIIndexDamagedError(f"NaN scores for {int(nan.sum())} of {len(scores)} videos (from {culprit})")
    best = scores.topk(min(top_k, scores.shape[0]))
    return best.values, candidates[best.indices]


class HBIVideoSearcher:
    r"""
    An index loaded once with its model and processor, to answer many queries in one process (`hbi-hf search
    --queries-file`).

    Args:
        index_dir (`str` or `os.PathLike`): an index folder written by [`build_index`].
        model_name_or_path (`str`, *optional*): the model folder (default: the index's); it must have the index's
            fingerprint.

    Raises:
        [`HBIModelMismatchError`]: the model's weights, config or processor differ from the index's.
        [`HBIIndexDamagedError`]: the manifest or a shard is damaged (the message names the file and the fix).
        `FileNotFoundError`: no index or no model folder.
    """

    def __init__(self, index_dir: str | os.PathLike, model_name_or_path: str | os.PathLike | None = None):
        self.index_dir = index_dir
        self.index, self.features, self._stamp = self._load(index_dir)
        fingerprint = HBIModelFingerprint.of(
            resolve_model_folder(model_name_or_path, self.index), known=self.index.model
        )
        if fingerprint.sha256 != self.index.model.sha256:
            raise HBIModelMismatchError(
                f"the model {fingerprint.path} (fingerprint {fingerprint.sha256[:12]}) is not the model the index "
                f"{index_dir} was built with ({self.index.model.path}, fingerprint {self.index.model.sha256[:12]}): "
                "its weights, config or processor differ. Re-index with this model (`hbi-hf index "
                f"{self.index.video_root} --model {fingerprint.path} --out {index_dir}`) or search with the index's"
            )
        self.model, _ = load_hbi_model(fingerprint.path)
        self.processor = load_processor(fingerprint.path)
        self.paths = self.index.paths()

    @staticmethod
    def _manifest_stamp(index_dir: str | os.PathLike) -> tuple[int, int] | None:
        manifest = Path(index_dir) / MANIFEST_NAME
        try:
            status = manifest.stat()
        except FileNotFoundError:
            return None
        return status.st_ino, status.st_mtime_ns

    @classmethod
    def _load(
        cls, index_dir: str | os.PathLike, attempts: int = 3
    ) -> tuple[HBIVideoIndex, HBIIndexGallery, tuple[int, int] | None]:
        """The manifest and the gallery it describes (the global embeddings are read now, the rest per query). An
        `hbi-hf index` run may replace the manifest and then delete shards it no longer refers to while this reads
        them: a shard found missing or damaged after the manifest was replaced is read again through the new
        manifest. Returns the index, its gallery and the manifest's identity (inode, modification time) when read."""
        attempt = 1
        while True:
            stamp = cls._manifest_stamp(index_dir)
            index = HBIVideoIndex.load(index_dir)
            try:
                return index, HBIIndexGallery(index), stamp
            except HBIIndexDamagedError:
                replaced = cls._manifest_stamp(index_dir) not in (None, stamp)
                if not replaced or attempt == attempts:
                    raise
                attempt += 1

    def search(self, query: str, top_k: int = 10, shortlist: int = 1000) -> list[HBISearchHit]:
        """Rank the indexed videos for `query`; see [`rank_videos`] (only the shortlisted videos' features are read
        from disk). When an `hbi-hf index` run has replaced the index since it was loaded and a shard it read is gone,
        the index is loaded again and the query answered from it.

        Raises:
            [`HBIInputError`]: an empty or whitespace-only query (it has no words to match), or one that is not UTF-8
                text. [`HBIIndexDamagedError`]: see [`rank_videos`] and [`HBIVideoIndex.read_features`]."""
        if not query.strip():
            raise HBIInputError(f"the query {query!r} is empty: give some words to search for")
        text_features, _ = encode_text(self.model, self.processor, query)
        text_features = text_features.map(lambda t: t.cpu())
        try:
            try:
                scores, indices = rank_videos(self.model, text_features, self.features, top_k, shortlist)
            except HBIIndexDamagedError:
                if self._manifest_stamp(self.index_dir) in (None, self._stamp):
                    raise
                self.index, self.features, self._stamp = self._load(self.index_dir)
                self.paths = self.index.paths()
                scores, indices = rank_videos(self.model, text_features, self.features, top_k, shortlist)
        except HBIIndexDamagedError as error:
            raise HBIIndexDamagedError(f"query {query!r} on {self.index.directory}: {error}") from error
        return [
            HBISearchHit(rank=rank, path=self.paths[i], score=float(score))
            for rank, (score, i) in enumerate(zip(scores.tolist(), indices.tolist()), start=1)
        ]

    def search_many(
        self, queries: Iterable[str], top_k: int = 10, shortlist: int = 1000
    ) -> Iterator[list[HBISearchHit]]:
        """[`search`] for each query, lazily (queries can come from a stream)."""
        for query in queries:
            yield self.search(query, top_k, shortlist)


def search_index(
    index_dir: str | os.PathLike,
    query: str,
    top_k: int = 10,
    shortlist: int = 1000,
    model_name_or_path: str | os.PathLike | None = None,
) -> list[HBISearchHit]:
    """Rank the videos of an index for `query` with the index's model (or `model_name_or_path`, which must have the
    index's fingerprint); see [`HBIVideoSearcher`] and [`rank_videos`]."""
    return HBIVideoSearcher(index_dir, model_name_or_path).search(query, top_k, shortlist)


__all__ = [
    "HBIIndexDamagedError",
    "HBIIndexEntry",
    "HBIIndexFailure",
    "HBIIndexInterrupted",
    "HBIIndexLockedError",
    "HBIIndexReport",
    "HBIModelFingerprint",
    "HBIModelMismatchError",
    "HBISearchHit",
    "HBIVideoIndex",
    "HBIVideoSearcher",
    "build_index",
    "decode_video",
    "encode_text",
    "encode_video_batch",
    "features_to_tensors",
    "global_shortlist",
    "load_hbi_model",
    "load_processor",
    "non_finite_rows",
    "rank_videos",
    "resolve_model_folder",
    "scan_videos",
    "search_index",
    "tensors_to_features",
]
