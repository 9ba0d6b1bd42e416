"""Specification of early input checks: settings and data that can only fail later are refused when they are made."""

import json

import pytest

from hbi_hf import HBIConfig
from hbi_hf.data import load_video_folder
from hbi_hf.retrieval_evaluation import HBIRetrievalGallery


def test_max_words_over_the_text_towers_positions_is_refused_at_config_time():
    with pytest.raises(ValueError, match=r"max_words \(100\).*max_position_embeddings \(77\)"):
        HBIConfig(max_words=100)
    assert HBIConfig(max_words=77).max_words == 77
    assert HBIConfig(max_words=100, text_config={"max_position_embeddings": 128}).max_words == 100


def test_num_frames_over_the_temporal_positions_is_refused_at_config_time():
    with pytest.raises(ValueError, match="num_frames"):
        HBIConfig(num_frames=80)


def _folder(tmp_path, files, rows):
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    lines = [json.dumps(row) for row in rows]
    (tmp_path / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return load_video_folder(tmp_path, tmp_path / "captions.jsonl")


def test_own_folder_ids_are_relative_paths_so_equal_names_in_two_folders_stay_apart(tmp_path):
    dataset = _folder(
        tmp_path,
        ["day1/clip.mp4", "day2/clip.mp4"],
        [
            {"video": "day1/clip.mp4", "caption": "morning"},
            {"video": "day2/clip.mp4", "caption": "evening"},
            {"video": "day1/clip", "caption": "the same morning video, named without extension"},
        ],
    )
    assert dataset["video_id"] == ["day1/clip", "day2/clip", "day1/clip"]
    gallery = HBIRetrievalGallery.from_dataset(dataset)  # the check evaluation makes, passing at load time
    assert gallery.video_ids == ["day1/clip", "day2/clip"]


def test_two_files_with_one_id_are_reported_at_load_time_naming_rows_and_files(tmp_path):
    with pytest.raises(ValueError, match=r"rows 1 and 2 give video_id 'day1/clip' to two files.*clip\.mp4.*clip\.avi"):
        _folder(
            tmp_path,
            ["day1/clip.mp4", "day1/clip.avi"],
            [{"video": "day1/clip.mp4", "caption": "a"}, {"video": "day1/clip.avi", "caption": "b"}],
        )
