"""Specification of HBIModel / HBIForRetrieval: shapes, masks, losses, Eq. 12, DPC-KNN, V2, chunking, save/load."""

import itertools

import pytest
import torch
from conftest import TINY_TEXT, TINY_VISION, tiny_batch, tiny_hbi_config
from transformers import AutoConfig, AutoModel, CLIPConfig, CLIPModel

from hbi_hf import AutoModelForVideoTextRetrieval, HBIConfig, HBIForRetrieval, HBIModel
from hbi_hf.modeling_hbi import dpc_knn_cluster, weighted_token_interaction


def seeded_model(model_class=HBIForRetrieval, seed=0, **overrides):
    torch.manual_seed(seed)
    return model_class(tiny_hbi_config(**overrides)).eval()


# ----- shapes and masks -----------------------------------------------------------------------------------------------


def test_features_have_one_token_set_per_level_with_configured_sizes(batch):
    model = seeded_model(HBIModel)
    with torch.no_grad():
        text = model.get_text_features(batch["input_ids"], batch["attention_mask"])
        video = model.get_video_features(batch["pixel_values"], batch["video_mask"])
    assert [t.shape for t in text.level_tokens] == [(4, 10, 32), (4, 4, 32), (4, 2, 32)]
    assert [t.shape for t in video.level_tokens] == [(4, 6, 32), (4, 3, 32), (4, 2, 32)]
    assert torch.equal(text.level_masks[0], batch["attention_mask"].bool())
    assert torch.equal(video.level_masks[0], batch["video_mask"].bool())
    assert text.global_embeddings.shape == video.global_embeddings.shape == (4, 32)
    # text row 2 has 4 real tokens of max_words 10: ceil(4 * 4 / 10) = 2 phrases, and padding joins no cluster
    assert text.cluster_assignments[0][2, 4:].eq(-1).all()
    assert text.level_masks[1][2].sum() == 2


def test_retrieval_output_shapes_and_loss_parts(batch):
    model = seeded_model().train()
    output = model(**batch)
    assert output.logits_per_text.shape == (4, 4)
    assert torch.equal(output.logits_per_video, output.logits_per_text.t())
    assert len(output.similarity_per_level) == 3
    for part in (output.loss, output.contrastive_loss, output.banzhaf_loss, output.distillation_loss):
        assert part.dim() == 0 and torch.isfinite(part)
    # the defaults alpha = 1, beta = 2 (the official --skl 1 --kl 2)
    expected = output.contrastive_loss + output.banzhaf_loss + 2.0 * output.distillation_loss
    torch.testing.assert_close(output.loss, expected)


def test_eval_mode_returns_no_loss_unless_asked(batch):
    model = seeded_model()
    assert model(**batch).loss is None
    assert model(**batch, return_loss=True).loss is not None


def test_padded_frames_and_words_do_not_change_the_scores(batch):
    model = seeded_model(HBIModel)
    with torch.no_grad():
        reference = model(**batch).logits_per_text
        changed = dict(batch)
        changed["pixel_values"] = batch["pixel_values"].clone()
        changed["pixel_values"][~batch["video_mask"].bool()] = 7.0
        changed["input_ids"] = batch["input_ids"].masked_fill(~batch["attention_mask"].bool(), 5)
        torch.testing.assert_close(model(**changed).logits_per_text, reference)


# ----- training signal ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reconstruction", [True, False], ids=["HBI-V2", "HBI"])
def test_loss_falls_over_a_few_optimiser_steps(batch, reconstruction):
    model = seeded_model(representation_reconstruction=reconstruction).train()
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(8):
        loss = model(**batch).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("reconstruction", [True, False], ids=["HBI-V2", "HBI"])
def test_every_trainable_module_receives_gradient(batch, reconstruction):
    model = seeded_model(representation_reconstruction=reconstruction).train()
    model(**batch).loss.backward()
    starved = []
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if own and not any(p.grad is not None and p.grad.abs().sum() > 0 for p in own):
            starved.append(name)
    assert starved == []


def test_banzhaf_teacher_is_frozen_and_fixed_temperature_is_not_trained(config):
    model = HBIForRetrieval(config)
    assert not any(p.requires_grad for p in model.alignment.banzhaf_teacher.parameters())
    assert not model.hbi.clip.logit_scale.requires_grad
    model.train()
    assert not model.alignment.banzhaf_teacher.training
    learnable = HBIForRetrieval(tiny_hbi_config(learnable_temperature=True))
    assert learnable.hbi.clip.logit_scale.requires_grad


# ----- Eq. 12 ---------------------------------------------------------------------------------------------------------


def brute_force_wti(similarity, text_logits, video_logits, text_mask, video_mask):
    """Eq. 12 written with loops over the valid tokens of one pair."""
    words = [j for j in range(len(text_mask)) if text_mask[j]]
    frames = [i for i in range(len(video_mask)) if video_mask[i]]
    text_weights = torch.softmax(text_logits[words], 0)
    video_weights = torch.softmax(video_logits[frames], 0)
    text_part = sum(w * max(similarity[j, i] for i in frames) for w, j in zip(text_weights, words))
    video_part = sum(w * max(similarity[j, i] for j in words) for w, i in zip(video_weights, frames))
    return 0.5 * (text_part + video_part)


def test_weighted_token_interaction_matches_brute_force():
    generator = torch.Generator().manual_seed(3)
    similarity = torch.rand(5, 7, 4, generator=generator) * 2 - 1
    text_logits, video_logits = torch.randn(5, 7, generator=generator), torch.randn(5, 4, generator=generator)
    text_mask = torch.rand(5, 7, generator=generator) > 0.3
    video_mask = torch.rand(5, 4, generator=generator) > 0.3
    text_mask[:, 0] = video_mask[:, 0] = True
    fast = weighted_token_interaction(
        similarity,
        text_logits.unsqueeze(-1),
        video_logits.unsqueeze(-2),
        text_mask.unsqueeze(-1),
        video_mask.unsqueeze(-2),
    )
    for b in range(5):
        expected = brute_force_wti(similarity[b], text_logits[b], video_logits[b], text_mask[b], video_mask[b])
        torch.testing.assert_close(fast[b], expected)


def test_weighted_token_interaction_refuses_per_token_inputs_without_the_other_modalitys_axis():
    # (batch, words) logits would otherwise be softmaxed over the batch without a word
    similarity = torch.rand(5, 7, 4)
    with pytest.raises(ValueError, match=r"text_weight_logits must have size 1 .* got shape \(5, 7\)"):
        weighted_token_interaction(
            similarity, torch.zeros(5, 7), torch.zeros(5, 1, 4), torch.ones(5, 7, 1).bool(), torch.ones(5, 1, 4).bool()
        )


def test_weighted_token_interaction_of_a_one_sided_coalition_is_zero():
    similarity = torch.rand(3, 2)
    no_frames = weighted_token_interaction(
        similarity, torch.zeros(3, 1), torch.zeros(1, 2), torch.ones(3, 1, dtype=torch.bool), torch.zeros(1, 2).bool()
    )
    assert no_frames.item() == 0.0


# ----- DPC-KNN --------------------------------------------------------------------------------------------------------


def test_dpc_knn_finds_the_obvious_clusters_in_token_order():
    # tokens 0-2 near (10, 0), tokens 3-4 near (0, 10), token 5 is padding placed in between
    tokens = torch.tensor([[[10.0, 0.0], [10.2, 0.0], [9.9, 0.1], [0.0, 10.0], [0.1, 10.1], [5.0, 5.0]]])
    mask = torch.tensor([[True, True, True, True, True, False]])
    assignment, cluster_mask = dpc_knn_cluster(tokens, mask, num_clusters=2, k=2)
    assert assignment.tolist() == [[0, 0, 0, 1, 1, -1]]
    assert cluster_mask.tolist() == [[True, True]]


def test_dpc_knn_centres_own_their_cluster_and_padding_is_never_a_centre():
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(8, 12, 16, generator=generator)
    mask = torch.arange(12).expand(8, 12) < torch.tensor([12, 9, 5, 3, 2, 1, 12, 7])[:, None]
    assignment, cluster_mask = dpc_knn_cluster(tokens, mask, num_clusters=4)
    for b in range(8):
        valid = int(mask[b].sum())
        assert cluster_mask[b].sum() == min(4, valid)
        assert set(assignment[b, :valid].tolist()) == set(range(min(4, valid)))
        assert assignment[b, valid:].eq(-1).all()


def test_dpc_knn_reports_missing_clusters_when_asked_for_more_than_tokens():
    assignment, cluster_mask = dpc_knn_cluster(torch.randn(1, 3, 4), torch.ones(1, 3, dtype=torch.bool), 5)
    assert cluster_mask.tolist() == [[True, True, True, False, False]]
    assert sorted(assignment[0].tolist()) == [0, 1, 2]


# ----- HBI V2 ---------------------------------------------------------------------------------------------------------


def test_v2_with_gates_forced_to_one_equals_v1(batch):
    v1 = seeded_model(HBIModel, representation_reconstruction=False, similarity_level_weights=[1, 1, 1])
    v2 = HBIModel(tiny_hbi_config(representation_reconstruction=True, similarity_level_weights=[1, 1, 1])).eval()
    v2.load_state_dict(v1.state_dict(), strict=False)
    for level in v2.levels:
        level.reconstruction.text_gate.weight.data.zero_()
        level.reconstruction.video_gate.weight.data.zero_()
        level.reconstruction.text_gate.bias.data.fill_(1.0)
        level.reconstruction.video_gate.bias.data.fill_(1.0)
    with torch.no_grad():
        for a, b in zip(v1(**batch).similarity_per_level, v2(**batch).similarity_per_level):
            torch.testing.assert_close(a, b)


def test_v2_reconstruction_makes_the_score_pair_specific(batch):
    model = seeded_model(HBIModel)
    for level in model.levels:
        level.reconstruction.video_gate.bias.data.fill_(0.3)
        level.reconstruction.text_gate.bias.data.fill_(0.3)
    with torch.no_grad():
        text = model.get_text_features(batch["input_ids"], batch["attention_mask"])
        video = model.get_video_features(batch["pixel_values"], batch["video_mask"])
        full = model.similarity_per_level(text, video, levels=(0,))[0]
        # the score of (text 0, video 1) depends on both: recomputing it alone gives the same number
        alone = model.similarity_per_level(text[0:1], video[1:2], levels=(0,))[0]
    torch.testing.assert_close(alone[0, 0], full[0, 1])


@pytest.mark.parametrize("reconstruction", [True, False], ids=["HBI-V2", "HBI"])
def test_chunked_scoring_equals_one_shot_scoring(batch, reconstruction):
    model = seeded_model(HBIModel, representation_reconstruction=reconstruction)
    with torch.no_grad():
        text = model.get_text_features(batch["input_ids"], batch["attention_mask"])
        video = model.get_video_features(batch["pixel_values"], batch["video_mask"])
        one_shot = model.similarity_per_level(text, video)
        chunked = model.similarity_per_level(text, video, chunk_size=3)
    for a, b in zip(one_shot, chunked):
        torch.testing.assert_close(a, b)


def test_matched_token_similarity_is_the_diagonal_of_all_pairs(batch):
    model = seeded_model(HBIModel)
    with torch.no_grad():
        text = model.get_text_features(batch["input_ids"], batch["attention_mask"])
        video = model.get_video_features(batch["pixel_values"], batch["video_mask"])
        matched = model.matched_token_similarity(text, video, level=0)
        from hbi_hf.modeling_hbi import ALL_PAIRS

        all_pairs = model.levels[0].token_similarity(
            model.level_inputs(text, 0), model.level_inputs(video, 0), ALL_PAIRS
        )
    # every text with every video: cells (texts, words, frames, videos)
    torch.testing.assert_close(matched, torch.stack([all_pairs[i, :, :, i] for i in range(4)]))


# ----- persistence and registration -----------------------------------------------------------------------------------


def test_save_and_auto_load_give_identical_outputs(tmp_path, batch):
    model = seeded_model()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert AutoConfig.from_pretrained(tmp_path).model_type == "hbi"
    retrieval = AutoModelForVideoTextRetrieval.from_pretrained(tmp_path).eval()
    base = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(retrieval, HBIForRetrieval) and isinstance(base, HBIModel)
    with torch.no_grad():
        expected = model(**batch).logits_per_text
        torch.testing.assert_close(retrieval(**batch).logits_per_text, expected)
        torch.testing.assert_close(base(**batch).logits_per_text, expected)


def test_from_clip_builds_from_a_local_clip_folder_and_initialises_the_temporal_transformer(tmp_path):
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(text_config=TINY_TEXT, vision_config=TINY_VISION, projection_dim=32))
    clip.save_pretrained(tmp_path)
    model = HBIForRetrieval.from_clip(
        str(tmp_path),
        num_frames=6,
        max_words=10,
        temporal_num_attention_heads=4,
        temporal_intermediate_size=64,
        merge_num_attention_heads=4,
        video_cluster_counts=[3, 2],
        text_cluster_counts=[4, 2],
    )
    torch.testing.assert_close(model.hbi.clip.visual_projection.weight, clip.visual_projection.weight)
    first_text_layer = clip.text_model.encoder.layers[0].state_dict()
    for key, value in model.hbi.temporal.layers[0].state_dict().items():
        torch.testing.assert_close(value, first_text_layer[key])
    positions = model.hbi.temporal.frame_position_embeddings.weight
    torch.testing.assert_close(positions[:16], clip.text_model.embeddings.position_embedding.weight)


# ----- input validation -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("pixel_values", torch.randn(4, 3, 32, 32), "pixel_values must be"),
        ("video_mask", torch.ones(4, 5, dtype=torch.long), "video_mask must be"),
        ("attention_mask", torch.ones(4, 9, dtype=torch.long), "attention_mask must have"),
        ("input_ids", torch.ones(40, dtype=torch.long), "input_ids must be"),
        ("video_mask", torch.zeros(4, 6, dtype=torch.long), "video_mask has a row without any frame"),
    ],
)
def test_wrong_inputs_raise_a_value_error_naming_the_argument(batch, field, value, message):
    model = seeded_model()
    with pytest.raises(ValueError, match=message):
        model(**{**batch, field: value})


def test_unmatched_batches_are_rejected_by_the_loss(batch):
    model = seeded_model().train()
    with pytest.raises(ValueError, match="matched pairs"):
        model(**{**batch, "input_ids": batch["input_ids"][:3], "attention_mask": batch["attention_mask"][:3]})


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(cluster_mode="kmeans"), "cluster_mode"),
        (dict(video_cluster_counts=[6]), "video_cluster_counts"),
        (dict(similarity_level_weights=[0, 0, 0]), "similarity_level_weights"),
        (dict(num_frames=100), "num_frames"),
    ],
)
def test_invalid_configuration_is_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        HBIConfig(**overrides)


def test_ratio_mode_reproduces_the_official_cluster_counts():
    config = HBIConfig(cluster_mode="ratio")
    video = [config.num_merged_tokens("video", 1, 12)]
    video.append(config.num_merged_tokens("video", 2, video[0]))
    text = [config.num_merged_tokens("text", 1, 32)]
    text.append(config.num_merged_tokens("text", 2, text[0]))
    assert (video, text) == ([3, 2], [8, 4])


def test_tiny_batches_of_every_size_score_without_error():
    model = seeded_model(HBIModel)
    for n_text, n_video in itertools.product([1, 2], [1, 3]):
        text_inputs = tiny_batch(n_text)
        video_inputs = tiny_batch(n_video, seed=1)
        with torch.no_grad():
            out = model(
                input_ids=text_inputs["input_ids"],
                attention_mask=text_inputs["attention_mask"],
                pixel_values=video_inputs["pixel_values"],
                video_mask=video_inputs["video_mask"],
            )
        assert out.logits_per_text.shape == (n_text, n_video)
