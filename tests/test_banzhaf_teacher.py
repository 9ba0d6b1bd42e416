"""The teacher of the Banzhaf-interaction loss (Eq. 8): an explicit choice, never a silent random network; the default
teacher is the game's exact Banzhaf interaction and the online Monte-Carlo teacher is it in expectation; the term reaches the encoder; coarser levels
merge real-length captions."""

import pytest
import torch
from conftest import tiny_batch, tiny_hbi_config

from hbi_hf import HBIBanzhafEstimator, HBIBanzhafEstimatorConfig, HBIConfig, HBIForRetrieval, modeling_hbi
from hbi_hf.banzhaf import exact_banzhaf_interaction
from hbi_hf.demo import HBIDemoArguments, demo_config


def seeded_retrieval(**overrides) -> HBIForRetrieval:
    torch.manual_seed(0)
    return HBIForRetrieval(tiny_hbi_config(**overrides))


def features(model: HBIForRetrieval, batch: dict):
    text = model.get_text_features(batch["input_ids"], batch["attention_mask"])
    video = model.get_video_features(batch["pixel_values"], batch["video_mask"])
    return text, video


# ----- the choice of teacher ------------------------------------------------------------------------------------------


def test_a_never_trained_estimator_is_refused_with_the_fix_named(tmp_path):
    HBIBanzhafEstimator(HBIBanzhafEstimatorConfig(hidden_size=8)).save_pretrained(tmp_path / "untrained")
    model = seeded_retrieval()
    with pytest.raises(ValueError, match="never trained.*train_estimator.py.*banzhaf_teacher='exact'"):
        model.load_banzhaf_teacher(str(tmp_path / "untrained"))
    assert model.config.banzhaf_teacher == "exact"

    # a model configured for an estimator teacher whose estimator was never trained refuses to train
    model = seeded_retrieval(banzhaf_teacher="estimator").train()
    with pytest.raises(ValueError, match="never trained.*estimator_name_or_path"):
        model(**tiny_batch(), return_loss=True)
    with pytest.raises(ValueError, match="needs estimator_name_or_path"):
        HBIForRetrieval.from_clip("unused", banzhaf_teacher="estimator")


def test_a_trained_estimator_is_the_teacher_once_loaded(tmp_path):
    trained = HBIBanzhafEstimator(HBIBanzhafEstimatorConfig(hidden_size=8, is_trained=True)).eval()
    trained.save_pretrained(tmp_path / "trained")
    model = seeded_retrieval()
    model.load_banzhaf_teacher(str(tmp_path / "trained"))
    assert model.config.banzhaf_teacher == "estimator" and model.config.estimator_config.is_trained
    batch = tiny_batch()
    with torch.no_grad():
        text, video = features(model, batch)
        similarity = model.hbi.matched_token_similarity(text, video, 0)
        teacher = model.alignment.teacher_interaction(similarity, text, video, 0)
        cell_mask = text.level_masks[0].unsqueeze(-1) & video.level_masks[0].unsqueeze(-2)
    torch.testing.assert_close(teacher, trained.estimate(similarity, cell_mask))
    assert model.train()(**batch, return_loss=True).banzhaf_loss > 0


@pytest.mark.parametrize("overrides", [dict(banzhaf_teacher="none"), dict(banzhaf_loss_weight=0.0)])
def test_without_a_teacher_or_with_alpha_zero_no_teacher_runs_and_l_i_is_zero(overrides, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the teacher ran")

    monkeypatch.setattr(modeling_hbi.HBIAlignmentLoss, "teacher_interaction", refuse)
    model = seeded_retrieval(**overrides).train()
    output = model(**tiny_batch(), return_loss=True)
    assert output.banzhaf_loss == 0
    beta = model.config.distillation_loss_weight
    torch.testing.assert_close(output.loss, output.contrastive_loss + beta * output.distillation_loss)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(banzhaf_teacher="random"), "banzhaf_teacher"),
        (dict(banzhaf_num_samples=0), "banzhaf_num_samples"),
        (dict(banzhaf_game_scale=0.0), "banzhaf_game_scale"),
        (dict(banzhaf_head_input_scale=-1.0), "banzhaf_head_input_scale"),
    ],
)
def test_invalid_teacher_settings_are_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        HBIConfig(**overrides)


# ----- the online teachers ------------------------------------------------------------------------------------------


def level_game(model: HBIForRetrieval, level: int):
    """The matched-pair similarity of a level of the tiny batch, and the game the teacher plays on it."""
    with torch.no_grad():
        text, video = features(model, tiny_batch())
        similarity = model.hbi.matched_token_similarity(text, video, level)
    return similarity, text, video


@pytest.mark.parametrize("level", [0, 1, 2])
def test_the_default_teacher_is_the_exact_banzhaf_interaction_at_every_level(level):
    """The default teacher gives, for every matched pair, the interactions that enumerating all 2^n coalitions of the
    level's game gives (its similarity, WTI weight logits, masks and game scale; padding included): no noise."""
    model = seeded_retrieval(banzhaf_game_scale=1000.0)
    assert model.config.banzhaf_teacher == "exact"
    similarity, text, video = level_game(model, level)
    with torch.no_grad():
        teacher = model.alignment.teacher_interaction(similarity, text, video, level)
    exact = exact_banzhaf_interaction(  # enumerated in float64; the teacher returns float32
        similarity.double(),
        text.level_weight_logits[level].double(),
        video.level_weight_logits[level].double(),
        text.level_masks[level],
        video.level_masks[level],
        logit_scale=1000.0,
    )
    assert exact.abs().max() > 0.1  # a non-trivial game
    torch.testing.assert_close(teacher.double(), exact, rtol=1e-6, atol=1e-6 * exact.abs().max().item())


@pytest.mark.parametrize("level", [0, 1, 2])
def test_the_monte_carlo_teacher_is_the_exact_banzhaf_interaction_in_expectation(level):
    """With `banzhaf_teacher="monte_carlo"` the entity level (10 words + 6 frames) is sampled and converges to exact
    enumeration; the coarser levels (at most 12 positions) are enumerated exactly."""
    model = seeded_retrieval(banzhaf_teacher="monte_carlo", banzhaf_num_samples=20000, banzhaf_game_scale=1000.0)
    batch = tiny_batch()
    with torch.no_grad():
        text, video = features(model, batch)
        similarity = model.hbi.matched_token_similarity(text, video, level)
        torch.manual_seed(1)
        online = model.alignment.teacher_interaction(similarity, text, video, level)
        exact = exact_banzhaf_interaction(
            similarity,
            text.level_weight_logits[level],
            video.level_weight_logits[level],
            text.level_masks[level],
            video.level_masks[level],
            logit_scale=1000.0,
        )
    assert exact.abs().max() > 0.1  # a non-trivial game
    if level > 0:
        torch.testing.assert_close(online, exact)
        return
    with torch.no_grad():
        torch.manual_seed(2)
        again = model.alignment.teacher_interaction(similarity, text, video, level)
    # unbiased: the error against exact enumeration is of the size of the sampling noise, which two independent runs
    # show (their difference has sqrt(2) times the noise of one); a bias (e.g. the official sampler's, as large as
    # the interactions) would stand out. The noise estimate itself varies by tens of percent: hence the factor 3.
    noise = (online - again).abs().mean() / 2**0.5
    assert (online - exact).abs().mean() < 3 * noise
    assert noise < 0.05 * exact.abs().max()
    model.alignment.config = HBIConfig(**{**model.config.to_dict(), "banzhaf_num_samples": 50})
    with torch.no_grad():
        noisy = model.alignment.teacher_interaction(similarity, text, video, level)
    assert (noisy - exact).abs().mean() > 3 * (online - exact).abs().mean()


@pytest.mark.parametrize("teacher", ["exact", "monte_carlo"])
def test_the_online_teacher_scales_with_the_game_scale(teacher):
    model = seeded_retrieval(banzhaf_teacher=teacher, banzhaf_num_samples=64, banzhaf_game_scale=1.0)
    with torch.no_grad():
        text, video = features(model, tiny_batch())
        similarity = model.hbi.matched_token_similarity(text, video, 0)
        torch.manual_seed(3)
        unit = model.alignment.teacher_interaction(similarity, text, video, 0)
        model.alignment.config.banzhaf_game_scale = 1000.0
        torch.manual_seed(3)
        scaled = model.alignment.teacher_interaction(similarity, text, video, 0)
    torch.testing.assert_close(scaled, 1000.0 * unit, rtol=1e-4, atol=1e-4)


# ----- the term reaches the encoder -----------------------------------------------------------------------------


def encoder_gradient_norm(model: HBIForRetrieval, loss: torch.Tensor) -> torch.Tensor:
    parameters = [p for p in model.hbi.parameters() if p.requires_grad]
    gradients = torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)
    return torch.sqrt(sum((g**2).sum() for g in gradients if g is not None))


def encoder_gradient_ratio(head_input_scale: float) -> float:
    """Encoder-gradient norm of alpha * L_I over that of L_C for the demo's model at initialisation, batch 8, under
    the sharpened objective (where docs/banzhaf.md measured it; the official L_I is an element mean, far weaker)."""
    args = HBIDemoArguments(quick=True)
    torch.manual_seed(0)
    config = demo_config(args, banzhaf_head_input_scale=head_input_scale, objective="sharpened")
    model = HBIForRetrieval(config).train()
    assert model.config.banzhaf_teacher == "exact"
    generator = torch.Generator().manual_seed(0)
    batch_size, words = 8, args.max_words
    input_ids = torch.randint(1, 40000, (batch_size, words), generator=generator)
    attention_mask = torch.ones(batch_size, words, dtype=torch.long)
    for row in range(batch_size):
        length = 6 + row % 6
        input_ids[row, 0], input_ids[row, length - 1] = 49406, 49407
        input_ids[row, length:], attention_mask[row, length:] = 49407, 0
    pixel_values = torch.randn(batch_size, args.num_frames, 3, args.image_size, args.image_size, generator=generator)
    torch.manual_seed(1)
    output = model(input_ids, pixel_values, attention_mask, return_loss=True)
    assert output.banzhaf_loss > 0.1  # the teacher gives real targets, not a near-constant network's
    banzhaf = encoder_gradient_norm(model, model.config.banzhaf_loss_weight * output.banzhaf_loss)
    return (banzhaf / encoder_gradient_norm(model, output.contrastive_loss)).item()


def test_the_head_input_scale_sets_how_strongly_l_i_reaches_the_encoder():
    """In the demo's configuration the Banzhaf term reaches the encoder at >= 1 % of the contrastive term's gradient
    once the heads read scaled similarities, and far less at the default scale 1 (docs/banzhaf.md: at >= 100 the
    demo's contrastive loss stays at chance, so the default keeps the paper's unscaled input)."""
    default, scaled = encoder_gradient_ratio(1.0), encoder_gradient_ratio(200.0)
    assert scaled >= 0.01
    assert default < scaled / 10


# ----- coarser levels merge real captions -------------------------------------------------------------------------


def test_cluster_counts_follow_the_valid_length():
    config = HBIConfig()  # paper: 32 words -> 16 phrases -> 4 paragraphs, 12 frames -> 6 clips -> 2 segments
    lengths = torch.tensor([32, 12, 5, 1])
    phrases = config.merged_token_counts("text", 1, lengths, 32)
    assert phrases.tolist() == [16, 6, 3, 1]
    assert config.merged_token_counts("text", 2, phrases, 16).tolist() == [4, 2, 1, 1]
    clips = config.merged_token_counts("video", 1, torch.tensor([12, 8, 1]), 12)
    assert clips.tolist() == [6, 4, 1]
    assert config.merged_token_counts("video", 2, clips, 6).tolist() == [2, 2, 1]
    ratio = HBIConfig(cluster_mode="ratio")  # official: counts of the padded length for every item
    assert ratio.merged_token_counts("text", 1, lengths, 32).tolist() == [8, 8, 8, 8]


def test_short_captions_are_merged_into_fewer_phrases():
    """Captions of 4-10 valid tokens (none longer than the phrase count of 4 at full length would allow to be kept
    whole) get fewer phrases than tokens, and every valid token belongs to one of them."""
    model = seeded_retrieval().hbi
    batch = tiny_batch()
    with torch.no_grad():
        text = model.get_text_features(batch["input_ids"], batch["attention_mask"])
    valid = text.level_masks[0].sum(-1)
    phrases = text.level_masks[1].sum(-1)
    assert (phrases < valid).all()
    assignment = text.cluster_assignments[0]
    for row in range(len(valid)):
        used = assignment[row, : valid[row]]
        assert used.ge(0).all() and used.unique().numel() == phrases[row]


# ----- the paper's recipe, automated ------------------------------------------------------------------------------


def test_an_estimator_fitted_to_the_model_is_written_reloads_and_is_used(tmp_path, monkeypatch):
    from transformers import TrainingArguments

    from hbi_hf import banzhaf
    from hbi_hf.estimator_training import fit_estimator_to_model

    model = seeded_retrieval()
    train_batches = [tiny_batch(seed=seed) for seed in range(3)]
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        remove_unused_columns=False,
        num_train_epochs=2,
        learning_rate=1e-2,
        per_device_train_batch_size=8,
        disable_tqdm=True,
    )
    estimator, metrics = fit_estimator_to_model(
        model,
        train_batches,
        [tiny_batch(seed=9)],
        tmp_path / "estimator",
        num_samples=20,
        eval_num_samples=50,
        training_args=args,
    )
    assert {f"level{level}_pearson" for level in range(3)} <= set(metrics)
    reloaded = HBIBanzhafEstimator.from_pretrained(tmp_path / "estimator").eval()
    assert reloaded.config.is_trained
    model.load_banzhaf_teacher(str(tmp_path / "estimator"))
    assert model.config.banzhaf_teacher == "estimator"

    def refuse(*args, **kwargs):
        raise AssertionError("the Monte-Carlo teacher ran although the estimator is the teacher")

    monkeypatch.setattr(banzhaf, "sampled_banzhaf_interaction", refuse)
    batch = tiny_batch(seed=5)
    with torch.no_grad():
        text, video = features(model, batch)
        for level in range(3):
            similarity = model.hbi.matched_token_similarity(text, video, level)
            cell_mask = text.level_masks[level].unsqueeze(-1) & video.level_masks[level].unsqueeze(-2)
            torch.testing.assert_close(
                model.alignment.teacher_interaction(similarity, text, video, level),
                reloaded.estimate(similarity, cell_mask),
            )
    output = model.train()(**batch, return_loss=True)
    assert output.banzhaf_loss > 0 and output.loss.isfinite()


def test_the_estimator_is_measured_again_at_every_evaluation_and_refitted_below_the_threshold(tmp_path):
    from transformers import TrainerControl, TrainerState

    from hbi_hf.estimator_training import HBIEstimatorAgreementCallback

    trained = HBIBanzhafEstimator(HBIBanzhafEstimatorConfig(hidden_size=8, is_trained=True))
    trained.save_pretrained(tmp_path / "estimator")
    model = seeded_retrieval()
    model.load_banzhaf_teacher(str(tmp_path / "estimator"))
    refits = []
    callback = HBIEstimatorAgreementCallback(
        lambda: [tiny_batch(seed=7)], refit=refits.append, refit_below=1.01, num_samples=20
    )
    state, metrics = TrainerState(), {"eval_loss": 1.0}
    callback.on_evaluate(None, state, TrainerControl(), model=model, metrics=metrics)
    for level in range(3):
        assert -1 <= metrics[f"estimator_level{level}_pearson"] <= 1
        assert f"estimator_level{level}_uniform_kl_over_frames" in metrics
    assert state.log_history[-1]["estimator_level0_pearson"] == metrics["estimator_level0_pearson"]
    assert refits == [model]  # a Pearson of at most 1 is below 1.01

    without_estimator = seeded_retrieval()  # a model without an estimator teacher is left alone
    metrics = {}
    callback.on_evaluate(None, TrainerState(), TrainerControl(), model=without_estimator, metrics=metrics)
    assert metrics == {} and refits == [model]


def test_fit_estimator_in_a_task_training_run_writes_loads_and_uses_the_estimator(tmp_path, tiny_synthetic_root):
    from conftest import TINY_TEXT_CLIP_VOCABULARY

    from hbi_hf import HBIForCaptioning
    from hbi_hf.data import HBICaptioningCollator, load_synthetic_captioning
    from hbi_hf.retrieval_data import build_retrieval_processor
    from hbi_hf.task_training import train_task_model
    from hbi_hf.training import HBITrainingArguments

    dataset = load_synthetic_captioning(tiny_synthetic_root)["train"]
    torch.manual_seed(0)
    model = HBIForCaptioning(
        tiny_hbi_config(
            text_config=dict(TINY_TEXT_CLIP_VOCABULARY), caption_decoder_num_attention_heads=4, caption_dropout=0.0
        )
    )
    args = HBITrainingArguments(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        fit_estimator=True,
        estimator_fit_pairs=len(dataset) - 4,
    )
    trainer = train_task_model(
        model.train(), dataset, HBICaptioningCollator(build_retrieval_processor(model.config)), args
    )
    assert trainer.state.global_step == 1
    saved = HBIBanzhafEstimator.from_pretrained(tmp_path / "banzhaf_estimator")
    assert saved.config.is_trained
    assert model.config.banzhaf_teacher == "estimator"
    for name, tensor in model.alignment.banzhaf_teacher.state_dict().items():
        torch.testing.assert_close(tensor, saved.state_dict()[name])
