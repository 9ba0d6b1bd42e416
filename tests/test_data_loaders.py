"""Specification of the benchmark loaders (on small annotation files in the real formats) and of the collators'
bad-input policy in strict and lenient mode."""

import csv
import json
import pickle

import av
import numpy as np
import pytest
import torch

from hbi_hf import HBIProcessor, HBIVideoProcessor
from hbi_hf.data import (
    HBIBadInputError,
    HBIRetrievalCollator,
    HBIVideoQACollator,
    build_answer_vocabulary,
    build_clip_tokenizer,
    load_activitynet_qa,
    load_activitynet_retrieval,
    load_didemo_retrieval,
    load_msrvtt_captioning,
    load_msrvtt_qa,
    load_msrvtt_retrieval,
    load_msvd_qa,
    load_msvd_retrieval,
    load_video_folder,
)
from hbi_hf.data.synthetic import write_video


def write_json(path, data):
    path.write_text(json.dumps(data))


def write_csv(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def test_msrvtt_retrieval_uses_all_train_captions_and_the_1k_a_pairs(tmp_path):
    write_csv(tmp_path / "MSRVTT_train.9k.csv", ["video_id"], [["video0"], ["video1"]])
    write_csv(
        tmp_path / "MSRVTT_JSFUSION_test.csv",
        ["key", "vid_key", "video_id", "sentence"],
        [["ret0", "msr7", "video7", "a man sings"]],
    )
    sentences = [
        {"caption": f"caption {v} {i}", "video_id": f"video{v}", "sen_id": 3 * v + i}
        for v in (0, 1, 7)
        for i in range(3)
    ]
    write_json(tmp_path / "MSRVTT_data.json", {"videos": [], "sentences": sentences})
    dataset = load_msrvtt_retrieval(tmp_path, "/videos")
    assert dataset["train"].num_rows == 6
    assert dataset["train"][0] == {"video_id": "video0", "video_path": "/videos/video0.mp4", "caption": "caption 0 0"}
    assert dataset["test"][:] == {
        "video_id": ["video7"],
        "video_path": ["/videos/video7.mp4"],
        "caption": ["a man sings"],
    }


def test_msrvtt_captioning_follows_the_official_split_with_reference_lists(tmp_path):
    videos = [
        {"video_id": "video0", "split": "train"},
        {"video_id": "video1", "split": "validate"},
        {"video_id": "video2", "split": "test"},
    ]
    sentences = [{"caption": f"c{v}{i}", "video_id": f"video{v}"} for v in range(3) for i in range(2)]
    write_json(tmp_path / "MSRVTT_data.json", {"videos": videos, "sentences": sentences})
    dataset = load_msrvtt_captioning(tmp_path, "/v")
    assert dataset["train"]["caption"] == ["c00", "c01"]
    assert dataset["validation"][0]["references"] == ["c10", "c11"]
    assert dataset["test"][0] == {"video_id": "video2", "video_path": "/v/video2.mp4", "references": ["c20", "c21"]}


def test_msvd_retrieval_reads_the_corpus_descriptions_and_split_lists(tmp_path):
    (tmp_path / "AllVideoDescriptions.txt").write_text(
        "# header line\n-4wsuPCjDBc_5_15 a squirrel eats\n-4wsuPCjDBc_5_15 a squirrel is eating\nabc_1_2 a dog runs\n"
    )
    (tmp_path / "train_list.txt").write_text("-4wsuPCjDBc_5_15\n")
    (tmp_path / "val_list.txt").write_text("abc_1_2\n")
    (tmp_path / "test_list.txt").write_text("abc_1_2\n")
    dataset = load_msvd_retrieval(tmp_path, "/clips")
    assert dataset["train"]["caption"] == ["a squirrel eats", "a squirrel is eating"]
    assert dataset["test"][0]["video_path"] == "/clips/abc_1_2.avi"


def test_msvd_pickle_captions_are_refused_unless_explicitly_allowed(tmp_path):
    with open(tmp_path / "raw-captions.pkl", "wb") as handle:
        pickle.dump({"abc_1_2": [["a", "dog", "runs"]]}, handle)
    for name in ("train_list.txt", "val_list.txt", "test_list.txt"):
        (tmp_path / name).write_text("abc_1_2\n")
    with pytest.raises(ValueError, match="refusing to unpickle"):
        load_msvd_retrieval(tmp_path, "/clips", captions_file="raw-captions.pkl")
    dataset = load_msvd_retrieval(tmp_path, "/clips", captions_file="raw-captions.pkl", allow_pickle=True)
    assert dataset["train"]["caption"] == ["a dog runs"]


def test_activitynet_paragraphs_join_segment_sentences_in_time_order(tmp_path):
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "v_abc.mkv").write_bytes(b"")
    entry = {
        "duration": 10.0,
        "timestamps": [[5.0, 9.0], [0.0, 4.0]],
        "sentences": [" Later he jumps.", "A man runs."],
    }
    write_json(tmp_path / "train.json", {"v_abc": entry})
    write_json(tmp_path / "val_1.json", {"v_xyz": {"duration": 3.0, "timestamps": [[0, 1]], "sentences": ["One."]}})
    dataset = load_activitynet_retrieval(tmp_path, tmp_path / "videos")
    assert dataset["train"][0]["caption"] == "A man runs. Later he jumps."
    assert dataset["train"][0]["video_path"] == str(tmp_path / "videos" / "v_abc.mkv")
    assert dataset["test"][0]["video_path"] == str(tmp_path / "videos" / "v_xyz.mp4")


def test_didemo_paragraphs_join_all_descriptions_of_a_video(tmp_path):
    rows = [
        {"video": "123@N00_456.mov", "description": "a dog runs ", "times": [[0, 0]], "annotation_id": 1},
        {"video": "123@N00_456.mov", "description": "it stops", "times": [[1, 1]], "annotation_id": 2},
    ]
    write_json(tmp_path / "train_data.json", rows)
    write_json(tmp_path / "test_data.json", rows[:1])
    dataset = load_didemo_retrieval(tmp_path, "/d")
    assert set(dataset) == {"train", "test"}
    assert dataset["train"][0] == {
        "video_id": "123@N00_456.mov",
        "video_path": "/d/123@N00_456.mov",
        "caption": "a dog runs it stops",
    }


def test_answer_vocabulary_is_the_top_k_train_answers():
    assert build_answer_vocabulary(["b", "a", "b", "c", "a", "b", "d"], top_k=2) == ["b", "a"]


def test_msrvtt_qa_labels_answers_outside_the_train_vocabulary_as_minus_one(tmp_path):
    train = [{"answer": a, "question": "what?", "video_id": 1, "id": i} for i, a in enumerate(["man", "man", "dog"])]
    write_json(tmp_path / "train_qa.json", train)
    write_json(tmp_path / "val_qa.json", train[:1])
    write_json(tmp_path / "test_qa.json", [{"answer": "cat", "question": "who?", "video_id": 7010, "id": 9}])
    dataset = load_msrvtt_qa(tmp_path, "/v", top_k=1)
    assert dataset["train"].features["label"].names == ["man"]
    assert dataset["train"]["label"] == [0, 0, -1]
    assert dataset["test"][0] == {
        "video_id": "video7010",
        "video_path": "/v/video7010.mp4",
        "question": "who?",
        "answer": "cat",
        "label": -1,
    }


def test_msvd_qa_maps_video_ids_to_clip_names(tmp_path):
    (tmp_path / "youtube_mapping.txt").write_text("-4wsuPCjDBc_5_15 vid1\nabc_1_2 vid2\n")
    for name in ("train_qa.json", "val_qa.json", "test_qa.json"):
        write_json(tmp_path / name, [{"answer": "squirrel", "question": "who eats?", "video_id": 1, "id": 0}])
    dataset = load_msvd_qa(tmp_path, "/clips")
    assert dataset["test"][0]["video_path"] == "/clips/-4wsuPCjDBc_5_15.avi"
    assert dataset["test"][0]["label"] == 0


def test_activitynet_qa_joins_questions_and_answers_by_question_id(tmp_path):
    for split in ("train", "val", "test"):
        write_json(
            tmp_path / f"{split}_q.json", [{"question": "is it day", "question_id": "v_ab_0", "video_name": "ab"}]
        )
        write_json(tmp_path / f"{split}_a.json", [{"answer": "yes", "question_id": "v_ab_0", "type": 3}])
    dataset = load_activitynet_qa(tmp_path, "/anet")
    assert dataset["validation"][0] == {
        "video_id": "v_ab",
        "video_path": "/anet/v_ab.mp4",
        "question": "is it day",
        "answer": "yes",
        "label": 0,
    }


def test_video_folder_reads_csv_and_json_lines_with_optional_splits(tmp_path):
    write_csv(tmp_path / "captions.csv", ["video", "caption"], [["clip1.mp4", "a cat"], ["clip2", "a dog"]])
    dataset = load_video_folder(tmp_path, tmp_path / "captions.csv")
    assert dataset["video_id"] == ["clip1", "clip2"]
    assert dataset["video_path"] == [str(tmp_path / "clip1.mp4"), str(tmp_path / "clip2.mp4")]
    (tmp_path / "captions.jsonl").write_text(
        '{"video": "clip1.mp4", "caption": "a cat", "split": "train"}\n{"video": "clip2.mp4", "caption": "x", "split": "test"}\n'
    )
    assert set(load_video_folder(tmp_path, tmp_path / "captions.jsonl")) == {"train", "test"}


def test_video_folder_names_the_line_of_a_malformed_json_lines_file(tmp_path):
    (tmp_path / "captions.jsonl").write_text('{"video": "a.mp4", "caption": "x"}\n{"video": "b.mp4"}\n')
    with pytest.raises(ValueError, match="line 2"):
        load_video_folder(tmp_path, tmp_path / "captions.jsonl")


# Bad input: every case in strict mode (an error naming the file and reason) and lenient mode (skip + count).


@pytest.fixture(scope="module")
def processor():
    video_processor = HBIVideoProcessor(
        num_frames=4, size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}
    )
    return HBIProcessor(video_processor, build_clip_tokenizer(), max_words=8)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    frames = np.zeros((2, 32, 32, 3), np.uint8)
    write_video(frames, folder / "short.mp4", fps=4)
    write_video(np.zeros((8, 32, 32, 3), np.uint8), folder / "good.mp4", fps=4)
    (folder / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    (folder / "empty.mp4").write_bytes(b"")
    container = av.open(str(folder / "no_frames.mp4"), "w")
    stream = container.add_stream("mpeg4", rate=4)
    stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
    container.start_encoding()
    container.close()
    return folder


def row(folder, video, caption="a red circle appears"):
    return {"video_id": video, "video_path": str(folder / video), "caption": caption}


BAD_ROWS = {
    "missing file": ("absent.mp4", "a caption"),
    "unreadable video": ("corrupt.mp4", "a caption"),
    "zero frames": ("no_frames.mp4", "a caption"),
    "zero frames (empty file)": ("empty.mp4", "a caption"),
    "empty caption": ("good.mp4", "   "),
    "non-text caption": ("good.mp4", None),
}


@pytest.mark.parametrize("reason", sorted(BAD_ROWS))
def test_strict_mode_raises_an_error_naming_the_file_and_reason(processor, videos, reason):
    video, caption = BAD_ROWS[reason]
    reason = reason.split(" (")[0]
    collator = HBIRetrievalCollator(processor, strict=True)
    with pytest.raises(HBIBadInputError, match=rf"{video}: {reason}"):
        collator([row(videos, "good.mp4"), row(videos, video, caption)])


@pytest.mark.parametrize("reason", sorted(BAD_ROWS))
def test_lenient_mode_skips_counts_and_reports_the_bad_sample(processor, videos, reason, caplog):
    video, caption = BAD_ROWS[reason]
    reason = reason.split(" (")[0]
    collator = HBIRetrievalCollator(processor)
    batch = collator([row(videos, "good.mp4"), row(videos, video, caption)])
    assert batch["input_ids"].shape[0] == batch["pixel_values"].shape[0] == 1
    assert collator.skipped[reason] == 1 and sum(collator.skipped.values()) == 1
    assert collator.report()[reason] == 1
    assert video in caplog.text
    assert sum(collator.skipped.values()) == 0


def test_a_batch_with_no_usable_sample_raises_even_in_lenient_mode(processor, videos):
    with pytest.raises(HBIBadInputError, match="every sample"):
        HBIRetrievalCollator(processor)([row(videos, "absent.mp4")])


def test_video_shorter_than_num_frames_is_padded_and_masked(processor, videos):
    batch = HBIRetrievalCollator(processor, strict=True)([row(videos, "short.mp4"), row(videos, "good.mp4")])
    assert batch["pixel_values"].shape == (2, 4, 3, 16, 16)
    assert batch["video_mask"].tolist() == [[1, 0, 0, 0], [1, 1, 0, 0]]


@pytest.mark.parametrize("strict", [True, False])
def test_caption_longer_than_max_words_is_truncated_and_counted(processor, videos, strict):
    collator = HBIRetrievalCollator(processor, strict=strict)
    batch = collator([row(videos, "good.mp4", "one two three four five six seven eight nine ten")])
    assert batch["input_ids"].shape == (1, 8) and batch["input_ids"][0, -1].item() == 49407
    assert collator.kept_with_note["caption truncated"] == 1


@pytest.mark.parametrize("strict", [True, False])
def test_qa_answer_outside_the_vocabulary_is_kept_with_an_ignored_label_and_counted(processor, videos, strict):
    collator = HBIVideoQACollator(processor, strict=strict)
    rows = [
        dict(row(videos, "good.mp4"), question="what appears?", answer="circle", label=3),
        dict(row(videos, "good.mp4"), question="what appears?", answer="zebra", label=-1),
    ]
    batch = collator(rows)
    assert torch.equal(batch["labels"], torch.tensor([3, -100]))
    assert collator.kept_with_note["answer outside vocabulary"] == 1


def test_lenient_skips_in_dataloader_workers_are_counted_in_the_main_process(processor, videos):
    collator = HBIRetrievalCollator(processor)
    rows = [row(videos, "good.mp4"), row(videos, "absent.mp4")] * 2
    loader = torch.utils.data.DataLoader(rows, batch_size=2, num_workers=2, collate_fn=collator)
    assert [batch["input_ids"].shape[0] for batch in loader] == [1, 1]
    assert collator.skipped["missing file"] == 2


# Malformed annotations: every error names the file, the line / item / key and the field, and what was expected.


def msrvtt_files(folder, test_rows=(("video7", "a man sings"),), train_ids=("video0",), sentences=None):
    write_csv(folder / "MSRVTT_train.9k.csv", ["video_id"], [[video] for video in train_ids])
    write_csv(
        folder / "MSRVTT_JSFUSION_test.csv",
        ["key", "vid_key", "video_id", "sentence"],
        [["ret0", "msr", video, sentence] for video, sentence in test_rows],
    )
    sentences = sentences or [{"video_id": "video0", "caption": "a cat"}]
    write_json(folder / "MSRVTT_data.json", {"videos": [], "sentences": sentences})


def test_a_csv_starting_with_a_byte_order_mark_is_read(tmp_path):
    msrvtt_files(tmp_path)
    for name in ("MSRVTT_train.9k.csv", "MSRVTT_JSFUSION_test.csv"):
        path = tmp_path / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    dataset = load_msrvtt_retrieval(tmp_path, "/videos")
    assert dataset["train"]["video_id"] == ["video0"] and dataset["test"]["caption"] == ["a man sings"]


def test_a_json_file_starting_with_a_byte_order_mark_is_read(tmp_path):
    msrvtt_files(tmp_path)
    path = tmp_path / "MSRVTT_data.json"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_msrvtt_retrieval(tmp_path, "/videos")["train"]["caption"] == ["a cat"]


def test_text_that_is_not_utf8_names_the_file_and_line(tmp_path):
    msrvtt_files(tmp_path)
    (tmp_path / "MSRVTT_JSFUSION_test.csv").write_bytes(b"key,vid_key,video_id,sentence\nr,m,video7,caf\xe9\n")
    with pytest.raises(ValueError, match=r"MSRVTT_JSFUSION_test.csv, line 2: not UTF-8"):
        load_msrvtt_retrieval(tmp_path, "/videos")


def test_a_missing_column_names_the_file_and_the_columns_found(tmp_path):
    msrvtt_files(tmp_path)
    write_csv(tmp_path / "MSRVTT_JSFUSION_test.csv", ["key", "video"], [["r", "video7"]])
    with pytest.raises(ValueError, match=r"MSRVTT_JSFUSION_test.csv: .*missing \['video_id', 'sentence'\]"):
        load_msrvtt_retrieval(tmp_path, "/videos")


def test_a_missing_json_field_names_the_file_item_and_field(tmp_path):
    msrvtt_files(tmp_path, sentences=[{"video_id": "video0", "caption": "a cat"}, {"video_id": "video0"}])
    with pytest.raises(ValueError, match=r"MSRVTT_data.json, sentences item 1: field 'caption' is missing"):
        load_msrvtt_retrieval(tmp_path, "/videos")


def test_an_empty_split_gets_a_clear_message(tmp_path):
    msrvtt_files(tmp_path)
    (tmp_path / "MSRVTT_JSFUSION_test.csv").write_text("key,vid_key,video_id,sentence\n")
    with pytest.raises(ValueError, match=r"MSRVTT_JSFUSION_test.csv: no data rows"):
        load_msrvtt_retrieval(tmp_path, "/videos")
    (tmp_path / "captions.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match=r"captions.jsonl: no rows"):
        load_video_folder(tmp_path, tmp_path / "captions.jsonl")
    for name in ("train_qa.json", "val_qa.json"):
        write_json(tmp_path / name, [{"answer": "man", "question": "who?", "video_id": 1, "id": 0}])
    write_json(tmp_path / "test_qa.json", [])
    with pytest.raises(ValueError, match=r"test_qa.json: no records"):
        load_msrvtt_qa(tmp_path, "/v")


def test_duplicated_ids_are_reported_naming_both_places(tmp_path):
    msrvtt_files(tmp_path, test_rows=[("video7", "a man sings"), ("video7", "a woman sings")])
    with pytest.raises(
        ValueError, match=r"MSRVTT_JSFUSION_test.csv, line 3: video_id 'video7' is repeated \(first at .*line 2\)"
    ):
        load_msrvtt_retrieval(tmp_path, "/videos")
    (tmp_path / "train.json").write_text('{"v_a": {"sentences": ["x"]}, "v_a": {"sentences": ["y"]}}')
    write_json(tmp_path / "val_1.json", {"v_b": {"sentences": ["z"]}})
    with pytest.raises(ValueError, match=r"train.json: key 'v_a' appears twice"):
        load_activitynet_retrieval(tmp_path, tmp_path)
    for split in ("train", "val", "test"):
        write_json(tmp_path / f"{split}_q.json", [{"question": "q", "question_id": "v_ab_0", "video_name": "ab"}])
        write_json(tmp_path / f"{split}_a.json", [{"answer": "yes", "question_id": "v_ab_0"}] * 2)
    with pytest.raises(ValueError, match=r"train_a.json, item 1: question_id 'v_ab_0' is repeated"):
        load_activitynet_qa(tmp_path, "/anet")
    for name in ("train_list.txt", "val_list.txt", "test_list.txt"):
        (tmp_path / name).write_text("abc\nabc\n")
    (tmp_path / "AllVideoDescriptions.txt").write_text("abc a dog runs\n")
    with pytest.raises(ValueError, match=r"train_list.txt, line 2: id 'abc' is repeated"):
        load_msvd_retrieval(tmp_path, "/clips")


def test_a_string_where_a_list_of_captions_belongs_is_refused(tmp_path):
    write_json(tmp_path / "train.json", {"v_a": {"sentences": "A man runs."}})
    write_json(tmp_path / "val_1.json", {"v_b": {"sentences": ["z"]}})
    with pytest.raises(
        ValueError, match=r"train.json, key 'v_a': field 'sentences' is the string 'A man runs.'; expected a list"
    ):
        load_activitynet_retrieval(tmp_path, tmp_path)
    write_json(tmp_path / "captions.json", {"abc": "a dog runs"})
    for name in ("train_list.txt", "val_list.txt", "test_list.txt"):
        (tmp_path / name).write_text("abc\n")
    with pytest.raises(
        ValueError, match=r"captions.json, key 'abc': the string 'a dog runs'; expected a list of strings"
    ):
        load_msvd_retrieval(tmp_path, "/clips", captions_file="captions.json")


@pytest.mark.parametrize("answer", [None, "", "  ", ["man"]])
def test_a_null_or_blank_qa_answer_is_refused(tmp_path, answer):
    good = {"answer": "man", "question": "who?", "video_id": 1, "id": 0}
    write_json(tmp_path / "train_qa.json", [good, {**good, "answer": answer, "id": 1}])
    write_json(tmp_path / "val_qa.json", [good])
    write_json(tmp_path / "test_qa.json", [good])
    with pytest.raises(ValueError, match=r"train_qa.json, item 1: field 'answer' is .*; expected the answer"):
        load_msrvtt_qa(tmp_path, "/v")


def test_a_blank_split_cell_is_an_error_naming_the_line(tmp_path):
    write_csv(tmp_path / "captions.csv", ["video", "caption", "split"], [["a.mp4", "x", "train"], ["b.mp4", "y", " "]])
    with pytest.raises(ValueError, match=r"captions.csv, line 3: field 'split' is an empty string"):
        load_video_folder(tmp_path, tmp_path / "captions.csv")


def test_a_caption_of_the_wrong_type_is_refused_and_a_null_one_is_left_to_the_policy(tmp_path):
    (tmp_path / "captions.jsonl").write_text('{"video": "a.mp4", "caption": null}\n{"video": "b.mp4", "caption": 7}\n')
    with pytest.raises(ValueError, match=r"captions.jsonl, line 2: field 'caption' is int 7; expected"):
        load_video_folder(tmp_path, tmp_path / "captions.jsonl")
    (tmp_path / "captions.jsonl").write_text('{"video": "a.mp4", "caption": null}\n')
    assert load_video_folder(tmp_path, tmp_path / "captions.jsonl")["caption"] == [None]


@pytest.mark.parametrize("video", ["../outside.mp4", "sub/../../outside.mp4", "/etc/passwd"])
def test_ids_that_leave_the_video_folder_are_refused(tmp_path, video):
    (tmp_path / "captions.jsonl").write_text(json.dumps({"video": video, "caption": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"captions.jsonl, line 1: video .* is not inside the video folder"):
        load_video_folder(tmp_path / "videos", tmp_path / "captions.jsonl")
    msrvtt_files(tmp_path, test_rows=[(video, "a caption")])
    with pytest.raises(ValueError, match=r"MSRVTT_JSFUSION_test.csv, line 2: video .* is not inside the video folder"):
        load_msrvtt_retrieval(tmp_path, tmp_path / "videos")
    write_json(tmp_path / "train_data.json", [{"video": video, "description": "d"}])
    write_json(tmp_path / "test_data.json", [{"video": "ok.mp4", "description": "d"}])
    with pytest.raises(ValueError, match=r"train_data.json, item 0: video .* is not inside the video folder"):
        load_didemo_retrieval(tmp_path, tmp_path / "videos")


@pytest.mark.parametrize("answer", [3, 2.0])
def test_a_numeric_qa_answer_is_refused_naming_file_item_and_field(tmp_path, answer):
    """A number is not taken as the text class "3": it may be a choice's index, and 2 and 2.0 would be two classes."""
    good = {"answer": "man", "question": "how many?", "video_id": 1, "id": 0}
    write_json(tmp_path / "train_qa.json", [good, {**good, "answer": answer, "id": 1}])
    write_json(tmp_path / "val_qa.json", [good])
    write_json(tmp_path / "test_qa.json", [good])
    with pytest.raises(
        ValueError, match=rf"train_qa.json, item 1: field 'answer' is the number {answer}; expected the answer's text"
    ):
        load_msrvtt_qa(tmp_path, "/v")
    write_json(tmp_path / "train_qa.json", [good, {**good, "answer": str(answer), "id": 1}])
    assert load_msrvtt_qa(tmp_path, "/v")["train"]["answer"] == ["man", str(answer)]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"timestamps": [[0.0, 4.0]], "sentences": ["A man runs.", "He jumps."]},
            r"train.json, key 'v_b': field 'timestamps' holds 1 segments and field 'sentences' 2 sentences",
        ),
        (
            {"timestamps": [[0.0, 4.0], [4.0, 6.0], [6.0, 9.0]], "sentences": ["A man runs.", "He jumps."]},
            r"train.json, key 'v_b': field 'timestamps' holds 3 segments and field 'sentences' 2 sentences",
        ),
        ({"sentences": ["A man runs."]}, r"train.json, key 'v_b': field 'timestamps' is missing"),
        (
            {"timestamps": "0-4", "sentences": ["A man runs."]},
            r"train.json, key 'v_b': field 'timestamps' is the string '0-4'; expected a list of \[start, end\]",
        ),
    ],
)
def test_activitynet_timestamps_that_do_not_pair_with_the_sentences_are_refused(tmp_path, entry, message):
    good = {"duration": 9.0, "timestamps": [[0.0, 4.0]], "sentences": ["One."]}
    write_json(tmp_path / "train.json", {"v_a": good, "v_b": {"duration": 9.0, **entry}})
    write_json(tmp_path / "val_1.json", {"v_c": good})
    with pytest.raises(ValueError, match=message):
        load_activitynet_retrieval(tmp_path, tmp_path)
