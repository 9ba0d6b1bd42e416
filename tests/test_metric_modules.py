"""The package's metrics as `evaluate` modules: loaded by path from the installed package, offline, giving exactly the
numbers of the functions they wrap."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import evaluate
import pytest
import torch

from hbi_hf import metrics
from hbi_hf.caption_metrics import caption_metrics
from hbi_hf.retrieval_metrics import compute_retrieval_metrics
from hbi_hf.task_training import videoqa_accuracy


def _load_by_path(name: str) -> evaluate.EvaluationModule:
    return evaluate.load(str(metrics.metric_path(name)), keep_in_memory=True)


def _multi_caption_gallery(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """9 captions of 4 videos (two to three each), scores rounded so that ties with wrong videos occur."""
    generator = torch.Generator().manual_seed(seed)
    text_to_video = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 3])
    scores = (torch.rand(9, 4, generator=generator) * 4).round() / 4
    return scores, text_to_video


def test_retrieval_module_gives_the_numbers_of_compute_retrieval_metrics():
    scores, text_to_video = _multi_caption_gallery()
    expected = compute_retrieval_metrics(scores, text_to_video, dual_softmax=True)
    module = _load_by_path("retrieval")
    assert module.compute(predictions=scores, references=text_to_video, dual_softmax=True) == expected
    # row by row, as an evaluation loop would add them, and as plain lists
    for row, video in zip(scores.tolist(), text_to_video.tolist()):
        module.add(prediction=row, reference=video)
    assert module.compute(dual_softmax=True) == expected


def test_retrieval_module_counts_ties_pessimistically():
    result = _load_by_path("retrieval").compute(predictions=[[0.5, 0.5], [0.5, 0.5]], references=[0, 1])
    assert result["t2v_R@1"] == 0.0 and result["t2v_MnR"] == 2.0 and result["v2t_MdR"] == 2.0


def test_retrieval_module_reports_a_video_without_caption():
    with pytest.raises(ValueError, match="video 2 has no caption"):
        _load_by_path("retrieval").compute(predictions=[[0.9, 0.1, 0.2], [0.1, 0.9, 0.2]], references=[0, 1])


def test_videoqa_module_counts_out_of_vocabulary_answers_as_wrong():
    predictions, references = [3, 1, 2, 0, 2], [3, 0, -1, 0, -1]
    result = _load_by_path("videoqa").compute(predictions=predictions, references=references)
    assert result == videoqa_accuracy(predictions, references)
    assert result == {"accuracy": 0.4, "num_questions": 5, "num_out_of_vocabulary": 2}


CAPTIONS = {"v1": "a red circle moves left", "v2": "a blue square appears", "v3": "a green star grows"}
REFERENCES = {
    "v1": ["the red circle moves left", "a red circle slides left"],
    "v2": ["a blue square pops up", "a blue square appears, then it grows"],
    "v3": ["a green triangle turns red"],
}


def test_captioning_module_hands_each_video_its_caption_and_references(monkeypatch):
    """The module's only work is pairing the lists into caption_metrics' dicts (the COCO toolkit's Java run is
    tested in test_captioning.py and, end to end through the module, by the slow test below)."""
    module = _load_by_path("captioning")
    calls = []
    script = sys.modules[type(module).__module__]
    monkeypatch.setattr(script, "caption_metrics", lambda *arguments: calls.append(arguments) or {"cider": 1.0})
    assert module.compute(predictions=list(CAPTIONS.values()), references=list(REFERENCES.values())) == {"cider": 1.0}
    [(predictions, references)] = calls
    assert [(predictions[key], references[key]) for key in sorted(predictions)] == [
        (CAPTIONS[video], REFERENCES[video]) for video in sorted(CAPTIONS)
    ]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap's PTB tokenizer and METEOR need Java")
def test_captioning_module_gives_the_numbers_of_caption_metrics():
    predictions, references = CAPTIONS, REFERENCES
    result = _load_by_path("captioning").compute(
        predictions=list(predictions.values()), references=list(references.values())
    )
    assert result == caption_metrics(predictions, references)
    assert 0.0 < result["bleu_4"] < 1.0 and 0.0 < result["meteor"] < 1.0 and result["num_videos"] == 3


def test_unknown_metric_name_is_refused():
    with pytest.raises(ValueError, match="unknown HBI metric 'bleu'"):
        metrics.metric_path("bleu")


LOAD_OFFLINE = """
import json, sys
from hbi_hf import metrics
loaded = {name: metrics.load(name).name for name in metrics.METRIC_MODULES}
retrieval = metrics.load("retrieval").compute(predictions=[[0.9, 0.1], [0.2, 0.8]], references=[0, 1])
videoqa = metrics.compute("videoqa", predictions=[1], references=[1])
print(json.dumps({"loaded": loaded, "t2v_R@1": retrieval["t2v_R@1"], "accuracy": videoqa["accuracy"]}))
"""


def _files_under(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


def test_modules_load_by_path_offline_and_write_only_into_the_cache(tmp_path):
    home, cwd, hf_home = tmp_path / "home", tmp_path / "cwd", tmp_path / "hf"
    for folder in (home, cwd):
        folder.mkdir()
    package_metrics = metrics.metric_path("retrieval").parent
    before = _files_under(package_metrics)
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    environment.update(
        HOME=str(home),
        HF_HOME=str(hf_home),
        HF_HUB_OFFLINE="1",
        HF_ENDPOINT="http://127.0.0.1:9",  # nothing listens: any request would fail
        PYTHONDONTWRITEBYTECODE="1",
    )
    result = subprocess.run(
        [sys.executable, "-c", LOAD_OFFLINE], cwd=cwd, env=environment, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    observed = json.loads(result.stdout.strip().splitlines()[-1])
    assert observed == {
        "loaded": {"retrieval": "hbi_retrieval", "videoqa": "hbi_videoqa", "captioning": "hbi_captioning"},
        "t2v_R@1": 100.0,
        "accuracy": 1.0,
    }
    assert not _files_under(home) and not _files_under(cwd), "written outside the cache"
    assert _files_under(package_metrics) == before, "written into the installed package"
    written = _files_under(hf_home)
    assert written and all(name.startswith(("modules/", "metrics/")) for name in written), sorted(written)


def test_retrieval_module_gives_no_figures_for_nan_scores():
    nan_scores = torch.full((2, 2), float("nan")).numpy()  # what a model with NaN weights scores
    with pytest.raises(ValueError, match=r"4 non-finite values .* text rows \[0, 1\] .* video columns \[0, 1\]"):
        metrics.load("retrieval").compute(predictions=nan_scores, references=[0, 1])
    module = _load_by_path("retrieval")
    for row, video in [([0.9, 0.1], 0), ([0.2, float("nan")], 1)]:
        module.add(prediction=row, reference=video)
    with pytest.raises(ValueError, match=r"1 non-finite values .* text rows \[1\] and 1 of 2 video columns \[1\]"):
        module.compute()


@pytest.mark.parametrize("prediction", [float("nan"), float("inf"), 1.5])
def test_videoqa_accuracy_refuses_a_prediction_that_is_not_an_answer_id(prediction):
    with pytest.raises(ValueError, match=r"1 of 3 predictions are not answer ids .* rows \[1\]"):
        videoqa_accuracy([3, prediction, 2], [3, 0, -1])
