"""Specification of the bad-input policy in QA and captioning evaluation (strict by default: an unreadable video
or a blank question raises naming the file or field; with a lenient collator the item is left out and counted) and
of `load_rows`, the QA / captioning row files' reader (errors name the file, the line and the field)."""

import json

import pytest
import torch
from conftest import TINY_TEXT_CLIP_VOCABULARY, tiny_hbi_config

from hbi_hf import HBIForCaptioning, HBIForVideoQA
from hbi_hf.data import HBIBadInputError, HBIVideoCollator, HBIVideoQACollator, load_synthetic_qa
from hbi_hf.data.synthetic import load_synthetic_captioning
from hbi_hf.retrieval_data import build_retrieval_processor
from hbi_hf.task_training import (
    answer_vocabulary_fields,
    generate_captions,
    load_rows,
    predict_answers,
    references_per_video,
)


@pytest.fixture(scope="module")
def corrupt_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("corrupt") / "corrupt.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    return str(path)


def qa_setup(root):
    dataset = load_synthetic_qa(root)
    vocabulary = dataset["train"].features["label"].names
    torch.manual_seed(0)
    config = tiny_hbi_config(
        text_config=dict(TINY_TEXT_CLIP_VOCABULARY), qa_projection_dim=16, qa_hidden_size=24,
        **answer_vocabulary_fields(vocabulary),
    )  # fmt: skip
    return HBIForVideoQA(config).eval(), build_retrieval_processor(config), dataset["test"]


def test_qa_evaluation_raises_by_default_and_leaves_out_and_counts_when_lenient(tiny_synthetic_root, corrupt_video):
    model, processor, test = qa_setup(tiny_synthetic_root)
    rows = [dict(row) for row in test.select(range(4))]
    rows[1]["video_path"] = corrupt_video
    rows[2]["question"] = "   "
    with pytest.raises(HBIBadInputError, match=rf"{corrupt_video}: unreadable video"):
        predict_answers(model, rows, processor, batch_size=2)
    collator = HBIVideoQACollator(processor, allow_empty_batch=True)
    predictions, labels = predict_answers(model, rows, processor, batch_size=2, collator=collator)
    assert len(predictions) == len(labels) == 2
    assert collator.totals["unreadable video"] == collator.totals["empty caption"] == 1
    only_bad = [rows[1], rows[2]]  # a batch with nothing usable is skipped, not an error, when lenient
    assert predict_answers(model, only_bad, processor, batch_size=2, collator=collator) == ([], [])


def test_captioning_evaluation_leaves_out_an_unreadable_video_when_lenient(tiny_synthetic_root, corrupt_video):
    torch.manual_seed(0)
    config = tiny_hbi_config(
        text_config=dict(TINY_TEXT_CLIP_VOCABULARY), caption_decoder_num_attention_heads=4,
        caption_decoder_intermediate_size=64,
    )  # fmt: skip
    model, processor = HBIForCaptioning(config).eval(), build_retrieval_processor(config)
    videos, _ = references_per_video(load_synthetic_captioning(tiny_synthetic_root)["test"])
    videos = [*videos[:2], {"video_id": "broken", "video_path": corrupt_video}]
    with pytest.raises(HBIBadInputError, match=rf"{corrupt_video}: unreadable video"):
        generate_captions(model, videos, processor, batch_size=2, max_new_tokens=2)
    collator = HBIVideoCollator(processor, return_ids=True, allow_empty_batch=True)
    captions = generate_captions(model, videos, processor, batch_size=2, collator=collator, max_new_tokens=2)
    assert set(captions) == {videos[0]["video_id"], videos[1]["video_id"]}
    assert collator.totals["unreadable video"] == 1


ROW = {"video_id": "v1", "video_path": "/videos/v1.mp4", "question": "what colour?", "answer": "red"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"answer": None}, r"line 2: field 'answer' is null; expected the answer"),
        ({"answer": " "}, r"line 2: field 'answer' is an empty string"),
        ({"answer": 3}, r"line 2: field 'answer' is the number 3; expected the answer's text"),
        ({"answer": 2.0}, r"line 2: field 'answer' is the number 2.0; expected the answer's text"),
        ({"video_path": None}, r"line 2: field 'video_path' is null"),
        ({"question": ["what"]}, r"line 2: field 'question' is list"),
        ({"references": "a red circle"}, r"line 2: field 'references' is the string 'a red circle'; expected a list"),
    ],
)
def test_row_files_name_the_line_and_field_of_a_bad_value(tmp_path, change, message):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(ROW) + "\n" + json.dumps({**ROW, **change}) + "\n")
    with pytest.raises(ValueError, match=rf"rows.jsonl, {message}"):
        load_rows(str(path))


def test_row_files_with_a_byte_order_mark_or_as_a_json_list_are_read_and_an_empty_one_is_refused(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(ROW) + "\n").encode())
    assert load_rows(str(path))["answer"] == ["red"]
    path.write_text(json.dumps([ROW, {**ROW, "answer": "3"}]))
    assert load_rows(str(path))["answer"] == ["red", "3"]
    path.write_text("\n")
    with pytest.raises(ValueError, match="rows.jsonl: no rows"):
        load_rows(str(path))


def test_qa_evaluation_refuses_nan_logits_instead_of_answering_id_0(tiny_synthetic_root):
    model, processor, test = qa_setup(tiny_synthetic_root)
    rows = [dict(row) for row in test.select(range(3))]
    with torch.no_grad():
        model.hbi.clip.text_projection.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"answer logits hold NaN or infinity for 2 of 2 questions .* \[0, 1\]"):
        predict_answers(model, rows, processor, batch_size=2)
