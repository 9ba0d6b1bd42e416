"""Loaders for the standard benchmarks' annotation files (and a user's own folder of videos).

Every loader reads annotation files from local disk and returns a `datasets.Dataset` / `DatasetDict` of string paths;
videos are decoded later, by a collator. Row formats:

* retrieval: `{"video_id": str, "video_path": str, "caption": str}`, one row per caption (or per paragraph);
* QA: `{"video_id", "video_path", "question": str, "answer": str, "label": int}`; `label` is a `ClassLabel` over the
  answer vocabulary (the top-K answers of train) and -1 for an answer outside it (kept, and counted wrong);
* captioning: training rows `{"video_id", "video_path", "caption"}`, evaluation rows
  `{"video_id", "video_path", "references": list[str]}`.

See docs/datasets.md for each dataset's expected files and where they come from.
"""

import csv
import json
import pickle
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value
from transformers.utils import logging

logger = logging.get_logger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".3gp", ".flv", ".wmv")

RETRIEVAL_FEATURES = Features({"video_id": Value("string"), "video_path": Value("string"), "caption": Value("string")})
REFERENCE_FEATURES = Features(
    {"video_id": Value("string"), "video_path": Value("string"), "references": Sequence(Value("string"))}
)


def _read_json(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    with open(path, encoding="utf-8") as handle:
        try:
            return json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error


def _read_csv(path: str | Path, required: Iterable[str]) -> list[dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    missing = [column for column in required if rows and column not in rows[0]]
    if missing or not rows:
        raise ValueError(f"{path}: expected a CSV with columns {list(required)}; missing {missing or 'all rows'}")
    return rows


def _read_id_list(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def resolve_video_path(videos_dir: str | Path, names: Iterable[str], default_extension: str = ".mp4") -> str:
    """The first existing file among `names` (each tried as given and with every common video extension) in
    `videos_dir`; if none exists, `videos_dir/<first name><default_extension>` (the collator then reports it
    missing)."""
    videos_dir = Path(videos_dir)
    names = list(names)
    for name in names:
        candidate = videos_dir / name
        if candidate.suffix.lower() in VIDEO_EXTENSIONS and candidate.is_file():
            return str(candidate)
        stem = candidate.with_suffix("") if candidate.suffix.lower() in VIDEO_EXTENSIONS else candidate
        for extension in VIDEO_EXTENSIONS:
            if stem.with_name(stem.name + extension).is_file():
                return str(stem.with_name(stem.name + extension))
    first = Path(names[0])
    return str(videos_dir / (names[0] if first.suffix.lower() in VIDEO_EXTENSIONS else names[0] + default_extension))


def _retrieval_dataset(rows: list[dict[str, str]]) -> Dataset:
    return Dataset.from_list(rows, features=RETRIEVAL_FEATURES)


def _reference_dataset(rows: list[dict]) -> Dataset:
    return Dataset.from_list(rows, features=REFERENCE_FEATURES)


def load_msrvtt_retrieval(
    annotations_dir: str | Path,
    videos_dir: str | Path,
    train_csv: str = "MSRVTT_train.9k.csv",
    test_csv: str = "MSRVTT_JSFUSION_test.csv",
    data_json: str = "MSRVTT_data.json",
) -> DatasetDict:
    """MSR-VTT retrieval: "train" = the 9k split with all 20 captions per video (180k rows), "test" = 1k-A (1,000
    video-caption pairs from `MSRVTT_JSFUSION_test.csv`)."""
    annotations_dir = Path(annotations_dir)
    train_ids = [row["video_id"] for row in _read_csv(annotations_dir / train_csv, ["video_id"])]
    captions = _msrvtt_captions(annotations_dir / data_json)
    train_rows = []
    for video_id in train_ids:
        if video_id not in captions:
            raise ValueError(f"{annotations_dir / data_json}: no sentences for train video {video_id}")
        path = str(Path(videos_dir) / f"{video_id}.mp4")
        train_rows += [{"video_id": video_id, "video_path": path, "caption": text} for text in captions[video_id]]
    test_rows = [
        {
            "video_id": row["video_id"],
            "video_path": str(Path(videos_dir) / f"{row['video_id']}.mp4"),
            "caption": row["sentence"],
        }
        for row in _read_csv(annotations_dir / test_csv, ["video_id", "sentence"])
    ]
    return DatasetDict({"train": _retrieval_dataset(train_rows), "test": _retrieval_dataset(test_rows)})


def _msrvtt_captions(data_json: Path) -> dict[str, list[str]]:
    data = _read_json(data_json)
    if not isinstance(data, dict) or "sentences" not in data:
        raise ValueError(f"{data_json}: expected MSRVTT_data.json with a 'sentences' list")
    captions = defaultdict(list)
    for sentence in data["sentences"]:
        captions[sentence["video_id"]].append(sentence["caption"])
    return captions


def load_msrvtt_captioning(annotations_dir: str | Path, videos_dir: str | Path, data_json: str = "MSRVTT_data.json"):
    """MSR-VTT captioning with the official split of `MSRVTT_data.json` (6,513 train / 497 validate / 2,990 test
    videos): "train" has one row per caption, "validation" and "test" one row per video with all its references."""
    data_json = Path(annotations_dir) / data_json
    data = _read_json(data_json)
    if not isinstance(data, dict) or "videos" not in data:
        raise ValueError(f"{data_json}: expected MSRVTT_data.json with a 'videos' list")
    captions = _msrvtt_captions(data_json)
    splits = defaultdict(list)
    for video in data["videos"]:
        splits[video["split"]].append(video["video_id"])

    def path(video_id: str) -> str:
        return str(Path(videos_dir) / f"{video_id}.mp4")

    train_rows = [
        {"video_id": v, "video_path": path(v), "caption": text} for v in splits["train"] for text in captions[v]
    ]
    result = {"train": _retrieval_dataset(train_rows)}
    for name, split in (("validation", "validate"), ("test", "test")):
        result[name] = _reference_dataset(
            [{"video_id": v, "video_path": path(v), "references": captions[v]} for v in splits[split]]
        )
    return DatasetDict(result)


def _read_msvd_captions(captions_file: Path, allow_pickle: bool) -> dict[str, list[str]]:
    if captions_file.suffix == ".pkl":
        if not allow_pickle:
            raise ValueError(
                f"{captions_file}: refusing to unpickle (a pickle can run arbitrary code). Pass the MSVD corpus's "
                "AllVideoDescriptions.txt or a JSON {video_id: [captions]} file, or allow_pickle=True for a file you "
                "trust."
            )
        with open(captions_file, "rb") as handle:
            raw = pickle.load(handle)  # noqa: S301 - explicit opt-in above
        return {
            key: [" ".join(tokens) if isinstance(tokens, list) else str(tokens) for tokens in value]
            for key, value in raw.items()
        }
    if captions_file.suffix == ".json":
        return {key: list(value) for key, value in _read_json(captions_file).items()}
    if not captions_file.is_file():
        raise FileNotFoundError(f"annotation file not found: {captions_file}")
    captions = defaultdict(list)
    for line in captions_file.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        video_id, _, text = line.strip().partition(" ")
        captions[video_id].append(text)
    return captions


def load_msvd_retrieval(
    annotations_dir: str | Path,
    videos_dir: str | Path,
    captions_file: str = "AllVideoDescriptions.txt",
    allow_pickle: bool = False,
) -> DatasetDict:
    """MSVD retrieval (CLIP4Clip protocol: 1,200 train / 100 val / 670 test videos from `train_list.txt`,
    `val_list.txt`, `test_list.txt`), one row per caption in every split. Captions come from the corpus's
    `AllVideoDescriptions.txt` ("<video_id> <caption>" lines), a JSON `{video_id: [captions]}`, or, only with
    `allow_pickle=True`, CLIP4Clip's `raw-captions.pkl`."""
    annotations_dir = Path(annotations_dir)
    captions = _read_msvd_captions(annotations_dir / captions_file, allow_pickle)
    result = {}
    for name, list_file in (("train", "train_list.txt"), ("validation", "val_list.txt"), ("test", "test_list.txt")):
        rows = []
        for video_id in _read_id_list(annotations_dir / list_file):
            if video_id not in captions:
                raise ValueError(f"{annotations_dir / captions_file}: no captions for {name} video {video_id}")
            path = str(Path(videos_dir) / f"{video_id}.avi")
            rows += [{"video_id": video_id, "video_path": path, "caption": text} for text in captions[video_id]]
        result[name] = _retrieval_dataset(rows)
    return DatasetDict(result)


def load_activitynet_retrieval(
    annotations_dir: str | Path, videos_dir: str | Path, train_json: str = "train.json", val_json: str = "val_1.json"
) -> DatasetDict:
    """ActivityNet Captions paragraph retrieval: each video's segment sentences joined, in time order, into one
    paragraph. "train" (10,009 videos) from `train.json`, "test" ("val1", 4,917 videos) from `val_1.json`."""
    annotations_dir = Path(annotations_dir)
    result = {}
    for name, file_name in (("train", train_json), ("test", val_json)):
        data = _read_json(annotations_dir / file_name)
        rows = []
        for video_id, entry in data.items():
            paragraph = _activitynet_paragraph(entry)
            names = [video_id, video_id[2:]] if video_id.startswith("v_") else [video_id, f"v_{video_id}"]
            rows.append(
                {"video_id": video_id, "video_path": resolve_video_path(videos_dir, names), "caption": paragraph}
            )
        result[name] = _retrieval_dataset(rows)
    return DatasetDict(result)


def _activitynet_paragraph(entry: dict) -> str:
    sentences = entry["sentences"]
    starts = [segment[0] for segment in entry.get("timestamps", [])]
    if len(starts) == len(sentences):
        sentences = [sentence for _, sentence in sorted(zip(starts, sentences, strict=True), key=lambda pair: pair[0])]
    return " ".join(sentence.strip() for sentence in sentences)


def load_didemo_retrieval(
    annotations_dir: str | Path,
    videos_dir: str | Path,
    split_files: dict[str, str] | None = None,
) -> DatasetDict:
    """DiDeMo paragraph retrieval (CLIP4Clip protocol): all descriptions of a video joined into one paragraph, from
    `train_data.json` / `val_data.json` / `test_data.json` (lists of `{"video", "description", "times", ...}`); a
    missing val file is skipped."""
    annotations_dir = Path(annotations_dir)
    split_files = split_files or {"train": "train_data.json", "validation": "val_data.json", "test": "test_data.json"}
    result = {}
    for name, file_name in split_files.items():
        if name == "validation" and not (annotations_dir / file_name).is_file():
            continue
        paragraphs = defaultdict(list)
        for entry in _read_json(annotations_dir / file_name):
            paragraphs[entry["video"]].append(entry["description"].strip())
        result[name] = _retrieval_dataset(
            [
                {"video_id": video, "video_path": resolve_video_path(videos_dir, [video]), "caption": " ".join(texts)}
                for video, texts in paragraphs.items()
            ]
        )
    return DatasetDict(result)


def build_answer_vocabulary(answers: Iterable[str], top_k: int = 1000) -> list[str]:
    """The `top_k` most frequent answers (ties broken alphabetically, so the order is deterministic)."""
    counts = Counter(answers)
    return [answer for answer, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top_k]]


def _qa_dataset_dict(splits: dict[str, list[dict]], top_k: int, vocabulary: list[str] | None) -> DatasetDict:
    if vocabulary is None:
        vocabulary = build_answer_vocabulary((row["answer"] for row in splits["train"]), top_k)
    index = {answer: i for i, answer in enumerate(vocabulary)}
    features = Features(
        {
            "video_id": Value("string"),
            "video_path": Value("string"),
            "question": Value("string"),
            "answer": Value("string"),
            "label": ClassLabel(names=vocabulary),
        }
    )
    result = {}
    for name, rows in splits.items():
        for row in rows:
            row["label"] = index.get(row["answer"], -1)
        outside = sum(row["label"] < 0 for row in rows)
        if outside:
            logger.info(
                f"{name}: {outside} of {len(rows)} answers are outside the {len(vocabulary)}-answer vocabulary"
            )
        result[name] = Dataset.from_list(rows, features=features)
    return DatasetDict(result)


def load_msrvtt_qa(
    annotations_dir: str | Path, videos_dir: str | Path, top_k: int = 1000, vocabulary: list[str] | None = None
) -> DatasetDict:
    """MSRVTT-QA (open-ended): `train_qa.json`, `val_qa.json`, `test_qa.json` (lists of `{"video_id": int,
    "question", "answer", ...}`), videos `video<id>.mp4`. The answer vocabulary is the `top_k` answers of train (or
    `vocabulary`); `features["label"].names` holds it."""
    annotations_dir = Path(annotations_dir)
    splits = {}
    for name, file_name in (("train", "train_qa.json"), ("validation", "val_qa.json"), ("test", "test_qa.json")):
        splits[name] = [
            {
                "video_id": f"video{item['video_id']}",
                "video_path": str(Path(videos_dir) / f"video{item['video_id']}.mp4"),
                "question": item["question"],
                "answer": str(item["answer"]),
            }
            for item in _read_json(annotations_dir / file_name)
        ]
    return _qa_dataset_dict(splits, top_k, vocabulary)


def load_msvd_qa(
    annotations_dir: str | Path,
    videos_dir: str | Path,
    top_k: int = 1000,
    vocabulary: list[str] | None = None,
    mapping_file: str = "youtube_mapping.txt",
) -> DatasetDict:
    """MSVD-QA (open-ended): `train_qa.json`, `val_qa.json`, `test_qa.json` with integer `video_id`s, mapped to the
    clip names of `YouTubeClips/*.avi` by `youtube_mapping.txt` ("<clip name> vid<id>" lines)."""
    annotations_dir = Path(annotations_dir)
    names = {}
    for line in _read_id_list(annotations_dir / mapping_file):
        clip, _, vid = line.rpartition(" ")
        names[vid.removeprefix("vid")] = clip
    splits = {}
    for name, file_name in (("train", "train_qa.json"), ("validation", "val_qa.json"), ("test", "test_qa.json")):
        rows = []
        for item in _read_json(annotations_dir / file_name):
            clip = names.get(str(item["video_id"]))
            if clip is None:
                raise ValueError(f"{annotations_dir / mapping_file}: no clip name for video_id {item['video_id']}")
            rows.append(
                {
                    "video_id": clip,
                    "video_path": str(Path(videos_dir) / f"{clip}.avi"),
                    "question": item["question"],
                    "answer": str(item["answer"]),
                }
            )
        splits[name] = rows
    return _qa_dataset_dict(splits, top_k, vocabulary)


def load_activitynet_qa(
    annotations_dir: str | Path, videos_dir: str | Path, top_k: int = 1000, vocabulary: list[str] | None = None
) -> DatasetDict:
    """ActivityNet-QA (open-ended): questions in `{split}_q.json` (`question`, `question_id`, `video_name`) and
    answers in `{split}_a.json` (`answer`, `question_id`), for train / val / test; videos `v_<video_name>.<ext>`."""
    annotations_dir = Path(annotations_dir)
    splits = {}
    for name, prefix in (("train", "train"), ("validation", "val"), ("test", "test")):
        answers = {
            item["question_id"]: str(item["answer"]) for item in _read_json(annotations_dir / f"{prefix}_a.json")
        }
        rows = []
        for item in _read_json(annotations_dir / f"{prefix}_q.json"):
            if item["question_id"] not in answers:
                raise ValueError(f"{annotations_dir / f'{prefix}_a.json'}: no answer for {item['question_id']}")
            video = item["video_name"]
            path = resolve_video_path(videos_dir, [f"v_{video}", video])
            rows.append(
                {
                    "video_id": f"v_{video}",
                    "video_path": path,
                    "question": item["question"],
                    "answer": answers[item["question_id"]],
                }
            )
        splits[name] = rows
    return _qa_dataset_dict(splits, top_k, vocabulary)


def _read_caption_rows(captions_file: Path) -> list[dict]:
    if not captions_file.is_file():
        raise FileNotFoundError(f"captions file not found: {captions_file}")
    if captions_file.suffix.lower() == ".csv":
        return _read_csv(captions_file, ["video", "caption"])
    if captions_file.suffix.lower() in (".jsonl", ".json"):
        rows = []
        for number, line in enumerate(captions_file.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{captions_file}, line {number}: not valid JSON ({error})") from error
            if "video" not in row or "caption" not in row:
                raise ValueError(f"{captions_file}, line {number}: expected fields 'video' and 'caption'")
            rows.append(row)
        return rows
    raise ValueError(f"{captions_file}: captions must be a .csv or .jsonl file")


def video_folder_id(videos_dir: str | Path, video_path: str | Path) -> str:
    """The `video_id` of a video in a user's folder: its path relative to `videos_dir`, `/`-separated, without a
    video extension (`day1/clip.mp4` -> `"day1/clip"`), so equal file names in different folders stay apart."""
    path = Path(video_path)
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        path = path.with_suffix("")
    try:
        return path.relative_to(videos_dir).as_posix()
    except ValueError:  # a row naming an absolute path outside the folder
        return path.as_posix()


def load_video_folder(videos_dir: str | Path, captions_file: str | Path) -> Dataset | DatasetDict:
    """A user's own videos: a folder of video files and a captions file (CSV with a header, or JSON Lines) whose
    rows have `video` (a path relative to `videos_dir`, or a file name without extension) and `caption`, and
    optionally `split` (then a `DatasetDict` by split). One row per caption; several rows may share a video.

    `video_id` is the video's path relative to `videos_dir` without its extension ([`video_folder_id`]).
    Captions are kept as they are (an empty one is reported by the collator, not dropped here).

    Raises:
        `ValueError`: two files with the same `video_id` (`clip.mp4` and `clip.avi` in one folder), naming the
        captions file, both rows and both files, before any training; also a malformed captions file.
    """
    rows_by_split = defaultdict(list)
    first_row_of_id: dict[str, tuple[int, str]] = {}
    for number, row in enumerate(_read_caption_rows(Path(captions_file)), start=1):
        video_path = resolve_video_path(videos_dir, [str(row["video"])])
        video_id = video_folder_id(videos_dir, video_path)
        first_number, first_path = first_row_of_id.setdefault(video_id, (number, video_path))
        if first_path != video_path:
            raise ValueError(
                f"{captions_file}: rows {first_number} and {number} give video_id {video_id!r} to two files, "
                f"{first_path} and {video_path}; rename one so that each video has its own path without extension"
            )
        rows_by_split[row.get("split")].append(
            {
                "video_id": video_id,
                "video_path": video_path,
                "caption": row["caption"] if isinstance(row["caption"], str) else None,
            }
        )
    if set(rows_by_split) == {None}:
        return _retrieval_dataset(rows_by_split[None])
    if None in rows_by_split:
        raise ValueError(f"{captions_file}: 'split' is set on some rows but not on others")
    return DatasetDict({name: _retrieval_dataset(rows) for name, rows in rows_by_split.items()})


__all__ = [
    "build_answer_vocabulary",
    "load_activitynet_qa",
    "load_activitynet_retrieval",
    "load_didemo_retrieval",
    "load_msrvtt_captioning",
    "load_msrvtt_qa",
    "load_msrvtt_retrieval",
    "load_msvd_qa",
    "load_msvd_retrieval",
    "load_video_folder",
    "resolve_video_path",
    "video_folder_id",
]
