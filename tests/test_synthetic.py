"""Specification of the embedded synthetic video-text dataset."""

import json

import numpy as np
import pytest

from hbi_hf import HBIProcessor, HBIVideoProcessor
from hbi_hf.data import (
    HBIRetrievalCollator,
    build_clip_tokenizer,
    generate_synthetic_dataset,
    load_synthetic_captioning,
    load_synthetic_qa,
    load_synthetic_retrieval,
)
from hbi_hf.data.synthetic import COLOURS, main, render_scene, sample_scenes
from hbi_hf.video_processing_hbi import read_video

TINY = {"num_train_videos": 4, "num_test_videos": 2, "captions_per_train_video": 3}


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    return generate_synthetic_dataset(tmp_path_factory.mktemp("synthetic") / "tiny", seed=3, **TINY)


def every_frame(metadata):
    return np.arange(metadata.total_num_frames)


def test_generator_writes_real_decodable_videos(dataset_root):
    videos = sorted((dataset_root / "videos").glob("*.mp4"))
    assert len(videos) == 6
    frames, metadata = read_video(videos[0], every_frame)
    assert metadata.total_num_frames == 32 and metadata.fps == pytest.approx(4.0)
    assert frames.shape == (32, 64, 64, 3)


def test_same_seed_gives_the_same_dataset_and_another_seed_a_different_one(dataset_root, tmp_path):
    again = generate_synthetic_dataset(tmp_path / "again", seed=3, **TINY)
    other = generate_synthetic_dataset(tmp_path / "other", seed=4, **TINY)
    for name in ("retrieval.jsonl", "qa.jsonl", "captioning.jsonl", "scenes.jsonl"):
        assert (again / name).read_text() == (dataset_root / name).read_text()
    assert (other / "retrieval.jsonl").read_text() != (dataset_root / "retrieval.jsonl").read_text()
    for video in sorted((dataset_root / "videos").glob("*.mp4")):
        first, _ = read_video(video, every_frame)
        second, _ = read_video(again / "videos" / video.name, every_frame)
        np.testing.assert_array_equal(first, second)


def test_generated_folder_is_reused_and_a_mismatch_is_refused(dataset_root):
    stamp = (dataset_root / "metadata.json").stat().st_mtime_ns
    assert generate_synthetic_dataset(dataset_root, seed=3, **TINY) == dataset_root
    assert (dataset_root / "metadata.json").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="other arguments"):
        generate_synthetic_dataset(dataset_root, seed=5, **TINY)


def test_video_shows_the_captioned_colours(dataset_root):
    scene = json.loads((dataset_root / "scenes.jsonl").read_text().splitlines()[0])
    frames, _ = read_video(dataset_root / "videos" / f"{scene['video_id']}.mp4", every_frame)
    for obj in scene["objects"]:
        target = np.array(COLOURS[obj["colour"]])
        closeness = np.abs(frames.astype(int) - target).sum(axis=-1)
        assert (closeness < 60).any(), obj["colour"]


def test_temporal_twins_show_the_same_events_in_the_other_order():
    scenes = sample_scenes(seed=0, num_videos=60, split="train")
    twins = [(a, b) for a, b in zip(scenes, scenes[1:], strict=False) if a.objects == b.objects]
    assert twins
    first, second = twins[0]
    assert [(e.actor, e.kind) for e in second.events] == [(e.actor, e.kind) for e in reversed(first.events)]
    assert not np.array_equal(render_scene(first), render_scene(second))


def test_retrieval_has_several_captions_per_train_video_and_one_per_test_video(dataset_root):
    dataset = load_synthetic_retrieval(dataset_root)
    assert dataset["train"].num_rows == 4 * 3 and dataset["test"].num_rows == 2
    assert len(set(dataset["train"]["caption"])) == 12
    caption = dataset["test"][0]["caption"]
    assert any(colour in caption for colour in COLOURS)
    assert any(word in caption for word in ("then", "after", "before", "next", "later"))


def test_qa_and_captioning_come_from_the_same_scenes(dataset_root):
    qa = load_synthetic_qa(dataset_root)
    vocabulary = qa["train"].features["label"].names
    assert all(vocabulary[row["label"]] == row["answer"] for row in qa["train"])
    assert set(qa["test"]["video_id"]) == set(load_synthetic_retrieval(dataset_root)["test"]["video_id"])
    captioning = load_synthetic_captioning(dataset_root)
    assert len(captioning["test"][0]["references"]) > 1
    assert captioning["train"].num_rows == 4 * len(captioning["test"][0]["references"])


def test_synthetic_rows_collate_into_a_model_batch(dataset_root):
    processor = HBIProcessor(
        HBIVideoProcessor(num_frames=6, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        build_clip_tokenizer(),
        max_words=16,
    )
    rows = list(load_synthetic_retrieval(dataset_root)["train"].select(range(3)))
    batch = HBIRetrievalCollator(processor, strict=True)(rows)
    assert batch["pixel_values"].shape == (3, 6, 3, 32, 32)
    assert batch["video_mask"].tolist() == [[1] * 6] * 3


def test_command_line_writes_the_dataset(tmp_path):
    root = main(["--out", str(tmp_path / "cli"), "--num_train_videos", "1", "--num_test_videos", "1"])
    assert len(list((root / "videos").glob("*.mp4"))) == 2
