"""The ablation in miniature (`make ablation`): its variants differ from full HBI exactly as intended and start from
the same weights (the same pre-trained towers), the runner trains, evaluates, compares and resumes them end to end
(on a tiny setting here; the real run is not a test), and the paired statistics are right on a known example."""

import json
from pathlib import Path

import pytest
import torch
from transformers import CLIPModel

from hbi_hf import HBIForRetrieval
from hbi_hf.ablation import (
    ABLATION_VARIANTS,
    HBIAblationArguments,
    HBIEntityLevelForRetrieval,
    HBIMeanPooledForRetrieval,
    build_variant,
    item_breakdown,
    mean_pooled_similarity,
    paired_comparison,
    run_ablation,
    run_file,
    summarize,
    temporal_twins,
)
from hbi_hf.demo import demo_config
from hbi_hf.modeling_hbi import banzhaf_interaction_loss, contrastive_loss

QUICK = HBIAblationArguments(quick=True, towers="scratch")
TINY_SIZES = dict(hidden_size=32, num_layers=1, image_size=32, num_frames=4, max_words=16)
"""Tiny towers pre-trained for 2 steps on the frames of 6 scenes: what the tests fine-tune."""
TINY_PRETRAINING = dict(pretraining_steps=2, pretraining_scenes=6)


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
        "full_sharpened": (HBIForRetrieval, {"objective", "distillation_loss_weight"}),
        "no_banzhaf": (HBIForRetrieval, {"banzhaf_loss_weight"}),
        "no_distillation": (HBIForRetrieval, {"distillation_loss_weight"}),
        "entity_only": (HBIEntityLevelForRetrieval, set()),
        "entity_wti": (HBIEntityLevelForRetrieval, {"banzhaf_loss_weight"}),
        "mean_pooled": (HBIMeanPooledForRetrieval, set()),
    }
    for variant, (model_class, fields) in expected.items():
        model = models[variant]
        assert type(model) is model_class, variant
        assert differing_fields(model.config, full.config) == fields, variant
    assert models["no_banzhaf"].config.banzhaf_loss_weight == 0.0
    assert models["entity_wti"].config.banzhaf_loss_weight == 0.0
    # the objective and weights before issue 23: sharpened L_I / L_D, beta = 1
    assert models["full"].config.objective == "official"
    assert models["full_sharpened"].config.objective == "sharpened"
    assert models["full_sharpened"].config.distillation_loss_weight == 1.0
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


@pytest.fixture(scope="module")
def tiny_pretrained_args(tmp_path_factory):
    """Ablation arguments at tiny sizes whose towers are pre-trained (once per module) in a temporary folder."""
    from hbi_hf.demo import pretraining_arguments
    from hbi_hf.pretraining import pretrained_towers

    args = HBIAblationArguments(
        output_dir=str(tmp_path_factory.mktemp("ablation")),
        pretrained_dir=str(tmp_path_factory.mktemp("towers") / "clip"),
        **TINY_SIZES,
        **TINY_PRETRAINING,
    )
    pretrained_towers(pretraining_arguments(args), args.pretrained_dir)
    return args


def test_every_variant_starts_from_the_same_pretrained_towers(tiny_pretrained_args):
    clip = CLIPModel.from_pretrained(tiny_pretrained_args.pretrained_dir).state_dict()
    models = {variant: build_variant(tiny_pretrained_args, variant, seed=0) for variant in ABLATION_VARIANTS}
    reference = models["full"].state_dict()
    for variant, model in models.items():
        towers = model.hbi.clip.state_dict()
        assert all(torch.equal(tensor, towers[name]) for name, tensor in clip.items()), variant
        state = model.state_dict()
        assert all(torch.equal(tensor, reference[name]) for name, tensor in state.items()), variant
        # the official initialisation: the temporal transformer starts as the first CLIP text layer
        first_text_layer = model.hbi.clip.text_model.encoder.layers[0].state_dict()
        temporal = model.hbi.temporal.layers[0].state_dict()
        assert all(torch.equal(temporal[name], tensor) for name, tensor in first_text_layer.items()), variant
        assert model.config.temperature == 0.01, variant
    # another training seed: the same towers, other new modules
    other = build_variant(tiny_pretrained_args, "full", seed=1)
    assert all(torch.equal(tensor, other.hbi.clip.state_dict()[name]) for name, tensor in clip.items())
    other_state = other.state_dict()
    new_modules = [name for name in reference if not name.startswith("hbi.clip.")]
    assert any(not torch.equal(other_state[name], reference[name]) for name in new_modules)


def test_ablation_fine_tunes_compares_and_resumes_on_a_tiny_setting(
    tiny_pretrained_args, tiny_synthetic_root, monkeypatch
):
    import hbi_hf.ablation as ablation
    from hbi_hf.data import load_synthetic_retrieval

    # 12 rows at batch 4 for 4 epochs: 12 steps, so the loss parts are logged once (every 10 steps)
    args = tiny_pretrained_args
    args.batch_size, args.num_train_epochs, args.seeds = 4, 4.0, [0, 1]
    args.variants = ["full", "entity_wti", "mean_pooled"]
    splits = load_synthetic_retrieval(tiny_synthetic_root)
    results = run_ablation(args, splits)
    written = json.loads((Path(args.output_dir) / "ablation_results.json").read_text())
    assert written["summary"] == results["summary"] and set(written["runs"]) == set(args.variants)
    for variant, runs in written["runs"].items():
        assert len(runs) == 2, variant
        for run in runs:
            assert all(0.0 <= run[f"{d}_R@{k}"] <= 100.0 for d in ("t2v", "v2t") for k in (1, 5, 10)), variant
            assert run["Rsum"] == pytest.approx(sum(run[f"{d}_R@{k}"] for d in ("t2v", "v2t") for k in (1, 5, 10)))
            assert run["contrastive_loss"] > 0, variant
        assert run_file(args, variant, 1).is_file()
    assert written["runs"]["entity_wti"][0]["banzhaf_loss"] == 0 and written["runs"]["full"][0]["banzhaf_loss"] > 0
    comparison = written["comparisons"]["full"]["t2v_R@1"]
    expected = [a["t2v_R@1"] - b["t2v_R@1"] for a, b in zip(written["runs"]["full"], written["runs"]["mean_pooled"])]
    assert comparison["differences"] == pytest.approx(expected)
    assert set(written["items"]) == set(args.variants)
    # a second call finds every run written with the same settings and trains nothing
    monkeypatch.setattr(ablation, "run_variant", lambda *a: pytest.fail("a finished run was run again"))
    assert run_ablation(args, splits)["summary"] == results["summary"]
    # other settings in the same folder: refused, nothing overwritten
    args.num_train_epochs = 5.0
    with pytest.raises(ValueError, match="other settings"):
        run_ablation(args, splits)


def test_paired_comparison_on_a_known_example():
    comparison = paired_comparison([2.0, 4.0, 6.0, 8.0, 10.0], [1.0, 2.0, 3.0, 4.0, 5.0])
    assert comparison["differences"] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert comparison["mean_difference"] == 3.0
    assert comparison["std_difference"] == pytest.approx(1.5811388)
    # t = 3 / (1.5811 / sqrt 5) = 4.2426 on 4 degrees of freedom
    assert comparison["t_statistic"] == pytest.approx(4.2426407)
    assert comparison["t_pvalue"] == pytest.approx(0.0132356, abs=1e-6)
    # all five differences positive: the exact signed-rank p is 2 / 2^5, the smallest five pairs can give
    assert comparison["wilcoxon_statistic"] == 0.0 and comparison["wilcoxon_pvalue"] == pytest.approx(0.0625)
    same = paired_comparison([1.0, 2.0], [1.0, 2.0])
    assert same["t_pvalue"] == 1.0 and same["wilcoxon_pvalue"] == 1.0
    with pytest.raises(ValueError, match="length >= 2"):
        paired_comparison([1.0], [2.0])


def test_temporal_twins_and_where_a_variant_wins_and_loses(tiny_synthetic_root):
    from hbi_hf.data import load_synthetic_retrieval
    from hbi_hf.data.synthetic import sample_scenes

    test = load_synthetic_retrieval(tiny_synthetic_root)["test"]
    scenes = {scene.video_id: scene for scene in sample_scenes(3, 3, "test")}
    twins = temporal_twins(test)
    for video_id, twin in twins.items():
        first, second = (scenes[Path(test["video_path"][test["video_id"].index(v)]).stem] for v in (video_id, twin))
        assert first.objects == second.objects and first.events == second.events[::-1]
    # a handmade gallery of 3 videos, "b" the twin of "a"; the variant is right on "a" and "c", the baseline on "b"
    items = {"video_ids": ["a", "b", "c"], "text_to_video": [0, 1, 2]}
    variant = {"items": {**items, "t2v_rank": [1, 2, 1], "top1_video": [0, 0, 2]}}
    baseline = {"items": {**items, "t2v_rank": [3, 1, 2], "top1_video": [2, 1, 0]}}
    breakdown = item_breakdown({"full": [variant], "mean_pooled": [baseline]}, {"a": "b", "b": "a"})
    assert breakdown["full"]["t2v_R@1_with_twin"] == 50.0 and breakdown["full"]["t2v_R@1_without_twin"] == 100.0
    assert breakdown["full"]["top1_errors_on_the_twin"] == 1 and breakdown["full"]["top1_errors"] == 1
    assert breakdown["full"]["wins_vs_baseline"] == {"twin": 1, "no_twin": 1}
    assert breakdown["full"]["losses_vs_baseline"] == {"twin": 1, "no_twin": 0}
    assert breakdown["mean_pooled"]["top1_errors"] == 2 and breakdown["mean_pooled"]["top1_errors_on_the_twin"] == 0


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="--variants: unknown"):
        HBIAblationArguments(variants=["full", "no_hierarchy"])
