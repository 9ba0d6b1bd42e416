"""The `pipeline()` tasks `import hbi_hf` registers, on a saved HBI model with its processor whose right answers are
known (serve_fixtures: a tiny model trained until it ranks each coloured clip first for its caption)."""

import pytest
import torch
from serve_fixtures import CAPTIONS
from transformers import pipeline

import hbi_hf
from hbi_hf.errors import HBIInputError
from hbi_hf.search_index import encode_text, encode_video_batch, load_hbi_model, load_processor

LABELS = [caption for caption, _ in CAPTIONS.values()]


@pytest.fixture(scope="module")
def classifier(trusted_index):
    return pipeline("zero-shot-video-classification", model=str(trusted_index[1]))


@pytest.fixture(scope="module")
def retriever(trusted_index):
    return pipeline("video-text-retrieval", model=str(trusted_index[1]))


def direct_scores(model_dir, texts: list[str], videos: list[str]) -> torch.Tensor:
    """`(texts, videos)` HBI scores computed without the pipeline."""
    model, _ = load_hbi_model(model_dir)
    processor = load_processor(model_dir)
    with torch.no_grad():
        inputs = processor(videos=videos, return_tensors="pt")
        video_features = encode_video_batch(model, inputs["pixel_values"], inputs["video_mask"])
        rows = [model.score(encode_text(model, processor, text)[0], video_features)[0] for text in texts]
    return torch.stack(rows), model.logit_scale()


def test_the_tasks_are_registered_by_importing_hbi_hf(classifier, retriever):
    assert isinstance(classifier, hbi_hf.HBIZeroShotVideoClassificationPipeline)
    assert isinstance(retriever, hbi_hf.HBIVideoTextRetrievalPipeline)
    assert isinstance(classifier.model, hbi_hf.HBIModel)


@pytest.mark.parametrize("path", list(CAPTIONS))
def test_zero_shot_classification_puts_the_clip_caption_first(classifier, trusted_index, path):
    videos, model_dir, _ = trusted_index
    result = classifier(str(videos / path), candidate_labels=LABELS)
    assert result[0]["label"] == CAPTIONS[path][0]
    assert sum(item["score"] for item in result) == pytest.approx(1.0, abs=1e-5)
    scores, logit_scale = direct_scores(model_dir, LABELS, [str(videos / path)])
    expected = (logit_scale * scores[:, 0]).softmax(0)
    got = {item["label"]: item["score"] for item in result}
    assert got == pytest.approx(dict(zip(LABELS, expected.tolist())), rel=1e-4, abs=1e-7)


def test_zero_shot_classification_takes_a_template_and_lists_of_videos(classifier, trusted_index):
    videos, _, _ = trusted_index
    paths = [str(videos / "red.mp4"), str(videos / "blue.mp4")]
    results = classifier(paths, candidate_labels=["red square", "blue sky"], hypothesis_template="a {}")
    assert [result[0]["label"] for result in results] == ["red square", "blue sky"]


def test_retrieval_ranks_each_caption_clip_first_with_the_model_scores(retriever, trusted_index):
    videos, model_dir, _ = trusted_index
    paths = [str(videos / path) for path in CAPTIONS]
    results = retriever(LABELS, videos=paths)
    assert [ranking[0]["video"] for ranking in results] == paths
    scores, _ = direct_scores(model_dir, LABELS, paths)
    for row, ranking in enumerate(results):
        assert [item["rank"] for item in ranking] == list(range(1, len(paths) + 1))
        assert [item["score"] for item in ranking] == pytest.approx(scores[row].sort(descending=True).values.tolist())
    best = retriever("a green field", videos=paths, top_k=1)
    assert len(best) == 1 and len(best[0]) == 1
    assert best[0][0] == {**results[1][0], "score": pytest.approx(results[1][0]["score"], abs=1e-6)}


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda c, r, v: c(v, candidate_labels=[]), "candidate_labels: give at least one"),
        (lambda c, r, v: c(v, candidate_labels=["a", " "]), "every label needs words"),
        (lambda c, r, v: c(v, candidate_labels=["a"], hypothesis_template="a video"), "must contain {}"),
        (lambda c, r, v: r([" "], videos=[v]), "every text needs words"),
        (lambda c, r, v: r(["a dog"], videos=[]), "videos: give at least one"),
        (lambda c, r, v: r(["a dog"], videos=[v], top_k=0), "top_k must be >= 1"),
    ],
)
def test_bad_arguments_are_refused_naming_them(classifier, retriever, trusted_index, call, message):
    with pytest.raises(HBIInputError, match=message.replace("{", "\\{").replace("}", "\\}")):
        call(classifier, retriever, str(trusted_index[0] / "red.mp4"))
