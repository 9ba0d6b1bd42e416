"""The Banzhaf interaction of the video-text game: exact enumeration, the closed form, the Monte-Carlo estimate, and the
game's axioms."""

import math

import pytest
import torch

from hbi_hf.banzhaf import (
    _quadrature_nodes,
    banzhaf_characteristic_function,
    closed_form_banzhaf_interaction,
    exact_banzhaf_interaction,
    sample_coalitions,
    sampled_banzhaf_interaction,
)
from hbi_hf.modeling_hbi import weighted_token_interaction


def random_game(batch=2, words=5, frames=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    similarity = torch.randn(batch, words, frames, generator=generator) * 0.3
    text_logits = torch.randn(batch, words, generator=generator)
    video_logits = torch.randn(batch, frames, generator=generator)
    return similarity, text_logits, video_logits


def test_characteristic_function_is_eq12_on_the_coalition_and_zero_without_a_modality():
    similarity, text_logits, video_logits = random_game(batch=1)
    words = torch.tensor([[True, False, True, True, False]])
    frames = torch.tensor([[False, True, True, False]])
    value = banzhaf_characteristic_function(similarity, words, frames, text_logits, video_logits)
    expected = weighted_token_interaction(
        similarity, text_logits.unsqueeze(-1), video_logits.unsqueeze(-2), words.unsqueeze(-1), frames.unsqueeze(-2)
    )
    torch.testing.assert_close(value, expected)
    nobody = torch.zeros_like(frames)
    assert banzhaf_characteristic_function(similarity, words, nobody, text_logits, video_logits).item() == 0.0
    assert banzhaf_characteristic_function(similarity, torch.zeros_like(words), frames).item() == 0.0


def test_hand_computed_two_by_two_game():
    # Uniform weights; I(w1, f1) averages the bracket over C in {}, {w2}, {f2}, {w2, f2}:
    #   {}       : phi({w1,f1}) = 0.9                                                     -> 0.9
    #   {w2}     : phi({w1,w2,f1}) = (0.55 + 0.9) / 2 = 0.725, phi({w2,f1}) = 0.2          -> 0.525
    #   {f2}     : phi({w1,f1,f2}) = (0.9 + 0.5) / 2 = 0.7,    phi({w1,f2}) = 0.1          -> 0.6
    #   {w2, f2} : phi(all) = 0.85, phi({w1,w2,f2}) = 0.625, phi({w2,f1,f2}) = 0.65, phi({w2,f2}) = 0.8 -> 0.375
    similarity = torch.tensor([[[0.9, 0.1], [0.2, 0.8]]])
    interaction = exact_banzhaf_interaction(similarity)
    assert interaction[0, 0, 0].item() == pytest.approx((0.9 + 0.525 + 0.6 + 0.375) / 4)


def test_matched_pairs_cooperate_and_irrelevant_pairs_do_not():
    similarity = torch.tensor([[[0.9, -0.2, 0.0], [-0.1, 0.8, 0.1], [0.0, 0.1, 0.7]]])
    interaction = exact_banzhaf_interaction(similarity)[0]
    assert (interaction.diagonal() > 0).all()
    off_diagonal = interaction[~torch.eye(3, dtype=torch.bool)]
    assert (off_diagonal < interaction.diagonal().min()).all()
    assert interaction[0, 1] < 0


def test_interaction_is_equivariant_to_relabelling_players_and_swapping_modalities():
    similarity, text_logits, video_logits = random_game(batch=1)
    interaction = exact_banzhaf_interaction(similarity, text_logits, video_logits)
    words, frames = torch.tensor([3, 0, 4, 1, 2]), torch.tensor([2, 3, 1, 0])
    permuted = exact_banzhaf_interaction(
        similarity[:, words][:, :, frames], text_logits[:, words], video_logits[:, frames]
    )
    torch.testing.assert_close(permuted, interaction[:, words][:, :, frames])
    swapped = exact_banzhaf_interaction(similarity.transpose(1, 2), video_logits, text_logits)
    torch.testing.assert_close(swapped, interaction.transpose(1, 2))


def test_a_dummy_player_has_zero_interaction():
    # Word 2 has weight 0 (logit -inf) and similarity 0 to every frame while all other similarities are >= 0: adding it
    # to any coalition changes neither maximum nor weighted sum, so it is a dummy of the game.
    similarity = torch.rand(1, 4, 3, generator=torch.Generator().manual_seed(0))
    similarity[0, 2] = 0.0
    text_logits = torch.zeros(1, 4)
    text_logits[0, 2] = float("-inf")
    exact = exact_banzhaf_interaction(similarity, text_logits)
    sampled = sampled_banzhaf_interaction(similarity, 50, text_logits, generator=torch.Generator().manual_seed(0))
    assert exact[0, 2].abs().max().item() < 1e-6
    assert sampled[0, 2].abs().max().item() < 1e-6
    assert exact[0, [0, 1, 3]].abs().min().item() > 1e-3


@pytest.mark.parametrize("method", ["enumeration", "closed_form", "sampled"])
def test_padded_players_are_ignored_and_their_cells_are_zero(method):
    similarity, text_logits, video_logits = random_game(batch=1, words=4, frames=3)
    garbage = torch.Generator().manual_seed(5)
    padded_similarity = torch.randn(1, 6, 5, generator=garbage)
    padded_similarity[:, :4, :3] = similarity
    padded_text_logits = torch.cat([text_logits, 50 * torch.ones(1, 2)], dim=1)
    padded_video_logits = torch.cat([video_logits, 50 * torch.ones(1, 2)], dim=1)
    text_mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    video_mask = torch.tensor([[1, 1, 1, 0, 0]])
    small = exact_banzhaf_interaction(similarity, text_logits, video_logits)
    if method == "enumeration":
        padded = exact_banzhaf_interaction(
            padded_similarity, padded_text_logits, padded_video_logits, text_mask, video_mask
        )
    elif method == "closed_form":
        padded = closed_form_banzhaf_interaction(
            padded_similarity, padded_text_logits, padded_video_logits, text_mask, video_mask
        )
    else:
        padded = sampled_banzhaf_interaction(
            padded_similarity,
            400,
            padded_text_logits,
            padded_video_logits,
            text_mask,
            video_mask,
            generator=torch.Generator().manual_seed(2),
        )
    tolerance = 0.25 * small.abs().mean().item() if method == "sampled" else 1e-6
    assert (padded[:, :4, :3] - small).abs().mean().item() <= tolerance
    assert padded[:, 4:].abs().sum().item() == 0.0
    assert padded[:, :, 3:].abs().sum().item() == 0.0


# ----- the closed form ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "words, frames, masked, weight_spread",
    [
        (1, 1, False, 1.0),
        (2, 2, False, 0.0),
        (5, 4, False, 1.0),
        (8, 6, True, 3.0),
        (12, 6, True, 20.0),
        (6, 3, False, 100.0),
        (6, 3, True, 400.0),
        (6, 3, False, 1e4),
        (5, 4, True, 1e5),
    ],
)
def test_the_closed_form_is_exact_enumeration(words, frames, masked, weight_spread):
    """The closed form gives every pair's interaction as enumerating all 2^n coalitions does, for games of every shape,
    with uniform (spread 0) or very uneven WTI weights (logits of spread 400 differ by hundreds: a word of weight
    exp(-800) relative to the others still holds the whole share when it is alone) and with padding."""
    generator = torch.Generator().manual_seed(words * 100 + frames)
    similarity = torch.rand(3, words, frames, generator=generator, dtype=torch.float64) * 0.7 - 0.2
    text_logits = weight_spread * torch.randn(3, words, generator=generator, dtype=torch.float64)
    video_logits = weight_spread * torch.randn(3, frames, generator=generator, dtype=torch.float64)
    text_mask = video_mask = None
    if masked:
        text_mask = torch.arange(words) < torch.tensor([[words], [words - 3], [1]])
        video_mask = torch.arange(frames) < torch.tensor([[frames], [2], [frames - 1]])
    game = dict(text_mask=text_mask, video_mask=video_mask, logit_scale=1000.0)
    exact = exact_banzhaf_interaction(similarity, text_logits, video_logits, **game)
    closed_form = closed_form_banzhaf_interaction(similarity, text_logits, video_logits, **game)
    torch.testing.assert_close(closed_form, exact, rtol=1e-9, atol=1e-9 * exact.abs().max().item())


@pytest.mark.parametrize("outlier", [-1e4, -1e5, 1e5, -9e15])
def test_the_closed_form_is_exact_with_one_extreme_logit_unmasked(outlier):
    """One word's (and one frame's) logit far from the others', up to the official code's padding value -9e15 given
    without a mask: the weight underflows next to every other player's, but the player still holds the whole share
    in the coalitions where it is alone, and the closed form agrees with enumeration."""
    generator = torch.Generator().manual_seed(7)
    similarity = torch.rand(2, 5, 4, generator=generator, dtype=torch.float64) * 0.7 - 0.2
    text_logits = torch.randn(2, 5, generator=generator, dtype=torch.float64)
    video_logits = torch.randn(2, 4, generator=generator, dtype=torch.float64)
    text_logits[0, 2], video_logits[1, 0] = outlier, outlier
    game = dict(logit_scale=1000.0)
    exact = exact_banzhaf_interaction(similarity, text_logits, video_logits, **game)
    closed_form = closed_form_banzhaf_interaction(similarity, text_logits, video_logits, **game)
    torch.testing.assert_close(closed_form, exact, rtol=1e-9, atol=1e-9 * exact.abs().max().item())


def test_the_closed_forms_quadrature_does_not_grow_with_the_spread_of_the_logits():
    """The cost is set by the number of quadrature nodes: a player far from the others adds one window of nodes (to
    its own game only), whatever the distance; the official -9e15 padding value unmasked, or logits of 1e300, never
    ask for more than `players` windows."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(128, 32, generator=generator, dtype=torch.float64)

    def nodes(logits):
        z, anchor, weight = _quadrature_nodes(logits - logits.amax(-1, keepdim=True))
        return (weight > 0).sum(-1)

    ordinary = nodes(logits)
    for outlier in (-1e4, -1e5, -9e15, -1e300):
        extreme = logits.clone()
        extreme[5, 3] = outlier
        counts = nodes(extreme)
        assert torch.equal(counts[torch.arange(128) != 5], ordinary[torch.arange(128) != 5])
        assert counts[5] <= 2 * ordinary.max()
    spread = torch.arange(32, dtype=torch.float64).expand(128, 32) * -1e6  # every player in its own window
    assert nodes(spread).max() <= 32 * (math.ceil((40 + math.log(60)) / 0.125) + 1)


def test_the_closed_form_refuses_logits_it_cannot_weigh():
    similarity = torch.rand(1, 3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"text_weight_logits contains \+inf"):
        closed_form_banzhaf_interaction(similarity, torch.tensor([[0.0, float("inf"), 1.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="video_weight_logits spans more than float64"):
        closed_form_banzhaf_interaction(
            similarity, video_weight_logits=torch.tensor([[1e308, -1e308]], dtype=torch.float64)
        )


def test_the_closed_form_handles_tied_similarities():
    """Equal cosines (identical frames, repeated words) make the order of the maxima ambiguous; the value is not."""
    similarity = torch.tensor(
        [[[0.3, 0.3, 0.1], [0.3, 0.3, 0.1], [0.0, 0.2, 0.2], [0.1, 0.1, 0.1]]], dtype=torch.float64
    )
    logits = torch.tensor([[0.5, -1.0, 2.0, 0.0]], dtype=torch.float64), torch.tensor([[0.0, 1.0, -2.0]])
    exact = exact_banzhaf_interaction(similarity, logits[0], logits[1].double())
    torch.testing.assert_close(closed_form_banzhaf_interaction(similarity, logits[0], logits[1].double()), exact)


def test_the_closed_form_refuses_nan_weights_and_accepts_empty_batches():
    similarity = torch.rand(2, 3, 2)
    with pytest.raises(ValueError, match="text_weight_logits contains NaN"):
        closed_form_banzhaf_interaction(similarity, torch.tensor([[0.0, float("nan"), 1.0], [0.0, 0.0, 0.0]]))
    assert closed_form_banzhaf_interaction(torch.rand(0, 3, 2)).shape == (0, 3, 2)


def test_the_closed_form_of_a_lone_pair_is_its_cosine_and_it_keeps_the_input_dtype():
    similarity = torch.tensor([[[0.42]]], dtype=torch.bfloat16)
    interaction = closed_form_banzhaf_interaction(similarity)
    assert interaction.dtype == torch.bfloat16 and interaction.item() == pytest.approx(0.42, abs=1e-2)


def test_the_closed_form_agrees_with_sampling_on_games_too_large_to_enumerate():
    """At MSR-VTT's entity shape (32 words x 12 frames: 2^44 coalitions) the Monte-Carlo estimate scatters around the
    closed form with its sampling noise, which two independent estimates measure."""
    similarity, text_logits, video_logits = random_game(batch=2, words=32, frames=12, seed=3)
    closed_form = closed_form_banzhaf_interaction(similarity, text_logits, video_logits)
    first, second = (
        sampled_banzhaf_interaction(
            similarity, 4000, text_logits, video_logits, generator=torch.Generator().manual_seed(seed)
        )
        for seed in (1, 2)
    )
    noise = (first - second).pow(2).mean().sqrt() / 2**0.5
    assert noise < 0.1 * closed_form.abs().max()
    assert (first - closed_form).pow(2).mean().sqrt() < 1.5 * noise


def test_incremental_and_direct_evaluation_give_the_same_estimate():
    similarity, text_logits, video_logits = random_game(batch=2, words=6, frames=5)
    text_mask = torch.ones(2, 6, dtype=torch.bool)
    text_mask[1, 4:] = False
    video_mask = torch.ones(2, 5, dtype=torch.bool)
    video_mask[0, 3:] = False
    estimates = [
        sampled_banzhaf_interaction(
            similarity,
            40,
            text_logits,
            video_logits,
            text_mask,
            video_mask,
            logit_scale=1000.0,
            generator=torch.Generator().manual_seed(7),
            method=method,
        )
        for method in ("direct", "incremental")
    ]
    torch.testing.assert_close(estimates[1], estimates[0], rtol=1e-4, atol=1e-3)


def test_sampled_estimate_converges_to_exact_like_one_over_sqrt_samples():
    similarity, text_logits, video_logits = random_game(batch=4, words=6, frames=5, seed=3)
    exact = exact_banzhaf_interaction(similarity, text_logits, video_logits)
    generator = torch.Generator().manual_seed(0)

    def rms_error(num_samples: int) -> float:
        runs = torch.stack(
            [
                sampled_banzhaf_interaction(similarity, num_samples, text_logits, video_logits, generator=generator)
                for _ in range(20)
            ]
        )
        return (runs - exact).pow(2).mean().sqrt().item()

    coarse, fine = rms_error(100), rms_error(1600)
    assert fine < coarse
    # 16x the samples: the error should shrink by about 4 (sqrt(16)); allow for the randomness of 20 runs.
    assert 2.5 < coarse / fine < 6.0
    bias = (
        torch.stack(
            [
                sampled_banzhaf_interaction(similarity, 2000, text_logits, video_logits, generator=generator)
                for _ in range(10)
            ]
        ).mean(0)
        - exact
    )
    assert bias.abs().mean().item() < 0.1 * exact.abs().mean().item()


def test_logit_scale_multiplies_every_interaction():
    similarity, text_logits, video_logits = random_game(batch=1)
    plain = exact_banzhaf_interaction(similarity, text_logits, video_logits)
    scaled = exact_banzhaf_interaction(similarity, text_logits, video_logits, logit_scale=1000.0)
    torch.testing.assert_close(scaled, 1000.0 * plain, rtol=1e-4, atol=1e-4)


def test_coalitions_hold_only_valid_players_and_each_joins_half_the_time():
    text_mask = torch.tensor([[1, 1, 1, 0]], dtype=torch.bool)
    video_mask = torch.tensor([[1, 0, 1]], dtype=torch.bool)
    words, frames = sample_coalitions(text_mask, video_mask, 4000, torch.Generator().manual_seed(0))
    assert not words[..., 3].any() and not frames[..., 1].any()
    rates = torch.cat([words[0, :, :3], frames[0][:, [0, 2]]], dim=-1).float().mean(0)
    assert (rates - 0.5).abs().max().item() < 4 * math.sqrt(0.25 / 4000)


def test_bad_inputs_are_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match="similarity must be"):
        sampled_banzhaf_interaction(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="text_mask must be"):
        sampled_banzhaf_interaction(torch.zeros(1, 3, 4), text_mask=torch.ones(1, 4))
    with pytest.raises(ValueError, match="max_players"):
        exact_banzhaf_interaction(torch.zeros(1, 16, 12))
    with pytest.raises(ValueError, match="method"):
        sampled_banzhaf_interaction(torch.zeros(1, 3, 4), method="official")
