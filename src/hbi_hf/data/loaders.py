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
import io
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


class _Record(dict):
    """One annotation record (a JSON object, a CSV row, a text line) and `where` it was read: the file and its line,
    item or key, as every error about it names them."""

    def __init__(self, values: dict, where: str):
        super().__init__(values)
        self.where = where

    def field(self, name: str, expected: str):
        if name not in self:
            raise ValueError(f"{self.where}: field {name!r} is missing; expected {expected}")
        return self[name]

    def text(self, name: str, expected: str = "a string (the text)") -> str | None:
        """A caption or question: a string, or null (kept: the collator or evaluation skips and counts it)."""
        value = self.field(name, expected)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{self.where}: field {name!r} is {_describe(value)}; expected {expected}")
        return value

    def texts(self, name: str, expected: str = "a list of strings (the captions)") -> list[str]:
        value = self.field(name, expected)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ValueError(f"{self.where}: field {name!r} is {_describe(value)}; expected {expected}")
        return value

    def identifier(self, name: str, expected: str = "a non-empty string (an id)") -> str:
        """An id or a split name: a non-blank string (an integer is accepted and written in decimal)."""
        value = self.field(name, expected)
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{self.where}: field {name!r} is {_describe(value)}; expected {expected}")
        return value.strip()

    def answer(self, name: str = "answer") -> str:
        """A QA answer: a non-blank string. A number is refused as a caption is: it may be the index of a choice
        (multiple-choice files) rather than the answer's text, and `2` and `2.0` would be different classes."""
        value = self.field(name, "the answer (a non-empty string)")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise ValueError(
                f"{self.where}: field {name!r} is the number {value!r}; expected the answer's text (a non-empty "
                f"string). A number here may be the index of a choice rather than the answer: write the answer "
                f"itself, e.g. {str(value)!r} if that is what it says"
            )
        if not isinstance(value, str) or not value.strip():
            raise ValueError(
                f"{self.where}: field {name!r} is {_describe(value)}; expected the answer (a non-empty string)"
            )
        return value


def _describe(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return "an empty string" if not value.strip() else f"the string {value[:40]!r}"
    return f"{type(value).__name__} {str(value)[:40]}"


def _read_text(path: str | Path, what: str = "annotation file") -> str:
    """The file's text, UTF-8 with or without a byte-order mark."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ValueError(f"{path}, line {line}: not UTF-8 text (byte {error.start}: {error.reason})") from error


def _no_duplicate_keys(path: Path):
    def hook(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(
                    f"{path}: key {key!r} appears twice in one object (the second would replace the first)"
                )
            seen.add(key)
        return dict(pairs)

    return hook


def _read_json(path: str | Path):
    path = Path(path)
    text = _read_text(path)
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys(path))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}, line {error.lineno}: not valid JSON ({error.msg})") from error


def _json_records(path: Path, data=None, top_level: type = list) -> list[_Record]:
    """The records of a JSON file holding a list of objects (`top_level=list`, each named by its item number) or an
    object of objects (`top_level=dict`, each named by its key). An empty file of records is an error."""
    data = _read_json(path) if data is None else data
    if not isinstance(data, top_level):
        expected = "a list of objects" if top_level is list else "an object of objects (one per video)"
        raise ValueError(f"{path}: the file holds {type(data).__name__}; expected {expected}")
    items = enumerate(data) if top_level is list else data.items()
    records = []
    for key, value in items:
        where = f"{path}, item {key}" if top_level is list else f"{path}, key {key!r}"
        if not isinstance(value, dict):
            raise ValueError(f"{where}: {_describe(value)}; expected an object")
        records.append(_Record(value, where))
    if not records:
        raise ValueError(f"{path}: no records; expected at least one")
    return records


def _read_csv(path: str | Path, required: Iterable[str]) -> list[_Record]:
    """The rows of a CSV file with a header (UTF-8, a byte-order mark is allowed), each named by its line."""
    path = Path(path)
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    columns = reader.fieldnames or []
    missing = [column for column in required if column not in columns]
    if missing:
        raise ValueError(
            f"{path}: expected a CSV with a header naming the columns {list(required)}; missing {missing}, found {columns}"
        )
    records = []
    for row in reader:
        if not any((value or "").strip() for value in row.values() if isinstance(value, str)):
            continue
        records.append(_Record(row, f"{path}, line {reader.line_num}"))
    if not records:
        raise ValueError(f"{path}: no data rows below the header")
    return records


def _read_lines(path: str | Path, what: str = "annotation file") -> list[tuple[int, str]]:
    """The non-blank lines of a text file with their numbers."""
    lines = _read_text(path, what).splitlines()
    return [(number, line.strip()) for number, line in enumerate(lines, start=1) if line.strip()]


def _read_id_list(path: str | Path) -> list[str]:
    """The ids of a split file (one per line); an empty file and a repeated id are errors."""
    path = Path(path)
    lines = _read_lines(path, "split file")
    if not lines:
        raise ValueError(f"{path}: the split file lists no ids")
    _refuse_duplicates([(f"{path}, line {number}", line) for number, line in lines], "id")
    return [line for _, line in lines]


def _refuse_duplicates(items: Iterable[tuple[str, str]], name: str) -> None:
    """`items` are `(where, id)`; a repeated id is an error naming both places."""
    first: dict[str, str] = {}
    for where, key in items:
        if key in first:
            raise ValueError(f"{where}: {name} {key!r} is repeated (first at {first[key]}); each must appear once")
        first[key] = where


def video_file(videos_dir: str | Path, name: str, where: str = "") -> Path:
    """`videos_dir / name`, refusing a name that would leave the folder: an absolute path, or one with a `..` part.

    Raises:
        `ValueError`: naming `where` (the annotation file and row), the id and the folder.
    """
    parts = Path(name).parts
    if not name or Path(name).is_absolute() or ".." in parts or "\\" in name and ".." in name.split("\\"):
        raise ValueError(
            f"{where + ': ' if where else ''}video {name!r} is not inside the video folder {videos_dir}; expected a "
            "file name or a relative path inside it (no absolute path, no '..')"
        )
    return Path(videos_dir) / name


def resolve_video_path(
    videos_dir: str | Path, names: Iterable[str], default_extension: str = ".mp4", where: str = ""
) -> str:
    """The first existing file among `names` (each tried as given and with every common video extension) in
    `videos_dir`; if none exists, `videos_dir/<first name><default_extension>` (the collator then reports it
    missing).

    Raises:
        `ValueError`: a name that is not inside `videos_dir` (see [`video_file`]), naming `where`.
    """
    names = list(names)
    candidates = [video_file(videos_dir, name, where) for name in names]
    for candidate in candidates:
        if candidate.suffix.lower() in VIDEO_EXTENSIONS and candidate.is_file():
            return str(candidate)
        stem = candidate.with_suffix("") if candidate.suffix.lower() in VIDEO_EXTENSIONS else candidate
        for extension in VIDEO_EXTENSIONS:
            if stem.with_name(stem.name + extension).is_file():
                return str(stem.with_name(stem.name + extension))
    first = candidates[0]
    return str(first if first.suffix.lower() in VIDEO_EXTENSIONS else first.with_name(first.name + default_extension))


def _retrieval_dataset(rows: list[dict[str, str]], source: str | Path, split: str) -> Dataset:
    if not rows:
        raise ValueError(f"{source}: the {split!r} split has no rows; expected at least one")
    return Dataset.from_list(rows, features=RETRIEVAL_FEATURES)


def _reference_dataset(rows: list[dict], source: str | Path, split: str) -> Dataset:
    if not rows:
        raise ValueError(f"{source}: the {split!r} split has no videos; expected at least one")
    return Dataset.from_list(rows, features=REFERENCE_FEATURES)


def load_msrvtt_retrieval(
    annotations_dir: str | Path,
    videos_dir: str | Path,
    train_csv: str = "MSRVTT_train.9k.csv",
    test_csv: str = "MSRVTT_JSFUSION_test.csv",
    data_json: str = "MSRVTT_data.json",
) -> DatasetDict:
    """MSR-VTT retrieval: "train" = the 9k split with all 20 captions per video (180k rows), "test" = 1k-A (1,000
    video-caption pairs from `MSRVTT_JSFUSION_test.csv`).

    Raises:
        `ValueError`: naming the file, the line or item and the field: a missing or mistyped field, a repeated video
            id, an id that is not inside `videos_dir`, a train video without sentences, an empty file.
    """
    annotations_dir = Path(annotations_dir)
    train = _read_csv(annotations_dir / train_csv, ["video_id"])
    train_ids = [(record.where, record.identifier("video_id", "the video id (e.g. video0)")) for record in train]
    _refuse_duplicates(train_ids, "video_id")
    captions = _msrvtt_captions(annotations_dir / data_json)
    train_rows = []
    for where, video_id in train_ids:
        if video_id not in captions:
            raise ValueError(f"{where}: train video {video_id!r} has no sentences in {annotations_dir / data_json}")
        path = str(video_file(videos_dir, f"{video_id}.mp4", where))
        train_rows += [{"video_id": video_id, "video_path": path, "caption": text} for text in captions[video_id]]
    test = _read_csv(annotations_dir / test_csv, ["video_id", "sentence"])
    test_ids = [(record.where, record.identifier("video_id", "the video id (e.g. video7)")) for record in test]
    _refuse_duplicates(test_ids, "video_id")
    test_rows = [
        {
            "video_id": video_id,
            "video_path": str(video_file(videos_dir, f"{video_id}.mp4", record.where)),
            "caption": record.text("sentence", "the caption (a string)"),
        }
        for record, (_, video_id) in zip(test, test_ids, strict=True)
    ]
    return DatasetDict(
        {
            "train": _retrieval_dataset(train_rows, annotations_dir / train_csv, "train"),
            "test": _retrieval_dataset(test_rows, annotations_dir / test_csv, "test"),
        }
    )


def _msrvtt_data(data_json: Path) -> dict:
    data = _read_json(data_json)
    if not isinstance(data, dict):
        raise ValueError(f"{data_json}: the file holds {type(data).__name__}; expected MSRVTT_data.json (an object)")
    return data


def _msrvtt_captions(data_json: Path, data: dict | None = None) -> dict[str, list[str]]:
    data = _msrvtt_data(data_json) if data is None else data
    if "sentences" not in data:
        raise ValueError(
            f"{data_json}: field 'sentences' is missing; expected MSRVTT_data.json with a 'sentences' list"
        )
    captions = defaultdict(list)
    for record in _json_records(data_json, data["sentences"]):
        record.where = record.where.replace(", item", ", sentences item")
        video_id = record.identifier("video_id", "the video id (e.g. video0)")
        captions[video_id].append(record.text("caption", "the caption (a string)"))
    return captions


def load_msrvtt_captioning(annotations_dir: str | Path, videos_dir: str | Path, data_json: str = "MSRVTT_data.json"):
    """MSR-VTT captioning with the official split of `MSRVTT_data.json` (6,513 train / 497 validate / 2,990 test
    videos): "train" has one row per caption, "validation" and "test" one row per video with all its references.

    Raises:
        `ValueError`: naming the file, the item and the field, as [`load_msrvtt_retrieval`]; a video listed twice.
    """
    data_json = Path(annotations_dir) / data_json
    data = _msrvtt_data(data_json)
    if "videos" not in data:
        raise ValueError(f"{data_json}: field 'videos' is missing; expected MSRVTT_data.json with a 'videos' list")
    captions = _msrvtt_captions(data_json, data)
    splits = defaultdict(list)
    listed = []
    for record in _json_records(data_json, data["videos"]):
        record.where = record.where.replace(", item", ", videos item")
        video_id = record.identifier("video_id", "the video id (e.g. video0)")
        listed.append((record.where, video_id))
        split = record.identifier("split", "the split (train, validate or test)")
        splits[split].append((record.where, video_id))
    _refuse_duplicates(listed, "video_id")

    def path(where: str, video_id: str) -> str:
        return str(video_file(videos_dir, f"{video_id}.mp4", where))

    train_rows = [
        {"video_id": v, "video_path": path(where, v), "caption": text}
        for where, v in splits["train"]
        for text in captions[v]
    ]
    result = {"train": _retrieval_dataset(train_rows, data_json, "train")}
    for name, split in (("validation", "validate"), ("test", "test")):
        result[name] = _reference_dataset(
            [{"video_id": v, "video_path": path(where, v), "references": captions[v]} for where, v in splits[split]],
            data_json,
            split,
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
        data = _read_json(captions_file)
        if not isinstance(data, dict):
            raise ValueError(
                f"{captions_file}: the file holds {type(data).__name__}; expected {{video_id: [captions]}}"
            )
        for key, value in data.items():
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise ValueError(
                    f"{captions_file}, key {key!r}: {_describe(value)}; expected a list of strings (the captions)"
                )
        return {key: list(value) for key, value in data.items()}
    captions = defaultdict(list)
    for number, line in _read_lines(captions_file):
        if line.startswith("#"):
            continue
        video_id, _, text = line.partition(" ")
        if not text.strip():
            raise ValueError(f"{captions_file}, line {number}: expected '<video id> <caption>'; got {line[:60]!r}")
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
    `allow_pickle=True`, CLIP4Clip's `raw-captions.pkl`.

    Raises:
        `ValueError`: naming the file and line: an id repeated in a split list, a listed video without captions, an
            id outside `videos_dir`, an empty list, a malformed captions file.
    """
    annotations_dir = Path(annotations_dir)
    captions = _read_msvd_captions(annotations_dir / captions_file, allow_pickle)
    result = {}
    for name, list_file in (("train", "train_list.txt"), ("validation", "val_list.txt"), ("test", "test_list.txt")):
        rows = []
        for video_id in _read_id_list(annotations_dir / list_file):
            where = f"{annotations_dir / list_file}, id {video_id!r}"
            if video_id not in captions:
                raise ValueError(f"{where}: no captions for this video in {annotations_dir / captions_file}")
            path = str(video_file(videos_dir, f"{video_id}.avi", where))
            rows += [{"video_id": video_id, "video_path": path, "caption": text} for text in captions[video_id]]
        result[name] = _retrieval_dataset(rows, annotations_dir / list_file, name)
    return DatasetDict(result)


def load_activitynet_retrieval(
    annotations_dir: str | Path, videos_dir: str | Path, train_json: str = "train.json", val_json: str = "val_1.json"
) -> DatasetDict:
    """ActivityNet Captions paragraph retrieval: each video's segment sentences joined, in time order, into one
    paragraph. "train" (10,009 videos) from `train.json`, "test" ("val1", 4,917 videos) from `val_1.json`.

    Raises:
        `ValueError`: naming the file, the video key and the field (e.g. `sentences` that is not a list of strings,
            `timestamps` missing or holding another number of segments than `sentences` has sentences); a key
            repeated in the file; an id outside `videos_dir`.
    """
    annotations_dir = Path(annotations_dir)
    result = {}
    for name, file_name in (("train", train_json), ("test", val_json)):
        rows = []
        for record in _json_records(annotations_dir / file_name, top_level=dict):
            video_id = record.where.split(", key ", 1)[1][1:-1]
            names = [video_id, video_id[2:]] if video_id.startswith("v_") else [video_id, f"v_{video_id}"]
            rows.append(
                {
                    "video_id": video_id,
                    "video_path": resolve_video_path(videos_dir, names, where=record.where),
                    "caption": _activitynet_paragraph(record),
                }
            )
        result[name] = _retrieval_dataset(rows, annotations_dir / file_name, name)
    return DatasetDict(result)


def _activitynet_paragraph(record: _Record) -> str:
    """The segment sentences of one video in time order: every sentence needs its `[start, end]` in `timestamps`."""
    sentences = record.texts("sentences", "a list of strings (the segment sentences)")
    segments = record.field("timestamps", "a list of [start, end] segments, one per sentence")
    if not isinstance(segments, list):
        raise ValueError(
            f"{record.where}: field 'timestamps' is {_describe(segments)}; expected a list of [start, end]"
        )
    starts = []
    for segment in segments:
        if not isinstance(segment, list) or not segment or not isinstance(segment[0], (int, float)):
            raise ValueError(f"{record.where}: field 'timestamps' holds {_describe(segment)}; expected [start, end]")
        starts.append(segment[0])
    if len(starts) != len(sentences):
        raise ValueError(
            f"{record.where}: field 'timestamps' holds {len(starts)} segments and field 'sentences' "
            f"{len(sentences)} sentences; expected one [start, end] per sentence (the paragraph is joined in time order)"
        )
    ordered = sorted(zip(starts, sentences, strict=True), key=lambda pair: pair[0])
    return " ".join(sentence.strip() for _, sentence in ordered)


def load_didemo_retrieval(
    annotations_dir: str | Path,
    videos_dir: str | Path,
    split_files: dict[str, str] | None = None,
) -> DatasetDict:
    """DiDeMo paragraph retrieval (CLIP4Clip protocol): all descriptions of a video joined into one paragraph, from
    `train_data.json` / `val_data.json` / `test_data.json` (lists of `{"video", "description", "times", ...}`); a
    missing val file is skipped.

    Raises:
        `ValueError`: naming the file, the item and the field (`video`, `description`); an id outside `videos_dir`.
    """
    annotations_dir = Path(annotations_dir)
    split_files = split_files or {"train": "train_data.json", "validation": "val_data.json", "test": "test_data.json"}
    result = {}
    for name, file_name in split_files.items():
        if name == "validation" and not (annotations_dir / file_name).is_file():
            continue
        paragraphs = defaultdict(list)
        first_item = {}
        for record in _json_records(annotations_dir / file_name):
            video = record.identifier("video", "the video file name")
            description = record.text("description", "the description (a string)")
            paragraphs[video].append((description or "").strip())
            first_item.setdefault(video, record.where)
        result[name] = _retrieval_dataset(
            [
                {
                    "video_id": video,
                    "video_path": resolve_video_path(videos_dir, [video], where=first_item[video]),
                    "caption": " ".join(texts),
                }
                for video, texts in paragraphs.items()
            ],
            annotations_dir / file_name,
            name,
        )
    return DatasetDict(result)


def build_answer_vocabulary(answers: Iterable[str], top_k: int = 1000) -> list[str]:
    """The `top_k` most frequent answers (ties broken alphabetically, so the order is deterministic)."""
    counts = Counter(answers)
    return [answer for answer, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top_k]]


def _qa_dataset_dict(
    splits: dict[str, list[dict]], top_k: int, vocabulary: list[str] | None, sources: dict[str, str] | None = None
) -> DatasetDict:
    sources = sources or {}
    for name, rows in splits.items():
        if not rows:
            raise ValueError(f"{sources.get(name, 'QA annotations')}: the {name!r} split has no questions")
    if vocabulary is None:
        if "train" not in splits:
            raise ValueError(f"no 'train' split to build the answer vocabulary from; splits are {sorted(splits)}")
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


def _qa_rows(records: list[_Record], video, question_ids: str | None) -> list[dict]:
    """QA rows from records with `question` and `answer`; `video(record)` gives `(video_id, video_path)`;
    `question_ids` names the field whose values must not repeat."""
    if question_ids is not None:
        _refuse_duplicates(
            [
                (record.where, record.identifier(question_ids, "the question id"))
                for record in records
                if question_ids in record
            ],
            question_ids,
        )
    rows = []
    for record in records:
        video_id, video_path = video(record)
        rows.append(
            {
                "video_id": video_id,
                "video_path": video_path,
                "question": record.text("question", "the question (a string)"),
                "answer": record.answer(),
            }
        )
    return rows


def load_msrvtt_qa(
    annotations_dir: str | Path, videos_dir: str | Path, top_k: int = 1000, vocabulary: list[str] | None = None
) -> DatasetDict:
    """MSRVTT-QA (open-ended): `train_qa.json`, `val_qa.json`, `test_qa.json` (lists of `{"video_id": int,
    "question", "answer", ...}`), videos `video<id>.mp4`. The answer vocabulary is the `top_k` answers of train (or
    `vocabulary`); `features["label"].names` holds it.

    Raises:
        `ValueError`: naming the file, the item and the field: a null or blank answer, a question that is not a
            string, a repeated question `id`, an empty file.
    """
    annotations_dir = Path(annotations_dir)
    splits, sources = {}, {}

    def video(record: _Record) -> tuple[str, str]:
        video_id = f"video{record.identifier('video_id', 'the video number')}"
        return video_id, str(video_file(videos_dir, f"{video_id}.mp4", record.where))

    for name, file_name in (("train", "train_qa.json"), ("validation", "val_qa.json"), ("test", "test_qa.json")):
        sources[name] = str(annotations_dir / file_name)
        splits[name] = _qa_rows(_json_records(annotations_dir / file_name), video, "id")
    return _qa_dataset_dict(splits, top_k, vocabulary, sources)


def load_msvd_qa(
    annotations_dir: str | Path,
    videos_dir: str | Path,
    top_k: int = 1000,
    vocabulary: list[str] | None = None,
    mapping_file: str = "youtube_mapping.txt",
) -> DatasetDict:
    """MSVD-QA (open-ended): `train_qa.json`, `val_qa.json`, `test_qa.json` with integer `video_id`s, mapped to the
    clip names of `YouTubeClips/*.avi` by `youtube_mapping.txt` ("<clip name> vid<id>" lines).

    Raises:
        `ValueError`: as [`load_msrvtt_qa`]; also a mapping line that is malformed or repeats an id, and a
            `video_id` the mapping does not know.
    """
    annotations_dir = Path(annotations_dir)
    names, mapped = {}, []
    for number, line in _read_lines(annotations_dir / mapping_file):
        clip, _, vid = line.rpartition(" ")
        where = f"{annotations_dir / mapping_file}, line {number}"
        if not clip or not vid.startswith("vid"):
            raise ValueError(f"{where}: expected '<clip name> vid<id>'; got {line[:60]!r}")
        mapped.append((where, vid.removeprefix("vid")))
        names[vid.removeprefix("vid")] = clip
    _refuse_duplicates(mapped, "video id")

    def video(record: _Record) -> tuple[str, str]:
        video_id = record.identifier("video_id", "the video number")
        if video_id not in names:
            raise ValueError(
                f"{record.where}: video_id {video_id} has no clip name in {annotations_dir / mapping_file}"
            )
        return names[video_id], str(video_file(videos_dir, f"{names[video_id]}.avi", record.where))

    splits, sources = {}, {}
    for name, file_name in (("train", "train_qa.json"), ("validation", "val_qa.json"), ("test", "test_qa.json")):
        sources[name] = str(annotations_dir / file_name)
        splits[name] = _qa_rows(_json_records(annotations_dir / file_name), video, "id")
    return _qa_dataset_dict(splits, top_k, vocabulary, sources)


def load_activitynet_qa(
    annotations_dir: str | Path, videos_dir: str | Path, top_k: int = 1000, vocabulary: list[str] | None = None
) -> DatasetDict:
    """ActivityNet-QA (open-ended): questions in `{split}_q.json` (`question`, `question_id`, `video_name`) and
    answers in `{split}_a.json` (`answer`, `question_id`), for train / val / test; videos `v_<video_name>.<ext>`.

    Raises:
        `ValueError`: as [`load_msrvtt_qa`]; also a `question_id` repeated in either file or without an answer.
    """
    annotations_dir = Path(annotations_dir)
    splits, sources = {}, {}
    for name, prefix in (("train", "train"), ("validation", "val"), ("test", "test")):
        answer_records = _json_records(annotations_dir / f"{prefix}_a.json")
        ids = [(record.where, record.identifier("question_id", "the question id")) for record in answer_records]
        _refuse_duplicates(ids, "question_id")
        answers = {key: record for (_, key), record in zip(ids, answer_records, strict=True)}

        def video(record: _Record) -> tuple[str, str]:
            name = record.identifier("video_name", "the video name")
            return f"v_{name}", resolve_video_path(videos_dir, [f"v_{name}", name], where=record.where)

        questions = _json_records(annotations_dir / f"{prefix}_q.json")
        for record in questions:
            question_id = record.identifier("question_id", "the question id")
            if question_id not in answers:
                raise ValueError(
                    f"{record.where}: question_id {question_id!r} has no answer in {annotations_dir / f'{prefix}_a.json'}"
                )
            record["answer"] = answers[question_id].answer()
        sources[name] = str(annotations_dir / f"{prefix}_q.json")
        splits[name] = _qa_rows(questions, video, "question_id")
    return _qa_dataset_dict(splits, top_k, vocabulary, sources)


def _read_caption_rows(captions_file: Path) -> list[_Record]:
    """The rows of a user's captions file (CSV with a header, or JSON Lines), each with `video` and `caption`."""
    if captions_file.suffix.lower() == ".csv":
        return _read_csv(captions_file, ["video", "caption"])
    if captions_file.suffix.lower() not in (".jsonl", ".json"):
        raise ValueError(f"{captions_file}: captions must be a .csv or .jsonl file")
    records = read_json_lines(captions_file)
    for record in records:
        record.field("video", "the video (a path inside the video folder)")
        record.field("caption", "the caption (a string)")
    return records


def read_json_lines(path: str | Path) -> list[_Record]:
    """The objects of a JSON Lines file (UTF-8, a byte-order mark is allowed; blank lines skipped), each named by
    its line. A file holding one JSON list of objects is read as well.

    Raises:
        `FileNotFoundError`, or `ValueError` naming the file and line: not valid JSON, not an object, no records.
    """
    path = Path(path)
    text = _read_text(path)
    if text.lstrip().startswith("["):
        return _json_records(path, _read_json(path))
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line, object_pairs_hook=_no_duplicate_keys(path))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {number}: not valid JSON ({error.msg})") from error
        if not isinstance(value, dict):
            raise ValueError(f"{path}, line {number}: {_describe(value)}; expected a JSON object")
        records.append(_Record(value, f"{path}, line {number}"))
    if not records:
        raise ValueError(f"{path}: no rows; expected one JSON object per line")
    return records


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
    Captions are kept as they are when they are a string or null (an empty or null one is skipped and counted, or
    refused in strict mode, by the collator and by evaluation).

    Raises:
        `ValueError`: two files with the same `video_id` (`clip.mp4` and `clip.avi` in one folder), naming the
        captions file, both rows and both files, before any training; naming the file, line and field: a `video`
        outside `videos_dir` (absolute, or with `..`), a caption that is neither a string nor null, a blank `split`;
        also a malformed or empty captions file.
    """
    rows_by_split = defaultdict(list)
    first_row_of_id: dict[str, tuple[int, str]] = {}
    for number, row in enumerate(_read_caption_rows(Path(captions_file)), start=1):
        video_path = resolve_video_path(videos_dir, [row.identifier("video", "a video path")], where=row.where)
        video_id = video_folder_id(videos_dir, video_path)
        first_number, first_path = first_row_of_id.setdefault(video_id, (number, video_path))
        if first_path != video_path:
            raise ValueError(
                f"{captions_file}: rows {first_number} and {number} give video_id {video_id!r} to two files, "
                f"{first_path} and {video_path}; rename one so that each video has its own path without extension"
            )
        split = row.identifier("split", "the split (e.g. train or test)") if "split" in row else None
        rows_by_split[split].append({"video_id": video_id, "video_path": video_path, "caption": row.text("caption")})
    if set(rows_by_split) == {None}:
        return _retrieval_dataset(rows_by_split[None], captions_file, "all")
    if None in rows_by_split:
        raise ValueError(f"{captions_file}: 'split' is set on some rows but not on others")
    return DatasetDict({name: _retrieval_dataset(rows, captions_file, name) for name, rows in rows_by_split.items()})


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
    "read_json_lines",
    "resolve_video_path",
    "video_file",
    "video_folder_id",
]
