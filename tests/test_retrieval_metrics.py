"""Retrieval metrics on hand-made score matrices whose ranks are known."""

import pytest
import torch

from hbi_hf.model_card import model_index_results
from hbi_hf.retrieval_metrics import (
    chance_metrics,
    compute_retrieval_metrics,
    dual_softmax_scores,
    retrieval_ranks,
)


def test_one_caption_per_video_ranks_are_positions_of_the_correct_item():
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.2],  # video 0 first -> rank 1
            [0.5, 0.3, 0.4],  # video 1 last -> rank 3
            [0.1, 0.6, 0.5],  # video 2 second -> rank 2
        ]
    )
    t2v, v2t = retrieval_ranks(scores, torch.tensor([0, 1, 2]))
    assert t2v.tolist() == [1, 3, 2]
    # columns: video 0 -> caption 0 (0.9) first; video 1 -> caption 1 (0.3) behind 0.6: rank 2;
    # video 2 -> caption 2 (0.5) above 0.4 and 0.2: rank 1
    assert v2t.tolist() == [1, 2, 1]


def test_several_captions_per_video_use_best_caption_for_video_to_text():
    # captions 0, 1 describe video 0; caption 2 describes video 1
    scores = torch.tensor(
        [
            [0.2, 0.8],  # t2v rank 2
            [0.9, 0.1],  # t2v rank 1
            [0.3, 0.7],  # t2v rank 1
        ]
    )
    t2v, v2t = retrieval_ranks(scores, torch.tensor([0, 0, 1]))
    assert t2v.tolist() == [2, 1, 1]
    # video 0: its best caption (0.9) is first; video 1: caption 2 (0.7) is behind caption 0 (0.8) -> rank 2
    assert v2t.tolist() == [1, 2]


def test_other_captions_of_the_same_video_do_not_push_its_rank_down():
    scores = torch.tensor([[0.5], [0.5], [0.5]])  # three captions of the only video, all tied
    _, v2t = retrieval_ranks(scores, torch.tensor([0, 0, 0]))
    assert v2t.tolist() == [1]


def test_ties_with_wrong_candidates_count_pessimistically():
    scores = torch.tensor([[0.5, 0.5, 0.5], [0.2, 0.2, 0.1], [0.0, 0.0, 0.0]])
    t2v, v2t = retrieval_ranks(scores, torch.tensor([0, 1, 2]))
    assert t2v.tolist() == [3, 2, 3]
    # columns: video 0 -> caption 0 (0.5) above 0.2, 0.0; video 1 -> caption 1 (0.2) ties nothing, below 0.5;
    # video 2 -> caption 2 (0.0) below 0.5 and 0.1
    assert v2t.tolist() == [1, 2, 3]


def test_constant_scores_rank_every_query_last():
    metrics = compute_retrieval_metrics(torch.zeros(4, 4), torch.arange(4))
    assert metrics["t2v_R@1"] == 0.0
    assert metrics["t2v_MnR"] == 4.0
    assert metrics["v2t_MdR"] == 4.0


def test_metrics_summarise_ranks():
    # ranks 1, 2, 6, 11 for the four captions
    n = 12
    scores = torch.zeros(4, n)
    text_to_video = torch.tensor([0, 1, 2, 3])
    for text, rank in enumerate([1, 2, 6, 11]):
        scores[text, text] = 1.0
        wrong = [v for v in range(n) if v != text][: rank - 1]
        scores[text, wrong] = 2.0
    extra_captions = torch.arange(4, n)  # give the remaining videos a caption each, far from everything
    scores = torch.cat([scores, torch.full((n - 4, n), -1.0)])
    scores[extra_captions, extra_captions] = 5.0
    metrics = compute_retrieval_metrics(scores, torch.cat([text_to_video, extra_captions]))
    # t2v ranks: 1, 2, 6, 11 and eight 1s
    assert metrics["t2v_R@1"] == pytest.approx(100 * 9 / 12)
    assert metrics["t2v_R@5"] == pytest.approx(100 * 10 / 12)
    assert metrics["t2v_R@10"] == pytest.approx(100 * 11 / 12)
    assert metrics["t2v_Rsum"] == pytest.approx(100 * 30 / 12)
    assert metrics["t2v_MdR"] == 1.0
    assert metrics["t2v_MnR"] == pytest.approx((1 + 2 + 6 + 11 + 8) / 12)


def test_dual_softmax_is_reported_separately_and_leaves_plain_figures_unchanged():
    torch.manual_seed(0)
    scores = torch.randn(6, 6)
    text_to_video = torch.arange(6)
    plain = compute_retrieval_metrics(scores, text_to_video)
    both = compute_retrieval_metrics(scores, text_to_video, dual_softmax=True)
    assert {k: v for k, v in both.items() if not k.startswith("dsl_")} == plain
    assert {k for k in both if k.startswith("dsl_")} == {"dsl_" + k for k in plain}


def test_dual_softmax_can_fix_a_hub_video():
    # video 0 is a "hub": every caption prefers it; the prior over captions demotes it for the captions it
    # does not match best
    scores = torch.tensor([[0.9, 0.1, 0.1], [0.8, 0.7, 0.1], [0.8, 0.1, 0.7]])
    plain = compute_retrieval_metrics(scores, torch.arange(3))
    reranked = compute_retrieval_metrics(
        scores, torch.arange(3), dual_softmax=True, dual_softmax_inverse_temperature=10
    )
    assert plain["t2v_R@1"] == pytest.approx(100 / 3)
    assert reranked["dsl_t2v_R@1"] == 100.0
    t2v_scores, v2t_scores = dual_softmax_scores(scores, 10.0)
    assert t2v_scores.shape == v2t_scores.shape == scores.shape


def test_a_video_without_caption_is_an_error():
    with pytest.raises(ValueError, match="video 2 has no caption"):
        retrieval_ranks(torch.zeros(2, 3), torch.tensor([0, 1]))


def test_chance_level_of_one_caption_per_video():
    chance = chance_metrics(100, 100, torch.arange(100))
    assert chance["t2v_R@1"] == pytest.approx(1.0)
    assert chance["t2v_R@10"] == pytest.approx(10.0)
    assert chance["v2t_R@5"] == pytest.approx(5.0)


def test_chance_level_of_video_to_text_grows_with_captions_per_video():
    chance = chance_metrics(40, 20, torch.arange(20).repeat_interleave(2))
    assert chance["v2t_R@1"] == pytest.approx(100 * 2 / 40)
    assert chance["v2t_R@5"] > 5 * 100 / 40 * 0.9


def test_model_index_results_have_the_hub_structure():
    metrics = compute_retrieval_metrics(torch.eye(3), torch.arange(3), dual_softmax=True)
    results = model_index_results({f"test_{k}": v for k, v in metrics.items()}, "msrvtt", "test")
    assert [r["task"]["type"] for r in results] == ["text-to-video-retrieval", "video-to-text-retrieval"]
    assert results[0]["dataset"] == {"name": "MSR-VTT (1k-A test)", "type": "msr-vtt", "split": "test"}
    recall_at_1 = next(m for m in results[0]["metrics"] if m["type"] == "recall@1")
    assert recall_at_1["value"] == 100.0
    assert len(results[0]["metrics"]) == 6  # R@1, R@5, R@10, Rsum, MdR, MnR; no dual-softmax figures


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("dual_softmax", [False, True])
def test_a_non_finite_score_gives_no_metrics_and_names_its_text_row_and_video_column(value, dual_softmax):
    scores = torch.eye(3)
    scores[1, 2] = value  # NaN would otherwise rank caption 1 first; infinities overflowed and tie
    with pytest.raises(ValueError, match=r"1 non-finite values .* of 9, in 1 of 3 text rows \[1\] and 1 of 3 video "
                                         r"columns \[2\]"):  # fmt: skip
        compute_retrieval_metrics(scores, torch.arange(3), dual_softmax=dual_softmax)


def test_an_all_nan_score_matrix_is_not_perfect_retrieval():
    with pytest.raises(ValueError, match=r"4 non-finite values .* text rows \[0, 1\] .* video columns \[0, 1\]"):
        retrieval_ranks(torch.full((2, 2), float("nan")), torch.arange(2))


def test_the_non_finite_error_lists_the_first_ten_rows_and_counts_the_rest():
    scores = torch.zeros(12, 12).fill_diagonal_(1.0)
    scores[:, 0] = float("nan")
    with pytest.raises(ValueError, match=r"12 of 12 text rows \[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, \.\.\. \(2 more\)\] and "
                                         r"1 of 12 video columns \[0\]"):  # fmt: skip
        retrieval_ranks(scores, torch.arange(12))
