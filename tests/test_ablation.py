"""The ablation in miniature (`make ablation`): its five variants differ from full HBI exactly as intended, and the
runner trains, evaluates and summarises them end to end (on a tiny setting here; the real run is not a test)."""

import json

import pytest
import torch

from hbi_hf import HBIForRetrieval
from hbi_hf.ablation import (
    ABLATION_VARIANTS,
    HBIAblationArguments,
    HBIEntityLevelForRetrieval,
    HBIMeanPooledForRetrieval,
    build_variant,
    mean_pooled_similarity,
    run_ablation,
    summarize,
)
from hbi_hf.demo import demo_config
from hbi_hf.modeling_hbi import banzhaf_interaction_loss, contrastive_loss

QUICK = HBIAblationArguments(quick=True)


def quick_batch(config, batch_size: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random matched inputs at the config's sizes, with some padded words."""
    generator = torch.Generator().manual_seed(seed)
    words, frames, side = config.max_words, config.num_frames, config.vision_config.image_size
    input_ids = torch.randint(1, 1000, (batch_size, words), generator=generator)
    attention_mask = torch.ones(batch_size, words, dtype=torch.long)
    for row in range(batch_size):
        attention_mask[row, words - 2 * row :] = 0
    pixel_values = torch.randn(batch_size, frames, 3, side, side, generator=generator)
    return dict(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)


def differing_fields(config, reference) -> set[str]:
    mine, theirs = config.to_dict(), reference.to_dict()
    return {name for name in mine.keys() | theirs.keys() if mine.get(name) != theirs.get(name)}


def test_each_variant_differs_from_full_hbi_exactly_as_intended():
    models = {variant: build_variant(QUICK, variant, seed=0) for variant in ABLATION_VARIANTS}
    full = models["full"]
    expected = {
        "full": (HBIForRetrieval, set()),
        "no_banzhaf": (HBIForRetrieval, {"banzhaf_loss_weight"}),
        "no_distillation": (HBIForRetrieval, {"distillation_loss_weight"}),
        "entity_only": (HBIEntityLevelForRetrieval, set()),
        "mean_pooled": (HBIMeanPooledForRetrieval, set()),
    }
    for variant, (model_class, fields) in expected.items():
        model = models[variant]
        assert type(model) is model_class, variant
        assert differing_fields(model.config, full.config) == fields, variant
    assert models["no_banzhaf"].config.banzhaf_loss_weight == 0.0
    assert models["no_distillation"].config.distillation_loss_weight == 0.0
    assert full.config.banzhaf_teacher == "exact" and full.config.banzhaf_loss_weight > 0
    # every variant of a seed starts from the same weights; another seed starts elsewhere
    reference = full.state_dict()
    for variant, model in models.items():
        state = model.state_dict()
        assert state.keys() == reference.keys(), variant
        assert all(torch.equal(tensor, reference[name]) for name, tensor in state.items()), variant
    other = build_variant(QUICK, "full", seed=1).state_dict()
    assert not all(torch.equal(tensor, reference[name]) for name, tensor in other.items())


def test_alpha_zero_is_the_same_objective_as_no_teacher():
    config = demo_config(QUICK)
    batch = quick_batch(config)
    losses, gradients = [], []
    for fields in ({"banzhaf_loss_weight": 0.0}, {"banzhaf_teacher": "none"}):
        torch.manual_seed(0)
        model = HBIForRetrieval(demo_config(QUICK, **fields)).train()
        output = model(**batch, return_loss=True)
        output.loss.backward()
        losses.append(output.loss.detach())
        gradients.append(torch.cat([p.grad.flatten() for p in model.hbi.parameters() if p.grad is not None]))
        assert output.banzhaf_loss == 0
    assert torch.equal(losses[0], losses[1]) and torch.equal(gradients[0], gradients[1])


def test_entity_only_trains_the_entity_level_alone():
    torch.manual_seed(0)
    model = build_variant(QUICK, "entity_only", seed=0).train()
    batch = quick_batch(model.config)
    output = model(**batch, return_loss=True)
    hbi = model.hbi
    text = hbi.get_text_features(batch["input_ids"], batch["attention_mask"])
    video = hbi.get_video_features(batch["pixel_values"])
    entity = hbi.similarity_per_level(text, video, levels=(0,))[0]
    torch.testing.assert_close(output.contrastive_loss, contrastive_loss(hbi.logit_scale() * entity))
    assert output.banzhaf_loss > 0 and output.distillation_loss == 0
    # L_I at the entity level only, from the default (Monte-Carlo) teacher
    assert output.loss == output.contrastive_loss + model.config.banzhaf_loss_weight * output.banzhaf_loss
    output.loss.backward()
    for level in (1, 2):
        assert all(p.grad is None for p in hbi.levels[level].parameters()), level
        assert all(p.grad is None for p in model.alignment.banzhaf_heads[level].parameters()), level
    assert all(p.grad is None for p in hbi.text_merges.parameters())
    assert any(p.grad is not None for p in model.alignment.banzhaf_heads[0].parameters())
    with pytest.raises(ValueError, match="entity level only"):
        HBIEntityLevelForRetrieval(demo_config(QUICK, similarity_level_weights=[1.0, 0.5, 0.0]))


def test_entity_level_banzhaf_term_is_the_full_models_entity_term():
    # same weights and teacher samples: the entity-only L_I is the full loss's entity-level L_I
    full, entity_only = (build_variant(QUICK, variant, seed=0).train() for variant in ("full", "entity_only"))
    batch = quick_batch(full.config)
    text = full.hbi.get_text_features(batch["input_ids"], batch["attention_mask"])
    video = full.hbi.get_video_features(batch["pixel_values"])
    similarity = full.hbi.matched_token_similarity(text, video, 0)
    torch.manual_seed(5)
    teacher = full.alignment.teacher_interaction(similarity, text, video, 0)
    cell_mask = text.level_masks[0].unsqueeze(-1) & video.level_masks[0].unsqueeze(-2)
    head_input = full.config.banzhaf_head_input_scale * similarity
    expected = banzhaf_interaction_loss(full.alignment.banzhaf_heads[0](head_input, cell_mask), teacher, cell_mask)
    torch.manual_seed(5)
    output = entity_only(**batch, return_loss=True)
    torch.testing.assert_close(output.banzhaf_loss, expected)


def test_mean_pooled_baseline_ranks_and_trains_with_pooled_cosines():
    model = build_variant(QUICK, "mean_pooled", seed=0).train()
    batch = quick_batch(model.config)
    output = model(**batch, return_loss=True)
    cosine = output.text_embeds @ output.video_embeds.t()
    torch.testing.assert_close(output.logits_per_text, model.hbi.logit_scale() * cosine)
    torch.testing.assert_close(output.loss, contrastive_loss(output.logits_per_text))
    assert output.banzhaf_loss is None and output.distillation_loss is None
    output.loss.backward()
    assert all(p.grad is None for p in model.alignment.parameters())
    assert all(p.grad is None for level in model.hbi.levels for p in level.parameters())
    scores = model.score(output.text_features, output.video_features)
    torch.testing.assert_close(scores, mean_pooled_similarity(output.text_embeds, output.video_embeds))


def test_summary_is_mean_and_sample_standard_deviation_over_seeds():
    runs = [
        {
            "t2v_R@1": value,
            "t2v_R@5": 0.0,
            "t2v_R@10": 0.0,
            "v2t_R@1": 0.0,
            "v2t_R@5": 0.0,
            "v2t_R@10": 0.0,
            "Rsum": 2 * value,
        }
        for value in (10.0, 20.0, 30.0)
    ]
    summary = summarize({"full": runs})["full"]
    assert summary["t2v_R@1"] == (20.0, 10.0) and summary["Rsum"] == (40.0, 20.0)


def test_ablation_runs_every_variant_end_to_end_on_a_tiny_setting(tmp_path, tiny_synthetic_root):
    from hbi_hf.data import load_synthetic_retrieval

    # the quick sizes; 12 rows at batch 4 for 4 epochs: 12 steps, so the loss parts are logged once (every 10 steps)
    sizes = dict(hidden_size=64, num_layers=1, image_size=32, num_frames=4, max_words=16)
    args = HBIAblationArguments(
        output_dir=str(tmp_path / "ablation"), batch_size=4, num_train_epochs=4.0, seeds=[0], **sizes
    )
    results = run_ablation(args, load_synthetic_retrieval(tiny_synthetic_root))
    written = json.loads((tmp_path / "ablation" / "ablation_results.json").read_text())
    assert written["summary"] == results["summary"] and set(written["runs"]) == set(ABLATION_VARIANTS)
    for variant, runs in written["runs"].items():
        (run,) = runs
        assert all(0.0 <= run[f"{d}_R@{k}"] <= 100.0 for d in ("t2v", "v2t") for k in (1, 5, 10)), variant
        assert run["Rsum"] == pytest.approx(sum(run[f"{d}_R@{k}"] for d in ("t2v", "v2t") for k in (1, 5, 10)))
        assert run["contrastive_loss"] > 0, variant
    assert written["runs"]["no_banzhaf"][0]["banzhaf_loss"] == 0
    assert written["runs"]["full"][0]["banzhaf_loss"] > 0


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="--variants: unknown"):
        HBIAblationArguments(variants=["full", "no_hierarchy"])
