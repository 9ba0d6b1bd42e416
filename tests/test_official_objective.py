"""The training objective: `HBIConfig(objective="official")` (default) is the official code's objective with its
defects fixed, `objective="sharpened"` is the objective hbi-hf trained with before (kept as an option).

The references below are the official formulas written out in plain torch from the specification (the official
`KL` module is `F.kl_div(F.log_softmax(student, -1), F.softmax(target, -1), reduction="mean")`, its contrastive
loss the mean of `-diag(log_softmax(logits, -1))`); the package's values must equal them to 1e-6, except where a
named test shows one of the official code's defects and the package's fix of it."""

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_batch, tiny_hbi_config

from hbi_hf import HBIConfig, HBIForRetrieval
from hbi_hf.modeling_hbi import banzhaf_interaction_loss, self_distillation_loss, weighted_token_interaction

# L_I and one L_D term of the seeded inputs below, computed by hbi-hf's loss functions at commit 5c7a427, before the
# objective became an option (their objective is now `objective="sharpened"`).
SHARPENED_BANZHAF_LOSS = 2.856509763621382
SHARPENED_DISTILLATION_LOSS = 91.70818465311831


def seeded_loss_inputs():
    """Head predictions and teacher interactions `(3, 5, 4)` with padded words and frames, and `(6, 6)` logits."""
    generator = torch.Generator().manual_seed(2326)
    prediction = torch.randn(3, 5, 4, generator=generator, dtype=torch.float64)
    interaction = 20 * torch.randn(3, 5, 4, generator=generator, dtype=torch.float64)
    text_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    video_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    cell_mask = text_mask[:, :, None] & video_mask[:, None, :]
    student = torch.randn(6, 6, generator=generator, dtype=torch.float64) * 30
    teacher = torch.randn(6, 6, generator=generator, dtype=torch.float64) * 30
    return prediction, interaction, cell_mask, student, teacher


# ----- the official formulas (spec §2.4, §5), plain torch -----------------------------------------------------------


def official_kl(student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The official `KL(student, target)`: softmax over the last axis, `F.kl_div(..., reduction="mean")`, i.e. the sum
    over all elements divided by their number (written out: torch announces that "mean" will change meaning)."""
    return F.kl_div(F.log_softmax(student, dim=-1), F.softmax(target, dim=-1), reduction="sum") / student.numel()


def official_contrastive(similarity: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """L_C: the official `CrossEn` on text->video and video->text logits, averaged."""
    logits = similarity * logit_scale
    return 0.5 * (
        -torch.diagonal(torch.log_softmax(logits, -1)).mean() - torch.diagonal(torch.log_softmax(logits.T, -1)).mean()
    )


def official_banzhaf_fixed(prediction: torch.Tensor, interaction: torch.Tensor) -> torch.Tensor:
    """L_I `(batch, words, frames)` as the official code, with the second term's softmax over the words of each
    frame (`.mT`) instead of over the batch (`.T`)."""
    return official_kl(prediction, interaction) + official_kl(prediction.mT, interaction.mT)


def official_banzhaf_as_released(prediction: torch.Tensor, interaction: torch.Tensor) -> torch.Tensor:
    """L_I exactly as the official code computes it: `.T` of a 3-D tensor reverses all axes, so the second term
    softmaxes over the batch."""
    return official_kl(prediction, interaction) + official_kl(
        prediction.permute(2, 1, 0), interaction.permute(2, 1, 0)
    )


def official_distillation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """One L_D term on raw `(texts, videos)` similarities: `kl(M_t2v^a, M_t2v^e) + kl(M_v2t^a, M_v2t^e)`."""
    return official_kl(student, teacher) + official_kl(student.T, teacher.T)


def sharpened_kl(student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The former reduction: the KL of each distribution (last axis) summed, then averaged over the distributions."""
    per_entry = F.kl_div(F.log_softmax(student, dim=-1), F.softmax(target, dim=-1), reduction="none")
    return per_entry.sum(-1).mean()


# ----- a model and an unpadded batch --------------------------------------------------------------------------------


def full_batch(batch_size: int = 4) -> dict[str, torch.Tensor]:
    """`tiny_batch` with every word and every frame present (the official code's tensors have no masked cells)."""
    inputs = tiny_batch(batch_size=batch_size)
    input_ids = torch.randint(1, 98, inputs["input_ids"].shape, generator=torch.Generator().manual_seed(1))
    input_ids[:, 0], input_ids[:, -1] = 98, 99
    inputs["input_ids"] = input_ids
    inputs["attention_mask"] = torch.ones_like(inputs["attention_mask"])
    inputs["video_mask"] = torch.ones_like(inputs["video_mask"])
    return inputs


def alignment_parts(model: HBIForRetrieval, inputs: dict[str, torch.Tensor]):
    """The package's loss output and the inputs of the official formulas (similarities, teacher, head predictions)
    for one batch; the weights are seeded, the model in training mode."""
    text = model.hbi.get_text_features(inputs["input_ids"], inputs["attention_mask"])
    video = model.hbi.get_video_features(inputs["pixel_values"], inputs["video_mask"])
    output = model.alignment(model.hbi, text, video)
    similarity = model.hbi.similarity_per_level(text, video)
    predictions, interactions = [], []
    for level in range(3):
        matched = model.hbi.matched_token_similarity(text, video, level)
        cell_mask = text.level_masks[level].unsqueeze(-1) & video.level_masks[level].unsqueeze(-2)
        assert cell_mask.all(), "the reference batch must have no padded cell at any level"
        interactions.append(model.alignment.teacher_interaction(matched, text, video, level))
        head_input = model.config.banzhaf_head_input_scale * matched
        predictions.append(model.alignment.banzhaf_heads[level](head_input, cell_mask))
    return output, similarity, predictions, interactions


def seeded_model(**overrides) -> HBIForRetrieval:
    torch.manual_seed(0)
    return HBIForRetrieval(tiny_hbi_config(**overrides)).train()


# ----- the official objective ---------------------------------------------------------------------------------------


def test_the_official_objective_with_the_official_weights_is_the_default():
    config = HBIConfig()
    assert config.objective == "official"
    assert (config.banzhaf_loss_weight, config.distillation_loss_weight) == (1.0, 2.0)  # --skl 1 --kl 2
    with pytest.raises(ValueError, match="objective must be one of"):
        HBIConfig(objective="paper")


def test_every_loss_term_equals_the_official_formula_on_an_unpadded_batch():
    model = seeded_model()
    output, similarity, predictions, interactions = alignment_parts(model, full_batch())
    logit_scale = 1.0 / model.config.temperature
    contrastive = [official_contrastive(s, logit_scale) for s in similarity]
    banzhaf = [official_banzhaf_fixed(p, i) for p, i in zip(predictions, interactions)]
    distillation = [official_distillation(similarity[level], similarity[0]) for level in (1, 2)]
    for level in range(3):
        torch.testing.assert_close(output.contrastive_loss_per_level[level], contrastive[level], rtol=0, atol=1e-6)
        torch.testing.assert_close(output.banzhaf_loss_per_level[level], banzhaf[level], rtol=0, atol=1e-6)
    for term in range(2):
        torch.testing.assert_close(output.distillation_loss_per_level[term], distillation[term], rtol=0, atol=1e-6)
    # Eq. 16 with alpha = --skl = 1 and beta = --kl = 2 (a total of about 25 in float32: equal to 1e-6 relative)
    total = sum(contrastive) + 1.0 * sum(banzhaf) + 2.0 * sum(distillation)
    torch.testing.assert_close(output.loss, total, rtol=1e-6, atol=1e-6)
    assert all(term > 0 for term in banzhaf + distillation)


def test_the_distillation_teacher_is_not_detached_and_gets_the_official_gradient():
    _, _, _, student, teacher = seeded_loss_inputs()
    student, teacher = student / 30, teacher / 30  # raw cosine-like scores
    package_student, package_teacher = student.clone().requires_grad_(), teacher.clone().requires_grad_()
    self_distillation_loss(package_student, package_teacher).backward()
    reference_student, reference_teacher = student.clone().requires_grad_(), teacher.clone().requires_grad_()
    official_distillation(reference_student, reference_teacher).backward()
    assert package_teacher.grad.abs().max() > 0
    torch.testing.assert_close(package_teacher.grad, reference_teacher.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(package_student.grad, reference_student.grad, rtol=0, atol=1e-12)
    # in a model, the entity level receives the self-distillation gradient
    model = seeded_model(banzhaf_teacher="none")
    inputs = full_batch()
    text = model.hbi.get_text_features(inputs["input_ids"], inputs["attention_mask"])
    video = model.hbi.get_video_features(inputs["pixel_values"], inputs["video_mask"])
    distillation = model.alignment(model.hbi, text, video).distillation_loss
    entity_weights = model.hbi.levels[0].text_weight
    gradient = torch.autograd.grad(distillation, list(entity_weights.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().max() > 0 for g in gradient)


# ----- the official code's defects, each fixed -----------------------------------------------------------------------


def test_fix_the_per_frame_term_softmaxes_over_words_not_over_the_batch():
    prediction, interaction, _, _, _ = seeded_loss_inputs()
    everywhere = torch.ones_like(prediction, dtype=torch.bool)
    package = banzhaf_interaction_loss(prediction, interaction, everywhere)
    torch.testing.assert_close(package, official_banzhaf_fixed(prediction, interaction), rtol=0, atol=1e-12)
    assert abs(package - official_banzhaf_as_released(prediction, interaction)) > 0.01


def masked_reference(prediction: torch.Tensor, interaction: torch.Tensor, cell_mask: torch.Tensor) -> torch.Tensor:
    """The official sum of per-cell KL terms over the valid cells only, each softmax over the valid cells of its
    word's row or frame's column, divided by all `batch x words x frames` cells (the official denominator)."""
    total = prediction.new_zeros(())
    for item in range(prediction.shape[0]):
        valid = cell_mask[item]
        words, frames = valid.any(1).nonzero().flatten(), valid.any(0).nonzero().flatten()
        block_prediction = prediction[item][words][:, frames]
        block_interaction = interaction[item][words][:, frames]
        for student, target in ((block_prediction, block_interaction), (block_prediction.T, block_interaction.T)):
            total = total + F.kl_div(F.log_softmax(student, -1), F.softmax(target, -1), reduction="sum")
    return total / prediction.numel()


def test_fix_padded_cells_enter_no_softmax_of_the_banzhaf_loss():
    prediction, interaction, cell_mask, _, _ = seeded_loss_inputs()
    # the official matrices carry 0 at padded cells (similarity zeroed there, hence teacher and head input 0)
    prediction, interaction = prediction * cell_mask, interaction * cell_mask
    package = banzhaf_interaction_loss(prediction, interaction, cell_mask)
    torch.testing.assert_close(package, masked_reference(prediction, interaction, cell_mask), rtol=0, atol=1e-12)
    assert abs(package - official_banzhaf_fixed(prediction, interaction)) > 0.01


def test_the_official_mean_divides_by_the_configured_padded_shape_whatever_the_batch_padding():
    """Documented choice: the denominator is `batch x` the level's shape for inputs padded to `max_words` and
    `num_frames` (the official loaders' padding), so trimming a batch's padding does not change L_I."""
    config = tiny_hbi_config()
    assert [config.level_shape(level) for level in range(3)] == [(10, 6), (4, 3), (2, 2)]
    model = seeded_model()
    padded = {name: value[1:3] for name, value in tiny_batch().items()}  # captions of 7 and 4 of 10 positions
    assert padded["attention_mask"].sum(-1).tolist() == [7, 4]
    trimmed = dict(padded, input_ids=padded["input_ids"][:, :7], attention_mask=padded["attention_mask"][:, :7])
    losses = []
    for inputs in (padded, trimmed):
        text = model.hbi.get_text_features(inputs["input_ids"], inputs["attention_mask"])
        video = model.hbi.get_video_features(inputs["pixel_values"], inputs["video_mask"])
        losses.append(model.alignment(model.hbi, text, video).banzhaf_loss_per_level[0])
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-7)


def test_fix_padded_tokens_never_win_a_maximum_nor_take_a_weight_in_the_similarity():
    """The official similarity zeroes padded cells (a 0 then beats a word's negative cosines) and gives padded tokens
    the weight logit -9e15; the package leaves padded tokens out of the maxima and the softmaxes."""
    cosines = torch.tensor([[[-0.3, -0.2, 0.0], [0.4, 0.1, 0.0], [0.0, 0.0, 0.0]]], dtype=torch.float64)
    text_mask = torch.tensor([[True, True, False]])
    video_mask = torch.tensor([[True, True, False]])
    text_logits = torch.tensor([[0.2, -0.1, 0.5]], dtype=torch.float64)
    video_logits = torch.tensor([[0.0, 0.3, 1.0]], dtype=torch.float64)

    def official_wti(cosines, text_logits, video_logits, text_mask, video_mask):
        text_weight = torch.softmax(text_logits.masked_fill(~text_mask, -9e15), -1)
        video_weight = torch.softmax(video_logits.masked_fill(~video_mask, -9e15), -1)
        logits = cosines * text_mask[:, :, None] * video_mask[:, None, :]
        t2v = (logits.max(-1).values * text_weight).sum(-1)
        v2t = (logits.max(-2).values * video_weight).sum(-1)
        return (t2v + v2t) / 2

    package = weighted_token_interaction(
        cosines, text_logits[..., None], video_logits[:, None, :], text_mask[..., None], video_mask[:, None, :]
    )
    # the padded tokens removed from the input: the official formula gives the package's score
    valid = official_wti(
        cosines[:, :2, :2], text_logits[:, :2], video_logits[:, :2], text_mask[:, :2], video_mask[:, :2]
    )
    torch.testing.assert_close(package, valid, rtol=0, atol=1e-12)
    assert abs(package - official_wti(cosines, text_logits, video_logits, text_mask, video_mask)) > 0.05


# ----- the former objective, kept as objective="sharpened" -----------------------------------------------------------


def test_sharpened_objective_reproduces_the_former_loss_values():
    prediction, interaction, cell_mask, student, teacher = seeded_loss_inputs()
    banzhaf = banzhaf_interaction_loss(prediction, interaction, cell_mask, objective="sharpened")
    distillation = self_distillation_loss(student, teacher, objective="sharpened")
    assert banzhaf.item() == pytest.approx(SHARPENED_BANZHAF_LOSS, rel=1e-12)
    assert distillation.item() == pytest.approx(SHARPENED_DISTILLATION_LOSS, rel=1e-12)
    # its teacher is detached
    teacher = teacher.clone().requires_grad_()
    self_distillation_loss(student.clone().requires_grad_(), teacher, objective="sharpened").backward()
    assert teacher.grad is None or not teacher.grad.any()


def test_sharpened_objective_on_a_model_is_the_former_formulas():
    model = seeded_model(objective="sharpened", distillation_loss_weight=1.0)
    output, similarity, predictions, interactions = alignment_parts(model, full_batch())
    logits = [s / model.config.temperature for s in similarity]
    banzhaf = [sharpened_kl(p, i) + sharpened_kl(p.mT, i.mT) for p, i in zip(predictions, interactions)]
    distillation = [
        sharpened_kl(logits[level], logits[0]) + sharpened_kl(logits[level].T, logits[0].T) for level in (1, 2)
    ]
    for level in range(3):
        torch.testing.assert_close(output.banzhaf_loss_per_level[level], banzhaf[level], rtol=1e-6, atol=1e-6)
    for term in range(2):
        torch.testing.assert_close(output.distillation_loss_per_level[term], distillation[term], rtol=1e-6, atol=1e-6)
    contrastive = sum(official_contrastive(s, 1.0 / model.config.temperature) for s in similarity)
    torch.testing.assert_close(output.loss, contrastive + sum(banzhaf) + sum(distillation), rtol=1e-6, atol=1e-6)
