"""The fast gallery scorer agrees with a plain per-pair implementation of Eqs. 2-5 and 12."""

import pytest
import torch
from retrieval_standins import tiny_config

from hbi_hf import HBIModel
from hbi_hf.scoring_reference import reference_similarity


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
