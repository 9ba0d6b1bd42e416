"""HBIBanzhafEstimator: persistence, masking, and its use as the frozen teacher of HBIForRetrieval."""

import pytest
import torch
from conftest import TINY_TEXT, TINY_VISION, tiny_batch, tiny_hbi_config
from transformers import AutoModel, CLIPConfig, CLIPModel

from hbi_hf import HBIBanzhafEstimator, HBIBanzhafEstimatorConfig, HBIConfig, HBIForRetrieval
from hbi_hf.modeling_hbi import banzhaf_cell_features, banzhaf_line_statistics

TINY_ESTIMATOR = dict(hidden_size=8)
# the paper's network, and those that read each cell's gaps to the best cells of its row and column (3x3 kernels, and
# the fast 1x1 one that computes its encoding per row and column)
ARCHITECTURES = {
    "paper": TINY_ESTIMATOR,
    "row-column": dict(hidden_size=8, input_features="row_column", use_attention=False),
    "row-column-1x1": dict(hidden_size=8, input_features="row_column", use_attention=False, kernel_size=1),
    "row-column-1x1-attention": dict(hidden_size=8, input_features="row_column", kernel_size=1),
}


# the fields of the tiny test config that from_clip does not take from the CLIP checkpoint
TINY_OVERRIDES = (
    "temporal_num_attention_heads",
    "temporal_intermediate_size",
    "merge_num_attention_heads",
    "num_frames",
    "max_words",
    "video_cluster_counts",
    "text_cluster_counts",
)


def matrices(batch=3, words=7, frames=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, words, frames, generator=generator) * 2 - 1


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_save_and_reload_through_auto_model_gives_identical_outputs(tmp_path, architecture):
    estimator = HBIBanzhafEstimator(HBIBanzhafEstimatorConfig(**ARCHITECTURES[architecture])).eval()
    estimator.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    similarity = matrices()
    expected = estimator(similarity).interaction
    for loaded in (HBIBanzhafEstimator.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path)):
        assert isinstance(loaded, HBIBanzhafEstimator)
        torch.testing.assert_close(loaded.eval()(similarity).interaction, expected, rtol=0, atol=0)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_output_on_valid_cells_does_not_depend_on_padding(architecture):
    estimator = HBIBanzhafEstimator(HBIBanzhafEstimatorConfig(**ARCHITECTURES[architecture])).eval()
    similarity = matrices(batch=1, words=4, frames=3)
    alone = estimator(similarity).interaction
    padded = torch.randn(1, 9, 6) * 5
    padded[:, :4, :3] = similarity
    text_mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0, 0]])
    video_mask = torch.tensor([[1, 1, 1, 0, 0, 0]])
    output = estimator(padded, text_mask, video_mask).interaction
    torch.testing.assert_close(output[:, :4, :3], alone, rtol=1e-5, atol=1e-6)
    assert output[:, 4:].abs().sum() == 0 and output[:, :, 3:].abs().sum() == 0


def test_loss_is_the_mse_over_valid_cells_only():
    estimator = HBIBanzhafEstimator(HBIBanzhafEstimatorConfig(**TINY_ESTIMATOR))
    similarity, labels = matrices(batch=2), matrices(batch=2, seed=1)
    text_mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    output = estimator(similarity, text_mask, labels=labels)
    valid = text_mask.bool().unsqueeze(-1).expand_as(labels)
    torch.testing.assert_close(output.loss, ((output.interaction - labels)[valid] ** 2).mean())


def test_hbi_config_nests_the_estimator_config_and_path(tmp_path):
    config = HBIConfig(estimator_config=dict(hidden_size=16), estimator_name_or_path="my/estimator")
    assert isinstance(config.estimator_config, HBIBanzhafEstimatorConfig)
    config.save_pretrained(tmp_path)
    reloaded = HBIConfig.from_pretrained(tmp_path)
    assert reloaded.estimator_config.hidden_size == 16
    assert reloaded.estimator_name_or_path == "my/estimator"


def test_from_clip_loads_the_saved_estimator_as_a_frozen_teacher(tmp_path):
    clip_dir, estimator_dir = tmp_path / "clip", tmp_path / "estimator"
    CLIPModel(CLIPConfig(text_config=TINY_TEXT, vision_config=TINY_VISION, projection_dim=32)).save_pretrained(
        clip_dir
    )
    estimator = HBIBanzhafEstimator(HBIBanzhafEstimatorConfig(**TINY_ESTIMATOR, is_trained=True))
    estimator.save_pretrained(estimator_dir)
    tiny = tiny_hbi_config().to_dict()
    overrides = {key: tiny[key] for key in TINY_OVERRIDES}
    model = HBIForRetrieval.from_clip(
        str(clip_dir), estimator_name_or_path=str(estimator_dir), estimator_config=TINY_ESTIMATOR, **overrides
    )
    teacher = model.alignment.banzhaf_teacher
    assert model.config.estimator_name_or_path == str(estimator_dir)
    saved = estimator.state_dict()
    for name, tensor in teacher.state_dict().items():
        torch.testing.assert_close(tensor, saved[name], rtol=0, atol=0)
    assert not any(p.requires_grad for p in teacher.parameters())

    before = {name: tensor.clone() for name, tensor in teacher.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    model.train()
    output = model(**tiny_batch(batch_size=3, frames=6, words=10), return_loss=True)
    output.loss.backward()
    optimizer.step()
    assert not teacher.training
    for name, tensor in teacher.state_dict().items():
        torch.testing.assert_close(tensor, before[name], rtol=0, atol=0)
    assert any(p.grad is not None for p in model.alignment.banzhaf_heads.parameters())


def test_line_statistics_are_the_top_three_and_the_mean_of_the_valid_cells_of_each_row_and_column():
    # word 0 has two equal best frames (the second best is the best again), word 1 a padded frame, word 2 is padding
    similarity = torch.tensor([[[3.0, 3.0, 1.0], [0.5, 0.2, 0.0], [0.0, 0.0, 0.0]]])
    cell_mask = torch.tensor([[[True, True, True], [True, True, False], [False, False, False]]])
    rows, columns = banzhaf_line_statistics(similarity, cell_mask)
    # best, second, third, mean; a line with two valid cells repeats its lowest one, a line without any is 0
    torch.testing.assert_close(rows[0], torch.tensor([[3.0, 3.0, 1.0, 7 / 3], [0.5, 0.2, 0.2, 0.35], [0.0] * 4]))
    torch.testing.assert_close(columns[0], torch.tensor([[3.0, 0.5, 0.5, 1.75], [3.0, 0.2, 0.2, 1.6], [1.0] * 4]))


def test_row_column_features_are_each_cell_minus_the_statistics_of_its_word_and_frame():
    similarity = torch.tensor([[[0.9, 0.7, 0.1, 0.0], [0.4, 0.8, 0.2, 0.0]]])
    cell_mask = torch.tensor([[[True, True, True, False], [True, True, True, False]]])
    features = banzhaf_cell_features(similarity, cell_mask)[0]
    assert features.shape == (9, 2, 4)
    value, row_gaps, column_gaps = features[0], features[1:5], features[5:]
    torch.testing.assert_close(value, similarity[0])
    # cell (0, 1) = 0.7: its word's best frames are 0.9, 0.7, 0.1 (mean 1.7 / 3); its frame's words 0.8, 0.7
    torch.testing.assert_close(row_gaps[:, 0, 1], torch.tensor([-0.2, 0.0, 0.6, 0.7 - 1.7 / 3]))
    torch.testing.assert_close(column_gaps[:, 0, 1], torch.tensor([-0.1, 0.0, 0.0, -0.05]))
    assert features[:, :, 3].abs().sum() == 0  # padded cells carry nothing


def test_the_1x1_encoding_computed_per_row_and_column_is_the_convolution_over_the_cell_features():
    head = HBIBanzhafEstimator(HBIBanzhafEstimatorConfig(**ARCHITECTURES["row-column-1x1"])).head
    similarity = matrices(batch=3, words=9, frames=6).requires_grad_()
    cell_mask = torch.ones(3, 9, 6, dtype=torch.bool)
    cell_mask[1, 5:], cell_mask[2, :, 2:] = False, False
    zeroed = similarity.masked_fill(~cell_mask, 0.0)
    # computed frame-major, (batch, hidden, frames, words)
    per_line = head._encode_line_statistics(zeroed.mT.contiguous(), cell_mask.mT.contiguous()).mT
    convolved = head.encoder(banzhaf_cell_features(zeroed, cell_mask))
    valid = cell_mask.unsqueeze(1).expand_as(per_line)
    torch.testing.assert_close(per_line[valid], convolved[valid])
    parameters = [similarity, head.encoder.weight, head.encoder.bias]
    per_line_grads = torch.autograd.grad(per_line[valid].sum(), parameters, retain_graph=True)
    convolved_grads = torch.autograd.grad(convolved[valid].sum(), parameters)
    for per_line_grad, convolved_grad in zip(per_line_grads, convolved_grads):
        torch.testing.assert_close(per_line_grad, convolved_grad)


@pytest.mark.parametrize("architecture", ["row-column-1x1", "row-column-1x1-attention"])
def test_the_1x1_network_is_the_convolutional_network_over_the_cell_features(architecture):
    # the 1x1 network runs frame-major and per row and column; the definition is word-major and per cell
    head = HBIBanzhafEstimator(HBIBanzhafEstimatorConfig(**ARCHITECTURES[architecture])).head
    similarity = matrices(batch=3, words=9, frames=6).requires_grad_()
    cell_mask = torch.ones(3, 9, 6, dtype=torch.bool)
    cell_mask[1, 5:], cell_mask[2, :, 2:] = False, False
    zeroed = similarity.masked_fill(~cell_mask, 0.0)
    hidden = torch.relu(head.encoder(banzhaf_cell_features(zeroed, cell_mask)))
    if head.use_attention:
        hidden = head._attend(hidden, cell_mask)
    expected = head.decoder(hidden).squeeze(1).masked_fill(~cell_mask, 0.0)
    output = head(similarity, cell_mask)
    torch.testing.assert_close(output, expected)
    # and it trains the same (the heads R learn through it)
    inputs = [similarity, *head.parameters()]
    for grad, expected_grad in zip(
        torch.autograd.grad(output.pow(2).sum(), inputs), torch.autograd.grad(expected.pow(2).sum(), inputs)
    ):
        torch.testing.assert_close(grad, expected_grad)


def test_from_clip_takes_the_saved_estimators_architecture_and_a_mismatch_is_named(tmp_path):
    clip_dir, estimator_dir = tmp_path / "clip", tmp_path / "estimator"
    CLIPModel(CLIPConfig(text_config=TINY_TEXT, vision_config=TINY_VISION, projection_dim=32)).save_pretrained(
        clip_dir
    )
    trained = HBIBanzhafEstimatorConfig(**ARCHITECTURES["row-column"], is_trained=True)  # a stand-in for a trained one
    HBIBanzhafEstimator(trained).save_pretrained(estimator_dir)
    tiny = tiny_hbi_config().to_dict()
    model = HBIForRetrieval.from_clip(
        str(clip_dir), estimator_name_or_path=str(estimator_dir), **{key: tiny[key] for key in TINY_OVERRIDES}
    )
    assert model.config.estimator_config.input_features == "row_column"
    assert not model.config.estimator_config.use_attention
    assert model(**tiny_batch(batch_size=2, frames=6, words=10), return_loss=True).loss.isfinite()
    paper = HBIForRetrieval(tiny_hbi_config(estimator_config=TINY_ESTIMATOR))
    with pytest.raises(ValueError, match="input_features: saved 'row_column', model 'similarity'"):
        paper.load_banzhaf_teacher(str(estimator_dir))


NORMALISED = dict(
    TINY_ESTIMATOR,
    input_mean=0.2,
    input_std=0.5,
    output_scale=30.0,
    word_count_exponent=0.8,
    frame_count_exponent=0.5,
)


def test_normalised_estimator_standardises_inputs_and_rescales_outputs_by_game_size():
    plain = HBIBanzhafEstimator(HBIBanzhafEstimatorConfig(**TINY_ESTIMATOR)).eval()
    normalised = HBIBanzhafEstimator(HBIBanzhafEstimatorConfig(**NORMALISED)).eval()
    normalised.load_state_dict(plain.state_dict())
    similarity = matrices(batch=2)
    text_mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    video_mask = torch.tensor([[1] * 5, [1] * 2 + [0] * 3])
    network = plain((similarity - 0.2) / 0.5, text_mask, video_mask).interaction
    factor = torch.tensor([30.0 * 7**-0.8 * 5**-0.5, 30.0 * 4**-0.8 * 2**-0.5]).view(2, 1, 1)
    torch.testing.assert_close(normalised(similarity, text_mask, video_mask).interaction, network * factor)


def test_normalised_estimator_loss_is_the_mse_of_the_network_on_rescaled_labels():
    estimator = HBIBanzhafEstimator(HBIBanzhafEstimatorConfig(**NORMALISED))
    similarity, labels = matrices(batch=2), matrices(batch=2, seed=1)
    text_mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    output = estimator(similarity, text_mask, labels=labels)
    cell_mask = text_mask.bool().unsqueeze(-1).expand_as(labels)
    scale = estimator.output_scale(text_mask.sum(-1), torch.full((2,), 5))
    expected = (((output.interaction - labels) / scale)[cell_mask] ** 2).mean()
    torch.testing.assert_close(output.loss, expected)


def test_loading_a_normalised_teacher_carries_its_normalisation(tmp_path):
    estimator = HBIBanzhafEstimator(HBIBanzhafEstimatorConfig(**NORMALISED, is_trained=True))
    estimator.save_pretrained(tmp_path / "estimator")
    model = HBIForRetrieval(tiny_hbi_config(estimator_config=TINY_ESTIMATOR))
    model.load_banzhaf_teacher(str(tmp_path / "estimator"))
    for name, value in NORMALISED.items():
        assert getattr(model.alignment.banzhaf_teacher.config, name) == value
        assert getattr(model.config.estimator_config, name) == value
    similarity, cell_mask = matrices(batch=2), torch.ones(2, 7, 5, dtype=torch.bool)
    torch.testing.assert_close(
        model.alignment.banzhaf_teacher.estimate(similarity, cell_mask), estimator.eval()(similarity).interaction
    )
