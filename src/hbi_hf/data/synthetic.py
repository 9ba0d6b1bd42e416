"""The embedded video-text dataset: short real mp4 files of coloured shapes that appear, move and change, generated
deterministically from a seed, with captions that say what happens in which order, question-answer pairs and
reference captions from the same scenes.

Each scene has two objects (distinct colours) and two events in time order, the first by one object in seconds 1-3,
the second by the other in seconds 5-7: appears, disappears, moves (left / right / up / down), turns another colour,
grows. Matching a caption to its video needs fine-grained cues (which colour, which shape, which event) and temporal
ones (which event comes first: a share of the scenes are "temporal twins", the same two events in the other order).

Command line: `python -m hbi_hf.data.synthetic --out DIR [--seed 0 --num_train_videos 300 --num_test_videos 60]`.

Layout of a generated folder:

* `videos/<video_id>.mp4`: 64x64 px, 4 fps, 8 s (32 frames), H.264;
* `retrieval.jsonl`: `{"video", "caption", "split"}`: several captions per train video, one per test video;
* `qa.jsonl`: `{"video", "question", "answer", "split"}` (one-word answers);
* `captioning.jsonl`: `{"video", "references", "split"}` (all template captions of a scene);
* `scenes.jsonl`: each scene's objects and events; `metadata.json`: the generation arguments (written last);
* `.hbi_hf_generated`: the marker saying this package made the folder.

The generator never deletes or writes into a folder it did not make: an existing non-empty folder without the marker
is refused (`FileExistsError` naming the folder and the flag), even with `--overwrite`; a marked folder is reused when
its arguments match, and replaced only with `--overwrite`.
"""

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict
from transformers import HfArgumentParser
from transformers.utils import logging

from .loaders import REFERENCE_FEATURES, _qa_dataset_dict, load_video_folder, video_folder_id

logger = logging.get_logger(__name__)

GENERATOR_VERSION = 2  # 2: lossless H.264
GENERATED_MARKER = ".hbi_hf_generated"
"""A file in every folder the generator makes; only a folder carrying it is ever replaced."""
COLOURS = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 245),
    "yellow": (245, 225, 40),
    "white": (245, 245, 245),
    "purple": (175, 60, 225),
}
SHAPES = ("circle", "square", "triangle")
EVENTS = ("appears", "disappears", "moves", "turns", "grows")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
BACKGROUND = (25, 25, 30)
FRAME_SIZE = 64
FPS = 4
DURATION_SECONDS = 8
EVENT_WINDOWS = ((1.0, 3.0), (5.0, 7.0))
OBJECT_SIZE = 9
MOVE_DISTANCE = 22

PHRASES = {
    "appears": ("{a} {obj} appears", "{a} {obj} shows up", "{a} {obj} pops up"),
    "disappears": ("the {obj} disappears", "the {obj} vanishes", "the {obj} goes away"),
    "moves": ("the {obj} moves {direction}", "the {obj} slides {direction}", "the {obj} goes {direction}"),
    "turns": ("the {obj} turns {new_colour}", "the {obj} becomes {new_colour}", "the {obj} changes to {new_colour}"),
    "grows": ("the {obj} grows", "the {obj} gets bigger", "the {obj} expands"),
}
ORDER_TEMPLATES = (
    "{first}, then {second}",
    "first {first}, and after that {second}",
    "{second} after {first}",
    "{first} before {second}",
    "{first}. next, {second}",
    "at the start {first}; later {second}",
)


def default_cache_dir() -> Path:
    """`$HBI_HF_CACHE` or `~/.cache/hbi_hf`, plus `synthetic`."""
    return Path(os.environ.get("HBI_HF_CACHE", Path.home() / ".cache" / "hbi_hf")) / "synthetic"


@dataclass
class HBISyntheticObject:
    colour: str
    shape: str
    x: float
    y: float


@dataclass
class HBISyntheticEvent:
    actor: int
    kind: str
    direction: str | None = None
    new_colour: str | None = None


@dataclass
class HBISyntheticScene:
    video_id: str
    split: str
    objects: list[HBISyntheticObject]
    events: list[HBISyntheticEvent]

    def describe(self, obj: int) -> str:
        return f"{self.objects[obj].colour} {self.objects[obj].shape}"


def _sample_event(rng: np.random.Generator, objects: list[HBISyntheticObject], actor: int) -> HBISyntheticEvent:
    kind = EVENTS[rng.integers(len(EVENTS))]
    if kind == "moves":
        return HBISyntheticEvent(actor, kind, direction=list(DIRECTIONS)[rng.integers(len(DIRECTIONS))])
    if kind == "turns":
        used = {obj.colour for obj in objects}
        choices = [colour for colour in COLOURS if colour not in used]
        return HBISyntheticEvent(actor, kind, new_colour=choices[rng.integers(len(choices))])
    return HBISyntheticEvent(actor, kind)


def _start_position(rng: np.random.Generator, event: HBISyntheticEvent | None) -> tuple[float, float]:
    low, high = OBJECT_SIZE + 3, FRAME_SIZE - OBJECT_SIZE - 3
    x, y = rng.uniform(low, high, size=2)
    if event is not None and event.kind == "moves":
        dx, dy = DIRECTIONS[event.direction]
        x = (low + MOVE_DISTANCE / 2) - dx * (MOVE_DISTANCE / 2) + rng.uniform(0, high - low - MOVE_DISTANCE)
        y = (low + MOVE_DISTANCE / 2) - dy * (MOVE_DISTANCE / 2) + rng.uniform(0, high - low - MOVE_DISTANCE)
        x, y = (x if dx else rng.uniform(low, high)), (y if dy else rng.uniform(low, high))
    return float(x), float(y)


def sample_scenes(seed: int, num_videos: int, split: str, twin_fraction: float = 0.25) -> list[HBISyntheticScene]:
    """Scene descriptions for one split, deterministic in `(seed, split)`. About `twin_fraction` of the scenes repeat
    the previous scene's objects and events in the opposite order."""
    rng = np.random.default_rng([seed, {"train": 0, "test": 1}.get(split, 2)])
    scenes = []
    for index in range(num_videos):
        video_id = f"{split}_{index:05d}"
        previous = scenes[-1] if scenes else None
        if previous is not None and previous.events[0].actor == 0 and rng.random() < twin_fraction:
            objects = [HBISyntheticObject(**asdict(obj)) for obj in previous.objects]
            events = [HBISyntheticEvent(**asdict(event)) for event in reversed(previous.events)]
            scenes.append(HBISyntheticScene(video_id, split, objects, events))
            continue
        colours = rng.choice(list(COLOURS), size=2, replace=False)
        shapes = rng.choice(SHAPES, size=2)
        objects = [HBISyntheticObject(str(c), str(s), 0.0, 0.0) for c, s in zip(colours, shapes, strict=True)]
        events = [_sample_event(rng, objects, 0), _sample_event(rng, objects, 1)]
        if events[0].kind == "turns" and events[1].kind == "turns" and events[0].new_colour == events[1].new_colour:
            events[1] = HBISyntheticEvent(1, "grows")
        for obj, event in zip(objects, events, strict=True):
            obj.x, obj.y = _start_position(rng, event)
        scenes.append(HBISyntheticScene(video_id, split, objects, events))
    return scenes


def _object_state(
    scene: HBISyntheticScene, obj: int, time: float
) -> tuple[bool, tuple[int, int, int], float, float, float]:
    """(visible, rgb, x, y, size) of object `obj` at `time` seconds."""
    item = scene.objects[obj]
    slot = next(i for i, event in enumerate(scene.events) if event.actor == obj)
    event = scene.events[slot]
    start, end = EVENT_WINDOWS[slot]
    progress = float(np.clip((time - start) / (end - start), 0.0, 1.0))
    visible, colour, x, y, size = True, COLOURS[item.colour], item.x, item.y, float(OBJECT_SIZE)
    if event.kind == "appears":
        visible = progress >= 0.5
    elif event.kind == "disappears":
        visible = progress < 0.5
    elif event.kind == "moves":
        dx, dy = DIRECTIONS[event.direction]
        x, y = x + dx * MOVE_DISTANCE * progress, y + dy * MOVE_DISTANCE * progress
    elif event.kind == "turns" and progress >= 0.5:
        colour = COLOURS[event.new_colour]
    elif event.kind == "grows":
        size *= 1.0 + 0.8 * progress
    return visible, colour, x, y, size


def _shape_mask(shape: str, x: float, y: float, size: float) -> np.ndarray:
    rows, cols = np.mgrid[0:FRAME_SIZE, 0:FRAME_SIZE].astype(np.float32) + 0.5
    dx, dy = cols - x, rows - y
    if shape == "circle":
        return dx**2 + dy**2 <= size**2
    if shape == "square":
        return (np.abs(dx) <= size * 0.85) & (np.abs(dy) <= size * 0.85)
    return (dy <= size * 0.8) & (dy >= -size) & (np.abs(dx) <= (dy + size) * 0.6)


@dataclass
class HBISyntheticObjectState:
    """What one object looks like at one moment: its colour name (after any turn), shape, centre in pixels (x to the
    right, y down, in a 64 x 64 frame) and its size relative to the initial one (1 to 1.8 while growing)."""

    colour: str
    shape: str
    x: float
    y: float
    relative_size: float


def frame_objects(scene: HBISyntheticScene, index: int) -> list[HBISyntheticObjectState]:
    """The visible objects of frame `index` (0 to 31, at 4 fps) of `scene`, in the scene's object order: what a
    caption of that single frame can say."""
    colour_names = {rgb: name for name, rgb in COLOURS.items()}
    states = []
    for obj, item in enumerate(scene.objects):
        visible, rgb, x, y, size = _object_state(scene, obj, (index + 0.5) / FPS)
        if visible:
            states.append(HBISyntheticObjectState(colour_names[rgb], item.shape, x, y, size / OBJECT_SIZE))
    return states


def render_frame(scene: HBISyntheticScene, index: int) -> np.ndarray:
    """Frame `index` (0 to 31, at 4 fps) of `scene`, `(64, 64, 3)` uint8 RGB."""
    frame = np.empty((FRAME_SIZE, FRAME_SIZE, 3), dtype=np.uint8)
    frame[:] = BACKGROUND
    for obj in range(len(scene.objects)):
        visible, colour, x, y, size = _object_state(scene, obj, (index + 0.5) / FPS)
        if visible:
            frame[_shape_mask(scene.objects[obj].shape, x, y, size)] = colour
    return frame


def render_scene(scene: HBISyntheticScene) -> np.ndarray:
    """The scene's frames, `(frames, 64, 64, 3)` uint8 RGB."""
    return np.stack([render_frame(scene, index) for index in range(FPS * DURATION_SECONDS)])


def write_video(frames: np.ndarray, path: str | Path, fps: int = FPS) -> None:
    """Encodes `(frames, H, W, 3)` uint8 RGB frames to a lossless H.264 mp4 with PyAV (MPEG-4 Part 2 if libx264 is
    absent). Lossless, so that the decoded frames never depend on the encoder's decisions: lossy x264 output was
    seen to differ slightly between runs for a few videos, which made the demos' figures vary."""
    import av

    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"qp": "0", "threads": "1"} if codec == "libx264" else {"qscale": "2"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _event_phrase(scene: HBISyntheticScene, slot: int, variant: int) -> str:
    event = scene.events[slot]
    templates = PHRASES[event.kind]
    article = "an" if scene.objects[event.actor].colour[0] in "aeiou" else "a"
    return templates[variant % len(templates)].format(
        a=article, obj=scene.describe(event.actor), direction=event.direction, new_colour=event.new_colour
    )


def scene_captions(scene: HBISyntheticScene, rng: np.random.Generator, count: int) -> list[str]:
    """`count` distinct captions (different order templates and verb phrasings), all saying which event is first."""
    template_order = rng.permutation(len(ORDER_TEMPLATES))
    captions = []
    for i in range(count):
        template = ORDER_TEMPLATES[template_order[i % len(ORDER_TEMPLATES)]]
        variant_first, variant_second = rng.integers(3, size=2)
        captions.append(
            template.format(
                first=_event_phrase(scene, 0, variant_first), second=_event_phrase(scene, 1, variant_second)
            )
        )
    return captions


def scene_questions(scene: HBISyntheticScene) -> list[tuple[str, str]]:
    """One-word-answer questions about what happens, to whom, and in which order."""
    first, second = scene.events
    questions = []
    for event in scene.events:
        obj = scene.objects[event.actor]
        questions.append((f"what does the {obj.colour} {obj.shape} do?", event.kind))
        questions.append((f"what shape is the {obj.colour} object?", obj.shape))
        if event.kind == "moves":
            questions.append((f"which direction does the {obj.colour} {obj.shape} move?", event.direction))
        if event.kind == "turns":
            questions.append((f"what colour does the {obj.colour} {obj.shape} turn?", event.new_colour))
    first_obj, second_obj = scene.objects[first.actor], scene.objects[second.actor]
    questions.append((f"what colour is the object that {first.kind} first?", first_obj.colour))
    questions.append(
        (
            f"which acts first, the {second_obj.colour} {second_obj.shape} or the {first_obj.colour} {first_obj.shape}?",
            first_obj.shape if first_obj.shape != second_obj.shape else first_obj.colour,
        )
    )
    return questions


@dataclass
class HBISyntheticDatasetArguments:
    """Arguments of the embedded dataset's generator."""

    out: str | None = field(default=None, metadata={"help": "Output folder (default: a folder in the cache)."})
    seed: int = field(default=0, metadata={"help": "Random seed; the same seed gives the same dataset."})
    num_train_videos: int = field(default=300, metadata={"help": "Videos in the train split."})
    num_test_videos: int = field(default=60, metadata={"help": "Videos in the test split."})
    captions_per_train_video: int = field(default=5, metadata={"help": "Captions per train video."})
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "Regenerate a folder this generator made earlier; a folder it did not make is always refused."
        },
    )


def _generation_metadata(seed: int, num_train_videos: int, num_test_videos: int, captions_per_train_video: int):
    return {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "num_train_videos": num_train_videos,
        "num_test_videos": num_test_videos,
        "captions_per_train_video": captions_per_train_video,
        "frame_size": FRAME_SIZE,
        "fps": FPS,
        "duration_seconds": DURATION_SECONDS,
    }


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


def generate_synthetic_dataset(
    root: str | Path | None = None,
    seed: int = 0,
    num_train_videos: int = 300,
    num_test_videos: int = 60,
    captions_per_train_video: int = 5,
    overwrite: bool = False,
) -> Path:
    """Generates the embedded dataset (or finds it already generated) and returns its folder.

    Args:
        root (`str` or `Path`, *optional*): the output folder; defaults to a folder per arguments under
            [`default_cache_dir`].
        seed (`int`, *optional*, defaults to 0): the same seed (and sizes) gives the same scenes, captions and frames.
        num_train_videos (`int`, *optional*, defaults to 300): train scenes.
        num_test_videos (`int`, *optional*, defaults to 60): test scenes (one retrieval caption each).
        captions_per_train_video (`int`, *optional*, defaults to 5): retrieval captions per train scene.
        overwrite (`bool`, *optional*, defaults to `False`): regenerate even if `root` holds a complete dataset.

    Raises:
        `FileExistsError`: `root` exists, is not empty and was not made by this generator (no `.hbi_hf_generated`
            marker; nothing in it is touched, with or without `overwrite`), or holds a dataset generated with other
            arguments and `overwrite` is not set.
    """
    if num_train_videos < 1 or num_test_videos < 1 or captions_per_train_video < 1:
        raise ValueError("num_train_videos, num_test_videos and captions_per_train_video must all be >= 1")
    metadata = _generation_metadata(seed, num_train_videos, num_test_videos, captions_per_train_video)
    in_cache = root is None  # the cache folder belongs to this package, marker or not (older versions wrote none)
    if root is None:
        root = (
            default_cache_dir()
            / f"v{GENERATOR_VERSION}-seed{seed}-{num_train_videos}x{captions_per_train_video}-{num_test_videos}"
        )
    root = Path(root)
    if _holds(root, metadata) and not overwrite:
        return root
    if in_cache or is_generated_dataset(root):
        if not overwrite and root.exists():
            raise FileExistsError(
                f"{root} holds a synthetic dataset generated with other arguments, or an incomplete one; pass "
                "--overwrite (overwrite=True) to regenerate it, or give another folder"
            )
    elif root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(
            f"{root} is not empty and was not generated by hbi_hf (it has no {GENERATED_MARKER} file): refusing to "
            "write the synthetic dataset there; nothing in it was changed. Give a new or empty folder (--out of "
            "`python -m hbi_hf.data.synthetic`, or --data_root with --dataset_name synthetic)."
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=root.parent))
    try:
        _generate_into(staging, metadata)
        _replace_generated_folder(staging, root, owned=in_cache)
    except OSError:
        if not overwrite and _holds(root, metadata):  # another process generated the same dataset meanwhile
            return root
        raise
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    logger.info(f"generated the synthetic dataset in {root}")
    return root


def is_generated_dataset(root: str | Path) -> bool:
    """Whether `root` is a folder this package generated (it carries the `.hbi_hf_generated` marker)."""
    return (Path(root) / GENERATED_MARKER).is_file()


def _holds(root: Path, metadata: dict) -> bool:
    """Whether `root` holds a complete dataset generated with `metadata` (`metadata.json`, written last, matches).
    Only read: a folder without the marker (made by an older version) is reused but never replaced."""
    try:
        return json.loads((root / "metadata.json").read_text(encoding="utf-8")) == metadata
    except (OSError, ValueError):
        return False


def _replace_generated_folder(staging: Path, root: Path, owned: bool = False) -> None:
    """Moves `staging` to `root`, which is absent, an empty folder, or a folder this package generated (or `owned`:
    in its cache), moved aside first and deleted only once the new folder is in place."""
    if not root.exists() or (root.is_dir() and not any(root.iterdir())):
        staging.replace(root)
        return
    if not (owned or is_generated_dataset(root)):
        raise FileExistsError(f"{root}: refusing to replace a folder hbi_hf did not generate")
    old = Path(tempfile.mkdtemp(prefix=".synthetic-old-", dir=root.parent))
    old.rmdir()
    root.rename(old)
    staging.rename(root)
    shutil.rmtree(old)


def _generate_into(folder: Path, metadata: dict) -> None:
    (folder / GENERATED_MARKER).write_text(json.dumps({"generator": __name__, "generator_version": GENERATOR_VERSION}))
    (folder / "videos").mkdir()
    scenes = sample_scenes(metadata["seed"], metadata["num_train_videos"], "train")
    scenes += sample_scenes(metadata["seed"], metadata["num_test_videos"], "test")
    caption_rng = np.random.default_rng([metadata["seed"], 7])
    retrieval, qa, captioning, scene_rows = [], [], [], []
    for scene in scenes:
        video = f"videos/{scene.video_id}.mp4"
        write_video(render_scene(scene), folder / video)
        references = scene_captions(scene, caption_rng, len(ORDER_TEMPLATES))
        count = metadata["captions_per_train_video"] if scene.split == "train" else 1
        retrieval += [{"video": video, "caption": caption, "split": scene.split} for caption in references[:count]]
        qa += [{"video": video, "question": q, "answer": a, "split": scene.split} for q, a in scene_questions(scene)]
        captioning.append({"video": video, "references": references, "split": scene.split})
        scene_rows.append(asdict(scene))
    _write_jsonl(folder / "retrieval.jsonl", retrieval)
    _write_jsonl(folder / "qa.jsonl", qa)
    _write_jsonl(folder / "captioning.jsonl", captioning)
    _write_jsonl(folder / "scenes.jsonl", scene_rows)
    (folder / "metadata.json").write_text(json.dumps(metadata))


def _dataset_root(root: str | Path | None) -> Path:
    return generate_synthetic_dataset() if root is None else Path(root)


def _read_split_rows(path: Path) -> dict[str, list[dict]]:
    rows = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        rows.setdefault(row.pop("split"), []).append(row)
    return rows


def load_synthetic_retrieval(root: str | Path | None = None) -> DatasetDict:
    """Retrieval rows (`video_id`, `video_path`, `caption`) with "train" and "test"; `root=None` generates (or
    reuses) the default dataset."""
    root = _dataset_root(root)
    return load_video_folder(root, root / "retrieval.jsonl")


def load_synthetic_qa(root: str | Path | None = None, top_k: int = 1000) -> DatasetDict:
    """QA rows (`video_id`, `video_path`, `question`, `answer`, `label`); the vocabulary comes from train."""
    root = _dataset_root(root)
    splits = {
        name: [
            {
                "video_id": video_folder_id(root, root / row["video"]),
                "video_path": str(root / row["video"]),
                "question": row["question"],
                "answer": row["answer"],
            }
            for row in rows
        ]
        for name, rows in _read_split_rows(root / "qa.jsonl").items()
    }
    return _qa_dataset_dict(splits, top_k, None)


def load_synthetic_captioning(root: str | Path | None = None) -> DatasetDict:
    """Captioning: "train" has one row per reference caption (`video_id`, `video_path`, `caption`), "test" one row
    per video with all its `references`."""
    root = _dataset_root(root)
    splits = _read_split_rows(root / "captioning.jsonl")
    train = [
        {
            "video_id": video_folder_id(root, root / row["video"]),
            "video_path": str(root / row["video"]),
            "caption": caption,
        }
        for row in splits["train"]
        for caption in row["references"]
    ]
    test = [
        {
            "video_id": video_folder_id(root, root / row["video"]),
            "video_path": str(root / row["video"]),
            "references": row["references"],
        }
        for row in splits["test"]
    ]
    return DatasetDict(
        {"train": Dataset.from_list(train), "test": Dataset.from_list(test, features=REFERENCE_FEATURES)}
    )


def main(argv: list[str] | None = None) -> Path:
    parser = HfArgumentParser(HBISyntheticDatasetArguments)
    (arguments,) = parser.parse_args_into_dataclasses(args=argv)
    try:
        root = generate_synthetic_dataset(
            root=arguments.out,
            seed=arguments.seed,
            num_train_videos=arguments.num_train_videos,
            num_test_videos=arguments.num_test_videos,
            captions_per_train_video=arguments.captions_per_train_video,
            overwrite=arguments.overwrite,
        )
    except FileExistsError as error:
        parser.error(str(error))
    print(root)
    return root


__all__ = [
    "HBISyntheticObjectState",
    "frame_objects",
    "generate_synthetic_dataset",
    "is_generated_dataset",
    "load_synthetic_captioning",
    "load_synthetic_qa",
    "load_synthetic_retrieval",
    "render_frame",
    "render_scene",
    "sample_scenes",
    "write_video",
]

if __name__ == "__main__":
    main()
