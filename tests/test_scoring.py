"""The fast gallery scorer agrees with a plain per-pair implementation of Eqs. 2-5 and 12."""

import dataclasses

import pytest
import torch
from retrieval_standins import tiny_config

from hbi_hf import HBIModel
from hbi_hf.scoring_reference import pair_similarity, reference_similarity


def encoded_gallery(reconstruction: bool):
    torch.manual_seed(0)
    model = HBIModel(tiny_config(representation_reconstruction=reconstruction)).eval()
    with torch.no_grad():  # give the reconstruction gates and weight MLPs non-trivial values
        for parameter in model.levels.parameters():
            parameter.normal_(0.0, 0.3)
    input_ids = torch.randint(1, 97, (5, 8))
    attention_mask = torch.ones_like(input_ids)
    for row, length in enumerate([8, 6, 4, 3, 7]):
        attention_mask[row, length:] = 0
    video_mask = torch.ones(4, 4, dtype=torch.long)
    video_mask[1, 3:] = 0
    video_mask[3, 2:] = 0
    with torch.no_grad():
        text = model.get_text_features(input_ids, attention_mask)
        video = model.get_video_features(torch.randn(4, 4, 3, 32, 32), video_mask)
    return model, text, video


@pytest.mark.parametrize("reconstruction", [True, False], ids=["v2", "v1"])
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_fast_scorer_matches_per_pair_reference_at_every_level(reconstruction, chunk_size):
    model, text, video = encoded_gallery(reconstruction)
    with torch.no_grad():
        fast = model.similarity_per_level(text, video, levels=(0, 1, 2), chunk_size=chunk_size)
    for level in range(3):
        torch.testing.assert_close(fast[level], reference_similarity(model, text, video, level), atol=1e-5, rtol=1e-4)


def test_reference_on_listed_pairs_matches_the_full_matrix():
    model, text, video = encoded_gallery(True)
    full = reference_similarity(model, text, video, level=0)
    pairs = [(0, 3), (4, 1), (2, 2)]
    torch.testing.assert_close(reference_similarity(model, text, video, 0, pairs), full[[0, 4, 2], [3, 1, 2]])


@pytest.mark.parametrize("reconstruction", [True, False], ids=["v2", "v1"])
def test_fast_scorer_is_exact_with_padding_in_the_middle_of_an_item(reconstruction):
    # the scorer cuts each block after the last valid token of its longest item; a hole before it must still count as
    # padding, and the result must not depend on the order in which items arrive
    model, text, video = encoded_gallery(reconstruction)
    text_masks, video_masks = list(text.level_masks), list(video.level_masks)
    text_masks[0] = text_masks[0].clone()
    text_masks[0][0, 2] = False
    video_masks[0] = video_masks[0].clone()
    video_masks[0][0, 1] = False
    text = dataclasses.replace(text, level_masks=tuple(text_masks))
    video = dataclasses.replace(video, level_masks=tuple(video_masks))
    with torch.no_grad():
        fast = model.similarity_per_level(text, video, levels=(0,), chunk_size=2)[0]
        reversed_order = model.similarity_per_level(text[[4, 3, 2, 1, 0]], video[[3, 2, 1, 0]], (0,), chunk_size=2)[0]
    torch.testing.assert_close(fast, reference_similarity(model, text, video, 0), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(reversed_order, fast.flip(0, 1))


def test_gallery_scoring_under_autograd_gives_the_per_pair_gradients():
    # training scores the gathered batch with the same scorer; its in-place steps must leave backward exact
    model, text, video = encoded_gallery(True)
    tokens = text.level_tokens[0].clone().requires_grad_(True)
    gate_logits = model.levels[0].reconstruction.gate_logits(tokens, "text")  # the reference recomputes the gates
    text = dataclasses.replace(
        text,
        level_tokens=(tokens, *text.level_tokens[1:]),
        level_gate_logits=(gate_logits, *text.level_gate_logits[1:]),
    )
    model.similarity_per_level(text, video, levels=(0,), chunk_size=2)[0].sum().backward()
    fast_gradient, tokens.grad = tokens.grad, None
    per_pair = [pair_similarity(model, text, video, t, v, 0) for t in range(len(text)) for v in range(len(video))]
    torch.stack(per_pair).sum().backward()
    torch.testing.assert_close(fast_gradient, tokens.grad, atol=1e-5, rtol=1e-4)
