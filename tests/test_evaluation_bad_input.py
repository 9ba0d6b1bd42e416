"""Specification of the bad-input policy in retrieval evaluation and retrieval training: a null, empty or
whitespace-only caption and an unreadable video are left out and counted (lenient, the default) or raise an error
naming the row or file (strict); the metrics say what was ranked and what was left out; an unreadable test video during
in-training evaluation (`eval_strategy="epoch"`) loses neither the epoch nor its checkpoint; retrieval training prints
and saves its skip totals."""

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_TEXT_CLIP_VOCABULARY, tiny_hbi_config
from datasets import Dataset

from hbi_hf import HBIForRetrieval
from hbi_hf.data import HBIBadInputError, HBIRetrievalCollator
from hbi_hf.data.synthetic import load_synthetic_retrieval
from hbi_hf.retrieval_data import bad_input_report_callback, build_retrieval_processor
from hbi_hf.retrieval_evaluation import evaluate_retrieval
from hbi_hf.training import (
    HBIDataArguments,
    HBIModelArguments,
    HBITrainer,
    HBITrainingArguments,
    train_retrieval,
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("bad-input") / "model"
    HBIForRetrieval(tiny_hbi_config(text_config=dict(TINY_TEXT_CLIP_VOCABULARY))).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model(model_dir):
    return HBIForRetrieval.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def processor(model):
    return build_retrieval_processor(model.config)


@pytest.fixture(scope="module")
def corrupt_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("corrupt") / "corrupt.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    return str(path)


def rows(dataset: Dataset) -> list[dict]:
    return [dict(row) for row in dataset]


BAD_CAPTIONS = {"null": None, "empty": "", "whitespace": " \t "}


@pytest.fixture(scope="module")
def test_rows(tiny_synthetic_root):
    return rows(load_synthetic_retrieval(tiny_synthetic_root)["test"])


@pytest.mark.parametrize("kind", sorted(BAD_CAPTIONS))
def test_a_bad_caption_is_left_out_counted_and_the_rest_is_ranked(model, processor, test_rows, kind):
    bad = {**test_rows[1], "caption": BAD_CAPTIONS[kind]}  # a second, bad caption of a test video
    metrics = evaluate_retrieval(model, Dataset.from_list([*test_rows, bad]), processor, batch_size=2)
    clean = evaluate_retrieval(model, Dataset.from_list(test_rows), processor, batch_size=2)
    reason = "non_text_caption" if kind == "null" else "empty_caption"
    assert metrics[f"bad_input_{reason}"] == 1
    assert (metrics["gallery_captions"], metrics["gallery_videos"]) == (3, 3)
    assert (metrics["left_out_captions"], metrics["left_out_videos"]) == (1, 0)
    assert {k: v for k, v in metrics.items() if "_R@" in k} == {k: v for k, v in clean.items() if "_R@" in k}


@pytest.mark.parametrize("kind", sorted(BAD_CAPTIONS))
def test_strict_evaluation_names_the_row_video_and_field_of_a_bad_caption(model, processor, test_rows, kind):
    dataset = Dataset.from_list([*test_rows[:2], {**test_rows[2], "caption": BAD_CAPTIONS[kind]}])
    expected = rf"test row 2 \(video {test_rows[2]['video_id']}\): (non-text|empty) caption \(caption is"
    with pytest.raises(HBIBadInputError, match=expected):
        evaluate_retrieval(model, dataset, processor, strict=True)


def test_an_unreadable_test_video_is_left_out_with_its_captions_and_the_gallery_size_is_reported(
    model, processor, test_rows, corrupt_video, caplog
):
    broken = {"video_id": "broken", "video_path": corrupt_video, "caption": "a red circle appears"}
    metrics = evaluate_retrieval(model, Dataset.from_list([*test_rows, broken, broken]), processor, batch_size=2)
    assert metrics["bad_input_unreadable_video"] == 1
    assert (metrics["gallery_captions"], metrics["gallery_videos"]) == (3, 3)
    assert (metrics["left_out_captions"], metrics["left_out_videos"]) == (2, 1)
    assert "against a gallery of 3 videos" in caplog.text and "not directly comparable" in caplog.text
    with pytest.raises(HBIBadInputError, match=rf"{corrupt_video}: unreadable video"):
        evaluate_retrieval(model, Dataset.from_list([*test_rows, broken]), processor, strict=True)


def test_nothing_usable_is_an_error_even_when_lenient(model, processor, corrupt_video):
    dataset = Dataset.from_list([{"video_id": "broken", "video_path": corrupt_video, "caption": "a caption"}])
    with pytest.raises(HBIBadInputError, match="nothing to evaluate"):
        evaluate_retrieval(model, dataset, processor)


def test_an_unreadable_video_in_epoch_evaluation_neither_stops_training_nor_loses_the_checkpoint(
    model_dir, processor, tiny_synthetic_root, corrupt_video, tmp_path
):
    splits = load_synthetic_retrieval(tiny_synthetic_root)
    broken = {"video_id": "broken", "video_path": corrupt_video, "caption": "a red circle appears"}
    collator = HBIRetrievalCollator(processor)
    trainer = HBITrainer(
        model=HBIForRetrieval.from_pretrained(model_dir),
        args=HBITrainingArguments(
            output_dir=str(tmp_path / "run"),
            use_cpu=True,
            per_device_train_batch_size=4,
            per_device_eval_batch_size=4,
            max_steps=2,
            num_train_epochs=2,
            eval_strategy="epoch",
            save_strategy="epoch",
            report_to="none",
            disable_tqdm=True,
        ),
        data_collator=collator,
        train_dataset=splits["train"].select(range(4)),
        eval_dataset=Dataset.from_list([*rows(splits["test"]), broken]),
        processing_class=processor,
        callbacks=[bad_input_report_callback(collator)],
    )
    trainer.train()
    assert (tmp_path / "run" / "checkpoint-1" / "model.safetensors").is_file()
    evaluations = [entry for entry in trainer.state.log_history if "eval_t2v_R@1" in entry]
    assert len(evaluations) == 2
    assert all(e["eval_left_out_videos"] == 1 and e["eval_bad_input_unreadable_video"] == 1 for e in evaluations)


def test_retrieval_training_prints_and_saves_its_skip_totals(model_dir, tiny_synthetic_root, tmp_path, caplog):
    lines = [
        {**row, "caption": row["caption"]}
        for row in map(json.loads, (tiny_synthetic_root / "retrieval.jsonl").read_text().splitlines())
    ]  # {"video": "videos/<id>.mp4", "caption", "split"}: 12 train rows, 3 test rows
    lines[1]["video"] = "videos/absent.mp4"
    lines[2]["caption"] = "  "
    captions = tmp_path / "captions.jsonl"
    captions.write_text("".join(json.dumps(line) + "\n" for line in lines))
    training_args = HBITrainingArguments(
        output_dir=str(tmp_path / "run"),
        use_cpu=True,
        per_device_train_batch_size=4,
        max_steps=3,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        do_train=True,
    )
    data_args = HBIDataArguments(dataset_name="folder", data_root=str(captions), video_root=str(tiny_synthetic_root))
    train_retrieval(HBIModelArguments(model_name_or_path=str(model_dir)), data_args, training_args)
    totals = json.loads((tmp_path / "run" / "bad_input.json").read_text())["train"]
    assert totals["missing file"] == totals["empty caption"] == 1  # 12 rows, 3 steps of 4: one pass
    assert totals["unreadable video"] == totals["zero frames"] == totals["non-text caption"] == 0
    assert "bad input over the whole training run: {'missing file': 1, 'empty caption': 1" in caplog.text


@pytest.fixture(scope="module")
def nan_model_dir(tmp_path_factory):
    """A tiny retrieval model whose CLIP text projection is all NaN: every score it gives is NaN."""
    torch.manual_seed(0)
    model = HBIForRetrieval(tiny_hbi_config(text_config=dict(TINY_TEXT_CLIP_VOCABULARY)))
    with torch.no_grad():
        model.hbi.clip.text_projection.weight.fill_(float("nan"))
    folder = tmp_path_factory.mktemp("nan") / "model"
    model.save_pretrained(folder)
    return folder


def test_nan_scores_give_no_figures_and_name_the_test_rows_and_videos(nan_model_dir, processor, test_rows):
    model = HBIForRetrieval.from_pretrained(nan_model_dir)
    videos = [row["video_id"] for row in test_rows]
    expected = (
        rf"non-finite embeddings: 3 of 3 caption and 0 of 3 video.* hold 9 non-finite values .* of 9, in 3 of 3 "
        rf"captions, at test rows \[0, 1, 2\] and 3 of 3 videos \[{', '.join(videos)}\]"
    )
    with pytest.raises(ValueError, match=expected):
        evaluate_retrieval(model, Dataset.from_list(test_rows), processor, batch_size=2)
    # rows are named as in the dataset even when a bad caption before them was left out
    bad_first = [{**test_rows[0], "caption": ""}, *test_rows]
    with pytest.raises(ValueError, match=r"in 3 of 3 captions, at test rows \[1, 2, 3\]"):
        evaluate_retrieval(model, Dataset.from_list(bad_first), processor, batch_size=2)


def test_evaluate_retrieval_script_fails_on_a_nan_model_and_prints_no_figures(
    nan_model_dir, tiny_synthetic_root, monkeypatch, capsys
):
    script = Path(__file__).parent.parent / "scripts" / "evaluate_retrieval.py"
    argv = ["--model_name_or_path", str(nan_model_dir), "--dataset_name", "synthetic"]
    monkeypatch.setattr(sys, "argv", [str(script), *argv, "--data_root", str(tiny_synthetic_root)])
    with pytest.raises(ValueError, match=r"non-finite values .* test rows \[0, 1, 2\]"):
        runpy.run_path(str(script), run_name="__main__")
    assert "R@1" not in capsys.readouterr().out
