"""The training objective: `HBIConfig(objective="official")` (default) is the official code's objective with its
defects fixed, `objective="sharpened"` is the objective hbi-hf trained with before (kept as an option)."""

import torch

from hbi_hf.modeling_hbi import banzhaf_interaction_loss, self_distillation_loss

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


def test_sharpened_objective_reproduces_the_former_loss_values():
    prediction, interaction, cell_mask, student, teacher = seeded_loss_inputs()
    assert banzhaf_interaction_loss(prediction, interaction, cell_mask).item() == SHARPENED_BANZHAF_LOSS
    assert self_distillation_loss(student, teacher).item() == SHARPENED_DISTILLATION_LOSS
