"""Model cards: filled from the config and measured results only; paper numbers only as the paper's."""

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml
from hub_helpers import tiny_hbi_config

from hbi_hf import HBIBanzhafEstimatorConfig, HBIForRetrieval
from hbi_hf.model_card import (
    CITATION,
    RELEASES,
    HBIEvalResults,
    load_eval_results,
    model_index_results,
    render_model_card,
    write_eval_results,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def _metadata(card) -> dict:
    return yaml.safe_load(str(card).split("---")[1])


def _section(card, title: str) -> str:
    return str(card).split(f"## {title}\n")[1].split("\n## ")[0]


def _render_script():
    spec = importlib.util.spec_from_file_location("render_cards", REPO_ROOT / "scripts/render_model_cards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_card_without_results_says_not_yet_measured_and_has_no_model_index():
    card = render_model_card(tiny_hbi_config(), "msrvtt", repo_id="org/hbi")
    assert "Not yet measured" in _section(card, "Evaluation results of this checkpoint")
    assert "model-index" not in _metadata(card)


TINY_HBI_FIELDS = (
    "temporal_num_attention_heads",
    "temporal_intermediate_size",
    "merge_num_attention_heads",
    "num_frames",
    "max_words",
    "video_cluster_counts",
    "text_cluster_counts",
    "estimator_config",
)
"""The HBI fields of `tiny_hbi_config` that `from_clip` does not take from the CLIP."""


def _index_figures(model_index_results: list[dict]) -> dict[str, float]:
    """`{"<task type>/<metric type>": value}` of model-index results."""
    return {f"{r['task']['type']}/{m['type']}": m["value"] for r in model_index_results for m in r["metrics"]}


def test_measured_results_fill_the_results_section_and_the_model_index():
    results = {"t2v_R@1": 12.5, "v2t_R@1": 11.0}
    card = render_model_card(tiny_hbi_config(), "msrvtt", results, repo_id="org/hbi")
    section = _section(card, "Evaluation results of this checkpoint")
    assert (
        "| Text-to-Video Retrieval | R@1 | 12.5 |" in section and "| Video-to-Text Retrieval | R@1 | 11 |" in section
    )
    index = _metadata(card)["model-index"][0]["results"]
    assert _index_figures(index) == {
        "text-to-video-retrieval/recall@1": 12.5,
        "video-to-text-retrieval/recall@1": 11.0,
    }
    assert index[0]["dataset"] == {"name": "MSR-VTT (1k-A test)", "type": "msr-vtt", "split": "1k-A test"}


def _trainer_metrics(prefix: str = "test_") -> dict[str, float]:
    """What `HBITrainer.evaluate(metric_key_prefix="test")` returns, with the run's bookkeeping."""
    figures = {
        f"{d}_{m}": 10.0 * i + 0.123456789
        for i, (d, m) in enumerate(
            (d, m) for d in ("t2v", "v2t") for m in ("R@1", "R@5", "R@10", "Rsum", "MdR", "MnR")
        )
    }
    extra = {"dsl_t2v_R@1": 99.0, "gallery_captions": 4.0, "gallery_videos": 2.0, "runtime": 1.5}
    return {"epoch": 3.0, **{prefix + name: value for name, value in {**figures, **extra}.items()}}


def test_scripts_results_file_gives_the_card_exactly_its_figures_and_nothing_else(tmp_path):
    path = write_eval_results(tmp_path, _trainer_metrics(), "msrvtt", "test")
    written = json.loads(path.read_text())
    assert written["dataset_name"] == "msrvtt" and written["split"] == "test"
    assert "test_t2v_R@1" not in written["metrics"] and written["metrics"]["t2v_R@1"] == 0.123456789
    results = load_eval_results(path)
    card = render_model_card(tiny_hbi_config(), "msrvtt", results, repo_id="org/hbi")
    index = _metadata(card)["model-index"][0]["results"]
    assert index == written["model_index"] == results.model_index
    figures = _index_figures(index)
    assert len(figures) == 12, figures  # R@1/5/10, Rsum, MdR, MnR of both directions; no epoch, counts, dsl_, runtime
    assert figures["text-to-video-retrieval/recall@1"] == 0.123456789  # exactly as measured, not rounded
    assert figures["video-to-text-retrieval/mean_rank"] == written["metrics"]["v2t_MnR"]
    section = _section(card, "Evaluation results of this checkpoint")
    assert "epoch" not in section and "gallery" not in section and "test_" not in section


def test_model_index_has_the_qa_and_captioning_figures():
    qa = model_index_results({"eval_accuracy": 0.435, "num_questions": 200, "num_out_of_vocabulary": 3}, "msrvtt-qa")
    assert _index_figures(qa) == {"video-question-answering/accuracy": 0.435}
    captioning = {"bleu_4": 0.41, "meteor": 0.3, "rouge_l": 0.6, "cider": 1.371, "num_videos": 60}
    figures = _index_figures(model_index_results(captioning, "folder", "test"))
    assert figures == {
        f"video-captioning/{t}": v for t, v in zip(("bleu", "meteor", "rouge", "cider"), captioning.values())
    }


def test_results_measured_on_another_dataset_are_refused():
    results = HBIEvalResults({"t2v_R@1": 40.0}, dataset_name="synthetic", split="test")
    with pytest.raises(ValueError, match="measured on 'synthetic', but the card describes the 'msrvtt' release"):
        render_model_card(tiny_hbi_config(), "msrvtt", results)
    card = render_model_card(tiny_hbi_config(), "synthetic", results)
    assert _metadata(card)["model-index"][0]["results"][0]["dataset"]["type"] == "hbi-hf-synthetic"
    assert "no results on" in _section(card, "The paper's results")


def test_base_model_is_the_clip_the_model_came_from(tmp_path):
    random_init = render_model_card(tiny_hbi_config(), "msrvtt")
    assert "base_model" not in _metadata(random_init)
    assert "randomly initialised" in _section(random_init, "Configuration")

    hub_clip = render_model_card(tiny_hbi_config(clip_name_or_path="org/tiny-clip"), "msrvtt")
    assert _metadata(hub_clip)["base_model"] == "org/tiny-clip"

    from transformers import CLIPConfig, CLIPModel

    clip_config = CLIPConfig(
        text_config=tiny_hbi_config().text_config.to_dict(),
        vision_config=tiny_hbi_config().vision_config.to_dict(),
        projection_dim=32,
    )
    CLIPModel(clip_config).save_pretrained(tmp_path / "clip")
    tiny = tiny_hbi_config().to_dict()
    overrides = {name: tiny[name] for name in TINY_HBI_FIELDS}
    model = HBIForRetrieval.from_clip(str(tmp_path / "clip"), **overrides)
    model.save_pretrained(tmp_path / "hbi")
    reloaded = HBIForRetrieval.from_pretrained(tmp_path / "hbi")
    assert reloaded.config.clip_name_or_path == str(tmp_path / "clip")
    local = render_model_card(reloaded.config, "msrvtt")
    assert "base_model" not in _metadata(local)  # a local folder is not a Hub id
    assert f"the local CLIP folder `{tmp_path / 'clip'}`" in _section(local, "Configuration")


def test_cards_state_no_number_that_was_not_measured_for_the_checkpoint():
    for release in ("msrvtt", "activitynet", "didemo", "msrvtt-qa"):
        card = render_model_card(tiny_hbi_config(), release, repo_id="org/hbi")
        assert "Not yet measured" in _section(card, "Evaluation results of this checkpoint")
        paper = _section(card, "The paper's results")
        assert "Table" in paper and not any(f"{d}." in paper for d in "0123456789")


def test_card_is_filled_from_the_config():
    config = tiny_hbi_config(num_frames=5, cluster_mode="ratio", representation_reconstruction=False)
    card = render_model_card(config, "activitynet")
    configuration = _section(card, "Configuration")
    assert "5 frames, 10 words" in configuration and "ratio" in configuration
    assert "`representation_reconstruction=False`" in configuration


def test_every_card_has_use_data_limits_citation_and_loading():
    for release in RELEASES:
        config = HBIBanzhafEstimatorConfig() if release == "estimator" else tiny_hbi_config()
        card = render_model_card(config, release, repo_id="org/name")
        for title in ("How to load", "Intended use", "Training data", "Limitations", "Citation"):
            assert _section(card, title).strip(), f"{release}: empty {title}"
        assert 'from_pretrained("org/name")' in _section(card, "How to load")
        assert "Video-Text as Game Players" in str(card) and CITATION in str(card)


def test_estimator_card_has_its_own_release():
    card = render_model_card(HBIBanzhafEstimatorConfig(), "msrvtt")
    assert "HBIBanzhafEstimator.from_pretrained" in _section(card, "How to load")
    assert "no standalone results" in _section(card, "The paper's results")
    fast = HBIBanzhafEstimatorConfig(input_features="row_column", use_attention=False, hidden_size=8, kernel_size=1)
    configuration = _section(render_model_card(fast, "msrvtt"), "Configuration")
    assert "input features `row_column`, no attention, hidden size 8, kernel 1x1" in configuration


def test_unknown_dataset_is_refused():
    with pytest.raises(ValueError, match="no release description for dataset 'kinetics'"):
        render_model_card(tiny_hbi_config(), "kinetics")


def test_eval_results_file_is_validated(tmp_path):
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({"t2v_R@1": 12, "accuracy": 40.5}))
    assert load_eval_results(flat).metrics == {"t2v_R@1": 12.0, "accuracy": 40.5}
    assert load_eval_results(flat).dataset_name is None
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"t2v_R@1": "12"}))
    with pytest.raises(ValueError, match=r"bad.json: metric 't2v_R@1' must be a finite number"):
        load_eval_results(bad)
    nested_bad = tmp_path / "nested_bad.json"
    nested_bad.write_text(json.dumps({"metrics": {"t2v_R@1": float("nan")}, "dataset_name": "msrvtt"}))
    with pytest.raises(ValueError, match=r"nested_bad.json: metric 't2v_R@1' must be a finite number"):
        load_eval_results(nested_bad)
    listed = tmp_path / "listed.json"
    listed.write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="listed.json must hold a JSON object"):
        load_eval_results(listed)
    with pytest.raises(ValueError, match="metric 'epoch' must be a finite number"):
        write_eval_results(tmp_path, {"epoch": None}, "msrvtt", "test")


def test_committed_release_cards_are_the_template_output_without_results():
    script = _render_script()
    for release in script.PLANNED_RELEASES:
        committed = (REPO_ROOT / "model_cards" / release / "README.md").read_text()
        assert committed == str(script.planned_card(release)), f"model_cards/{release} is stale: rerun the script"
        assert "Not yet measured" in committed
        measured_section = committed.split("## Evaluation results of this checkpoint\n")[1].split("\n## ")[0]
        assert not re.search(r"\d", measured_section), f"{release}: a number in the measured-results section"


def test_render_script_uses_a_results_file_when_given(tmp_path):
    results_dir = tmp_path / "results" / "msrvtt"
    results_dir.mkdir(parents=True)
    write_eval_results(results_dir, {"test_t2v_R@1": 3.25}, "msrvtt", "test")
    _render_script().main(["--output_dir", str(tmp_path / "cards"), "--eval_results_dir", str(tmp_path / "results")])
    assert "| Text-to-Video Retrieval | R@1 | 3.25 |" in (tmp_path / "cards" / "msrvtt" / "README.md").read_text()
    assert "Not yet measured" in (tmp_path / "cards" / "didemo" / "README.md").read_text()


@pytest.mark.parametrize(
    "release, pipeline_tag",
    [("msrvtt", "feature-extraction"), ("msrvtt-qa", "visual-question-answering"), ("estimator", None)],
)
def test_card_metadata_has_the_license_and_the_pipeline_tag_of_its_task(release, pipeline_tag):
    config = HBIBanzhafEstimatorConfig() if release == "estimator" else tiny_hbi_config()
    metadata = _metadata(render_model_card(config, release))
    assert metadata["license"] == "apache-2.0"
    assert metadata.get("pipeline_tag") == pipeline_tag
    assert "license" not in _metadata(render_model_card(config, release, license=None))
    assert _metadata(render_model_card(config, release, license="mit"))["license"] == "mit"


def _snippet(card) -> str:
    return _section(card, "How to load").split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.parametrize("release", ["msrvtt", "msrvtt-qa"])
def test_card_load_snippet_runs_with_the_processor_on_a_saved_folder(release, tmp_path, monkeypatch, capsys):
    """The card's snippet, with the repository id pointing at a folder saved here and its video names at videos
    written here, runs as printed: model and processor load, and the inputs the processor makes fit the model."""
    from conftest import TINY_TEXT_CLIP_VOCABULARY

    from hbi_hf import HBIForVideoQA
    from hbi_hf.data.painted_video import write_painted_video

    config = tiny_hbi_config(text_config=dict(TINY_TEXT_CLIP_VOCABULARY))
    model_class = HBIForVideoQA if release == "msrvtt-qa" else HBIForRetrieval
    if model_class is HBIForVideoQA:
        config.id2label, config.label2id = {0: "cooking", 1: "singing"}, {"cooking": 0, "singing": 1}
    model_class(config).save_pretrained(tmp_path / "model")
    code = _snippet(render_model_card(config, release, repo_id=str(tmp_path / "model")))
    monkeypatch.chdir(tmp_path)
    for video in re.findall(r'"(\w+\.mp4)"', code):
        write_painted_video(tmp_path / video, 12, codec="mpeg4", height=32, width=32)
    exec(compile(code, f"{release} card", "exec"), {})
    if release == "msrvtt-qa":
        assert capsys.readouterr().out.strip() in {"cooking", "singing"}
