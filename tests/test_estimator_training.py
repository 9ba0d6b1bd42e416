"""Training data, cached labels and the training script of the Banzhaf-interaction estimator."""

import json
import runpy
import sys
from pathlib import Path

import datasets
import pytest
import torch
from conftest import tiny_batch, tiny_hbi_config
from safetensors.torch import save_file
from transformers import AutoModel

from hbi_hf import HBIBanzhafEstimator, HBIModel, estimator_training
from hbi_hf.banzhaf import exact_banzhaf_interaction, sampled_banzhaf_interaction
from hbi_hf.estimator_training import (
    HBIBanzhafMatrices,
    banzhaf_labels,
    evaluate_estimator,
    fit_estimator_normalisation,
    matrices_from_model,
    synthetic_similarity_matrices,
)

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_estimator.py"


def test_stored_matrices_round_trip_through_safetensors(tmp_path):
    matrices = synthetic_similarity_matrices(5, words=8, frames=4, min_words=3, min_frames=2)
    matrices.text_weight_logits = torch.randn(5, 8)
    matrices.save(tmp_path / "m.safetensors")
    loaded = HBIBanzhafMatrices.load(tmp_path / "m.safetensors")
    assert loaded.fingerprint() == matrices.fingerprint()
    assert loaded.video_weight_logits is None and loaded.text_mask.dtype == torch.bool


def test_stored_matrices_without_masks_have_every_player_valid(tmp_path):
    save_file({"similarity": torch.rand(2, 3, 4)}, str(tmp_path / "m.safetensors"))
    loaded = HBIBanzhafMatrices.load(tmp_path / "m.safetensors")
    assert loaded.text_mask.all() and loaded.video_mask.all()


def test_bad_stored_matrices_name_the_file_and_the_problem(tmp_path):
    save_file({"sim": torch.rand(2, 3, 4)}, str(tmp_path / "a.safetensors"))
    with pytest.raises(ValueError, match=r"a\.safetensors.*'similarity'"):
        HBIBanzhafMatrices.load(tmp_path / "a.safetensors")
    save_file({"similarity": torch.rand(2, 3, 4), "text_mask": torch.ones(2, 4)}, str(tmp_path / "b.safetensors"))
    with pytest.raises(ValueError, match=r"b\.safetensors.*text_mask must be \(2, 3\)"):
        HBIBanzhafMatrices.load(tmp_path / "b.safetensors")


def test_synthetic_matrices_are_cosines_with_a_few_clearly_aligned_pairs():
    matrices = synthetic_similarity_matrices(64, seed=1)
    assert matrices.similarity.shape == (64, 32, 12)
    assert matrices.similarity.abs().max() <= 1.0 + 1e-5
    lengths = matrices.text_mask.sum(-1)
    assert lengths.min() >= 6 and lengths.max() <= 32 and len(set(lengths.tolist())) > 5
    valid = matrices.text_mask.unsqueeze(-1) & matrices.video_mask.unsqueeze(-2)
    cells = matrices.similarity[valid]
    assert cells.quantile(0.99) - cells.median() > 0.3
    assert (
        synthetic_similarity_matrices(4, seed=1).fingerprint()
        == synthetic_similarity_matrices(4, seed=1).fingerprint()
    )


def test_labels_are_the_monte_carlo_estimate_and_are_cached(tmp_path, monkeypatch):
    matrices = synthetic_similarity_matrices(3, words=6, frames=4, min_words=3, min_frames=2)
    labels = banzhaf_labels(matrices, num_samples=50, logit_scale=10.0, seed=3, cache_dir=tmp_path)
    expected = sampled_banzhaf_interaction(
        matrices.similarity,
        50,
        text_mask=matrices.text_mask,
        video_mask=matrices.video_mask,
        logit_scale=10.0,
        generator=torch.Generator().manual_seed(3),
    )
    torch.testing.assert_close(labels, expected)
    assert len(list(tmp_path.glob("banzhaf-labels-*.safetensors"))) == 1

    def no_sampling(*args, **kwargs):
        raise AssertionError("labels were recomputed instead of read from the cache")

    monkeypatch.setattr(estimator_training, "sampled_banzhaf_interaction", no_sampling)
    torch.testing.assert_close(banzhaf_labels(matrices, 50, 10.0, 3, tmp_path), labels)
    with pytest.raises(AssertionError, match="recomputed"):
        banzhaf_labels(matrices, 51, 10.0, 3, tmp_path)


def test_matrices_from_a_saved_model_are_its_matched_pair_similarities(tmp_path):
    torch.manual_seed(0)
    model = HBIModel(tiny_hbi_config(representation_reconstruction=False)).eval()
    model.save_pretrained(tmp_path / "model")
    batch = tiny_batch(batch_size=3)
    dataset = datasets.Dataset.from_dict({key: value.tolist() for key, value in batch.items()})
    matrices = matrices_from_model(str(tmp_path / "model"), dataset, batch_size=2)
    with torch.no_grad():
        text = model.get_text_features(batch["input_ids"], batch["attention_mask"])
        video = model.get_video_features(batch["pixel_values"], batch["video_mask"])
        expected = model.matched_token_similarity(text, video, level=0)
    torch.testing.assert_close(matrices.similarity, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(matrices.text_weight_logits, text.level_weight_logits[0], rtol=1e-4, atol=1e-5)
    assert torch.equal(matrices.text_mask, batch["attention_mask"].bool())
    assert torch.equal(matrices.video_mask, batch["video_mask"].bool())
    with pytest.raises(ValueError, match="pixel_values"):
        matrices_from_model(model, dataset.remove_columns("pixel_values"))


def test_normalisation_fit_recovers_the_game_size_power_law_of_the_labels():
    matrices = synthetic_similarity_matrices(40, words=10, frames=6, min_words=2, min_frames=2, seed=2)
    valid_words = matrices.text_mask.sum(-1).double().view(-1, 1, 1)
    valid_frames = matrices.video_mask.sum(-1).double().view(-1, 1, 1)
    cell_mask = matrices.text_mask.unsqueeze(-1) & matrices.video_mask.unsqueeze(-2)
    signs = torch.where(torch.rand(40, 10, 6, generator=torch.Generator().manual_seed(0)) < 0.5, -1.0, 1.0)
    labels = (7.0 * valid_words**-0.8 * valid_frames**-0.4 * signs * cell_mask).float()
    fitted = fit_estimator_normalisation(matrices, labels)
    assert fitted["word_count_exponent"] == pytest.approx(0.8, abs=1e-4)
    assert fitted["frame_count_exponent"] == pytest.approx(0.4, abs=1e-4)
    assert fitted["output_scale"] == pytest.approx(7.0, rel=1e-4)
    cells = matrices.similarity[cell_mask]
    assert fitted["input_mean"] == pytest.approx(cells.mean().item(), abs=1e-5)
    assert fitted["input_std"] == pytest.approx(cells.std().item(), rel=1e-4)


def test_evaluation_reports_perfect_agreement_for_a_perfect_estimator():
    matrices = synthetic_similarity_matrices(4, words=6, frames=4, min_words=3, min_frames=2)
    model = HBIBanzhafEstimator(estimator_training.HBIBanzhafEstimatorConfig(hidden_size=4))
    labels = model(matrices.similarity, matrices.text_mask, matrices.video_mask).interaction.detach()
    metrics = evaluate_estimator(model, matrices, labels)
    assert metrics["mse"] == pytest.approx(0.0, abs=1e-10)
    assert metrics["pearson"] == pytest.approx(1.0) and metrics["spearman"] == pytest.approx(1.0)


def test_exact_labels_are_the_enumerated_interactions_and_bypass_the_cache(tmp_path):
    matrices = synthetic_similarity_matrices(3, words=6, frames=4, min_words=3, min_frames=2)
    labels = banzhaf_labels(matrices, num_samples=None, logit_scale=10.0, cache_dir=tmp_path)
    expected = exact_banzhaf_interaction(
        matrices.similarity.double(), text_mask=matrices.text_mask, video_mask=matrices.video_mask, logit_scale=10.0
    )
    torch.testing.assert_close(labels.double(), expected, rtol=1e-5, atol=1e-5)
    assert not list(tmp_path.glob("banzhaf-labels-*"))


@pytest.mark.parametrize(
    "architecture",
    [[], ["--input_features", "row_column", "--use_attention", "false", "--kernel_size", "1"]],
    ids=["paper", "row-column-1x1"],
)
def test_training_script_on_synthetic_matrices_writes_an_auto_model_folder(
    tmp_path, monkeypatch, capsys, architecture
):
    output_dir = tmp_path / "estimator"
    argv = [
        str(SCRIPT),
        "--synthetic-matrices",
        "20",
        "--output_dir",
        str(output_dir),
        "--num_train_epochs",
        "1",
        "--per_device_train_batch_size",
        "8",
        "--num_samples",
        "20",
        "--eval_num_samples",
        "40",
        "--eval_fraction",
        "0.2",
        "--label_cache_dir",
        str(tmp_path / "cache"),
        "--disable_tqdm",
        "true",
        "--hidden_size",
        "8",
        *architecture,
    ]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(SCRIPT), run_name="__main__")
    out = capsys.readouterr().out
    report = json.loads(out[out.rindex('{\n  "train_matrices"') :])
    assert report["train_matrices"] == 16 and report["held_out_matrices"] == 4
    assert {"eval_mse", "eval_pearson", "eval_spearman"} <= set(report)
    estimator = AutoModel.from_pretrained(output_dir)
    assert isinstance(estimator, HBIBanzhafEstimator)
    assert estimator.config.output_scale != 1.0 and estimator.config.input_std != 1.0
    assert estimator.config.hidden_size == 8
    assert estimator.config.kernel_size == (1 if architecture else 3)
    assert estimator.config.input_features == ("row_column" if architecture else "similarity")
    assert estimator.config.use_attention == (not architecture)
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2
