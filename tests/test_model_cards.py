"""Model cards: filled from the config and measured results only; paper numbers only as the paper's."""

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml
from hub_helpers import tiny_hbi_config

from hbi_hf import HBIBanzhafEstimatorConfig
from hbi_hf.model_card import CITATION, RELEASES, load_eval_results, render_model_card

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


def test_measured_results_fill_the_results_section_and_the_model_index():
    results = {"t2v_R@1": 12.5, "v2t_R@1": 11.0}
    card = render_model_card(tiny_hbi_config(), "msrvtt", results, repo_id="org/hbi")
    section = _section(card, "Evaluation results of this checkpoint")
    assert "| t2v_R@1 | 12.5 |" in section and "| v2t_R@1 | 11 |" in section
    metrics = _metadata(card)["model-index"][0]["results"][0]["metrics"]
    assert {m["name"]: m["value"] for m in metrics} == results


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
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"t2v_R@1": 12, "accuracy": 40.5}))
    assert load_eval_results(good) == {"t2v_R@1": 12.0, "accuracy": 40.5}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"t2v_R@1": "12"}))
    with pytest.raises(ValueError, match=r"bad.json: metric 't2v_R@1' must be a finite number"):
        load_eval_results(bad)
    nested = tmp_path / "nested.json"
    nested.write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="flat JSON object"):
        load_eval_results(nested)


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
    (results_dir / "eval_results.json").write_text(json.dumps({"t2v_R@1": 3.25}))
    _render_script().main(["--output_dir", str(tmp_path / "cards"), "--eval_results_dir", str(tmp_path / "results")])
    assert "| t2v_R@1 | 3.25 |" in (tmp_path / "cards" / "msrvtt" / "README.md").read_text()
    assert "Not yet measured" in (tmp_path / "cards" / "didemo" / "README.md").read_text()
