"""Text-video retrieval metrics: ranks, recall at K, median / mean rank, dual-softmax re-ranking. The `hbi_retrieval`
`evaluate` module (`hbi_hf.metrics.load("retrieval")`) computes them with these functions.

Conventions:

* A score matrix is `(n_text, n_video)`; `text_to_video[t]` is the index of the video caption `t` describes. A video
  may have several captions (MSVD, training splits) or exactly one (MSR-VTT 1k-A).
* Text-to-video: the rank of a caption is the position of its video among all videos.
* Video-to-text: the rank of a video is the position of its best-placed caption among all captions.
* **Ties count pessimistically**: the rank is 1 + the number of *wrong* candidates scoring at least as high as the
  best correct one. A collapsed model that gives every pair the same score therefore ranks last, never first, and the
  figures cannot depend on the order of the gallery.
* **Scores must be finite**: a NaN compares false with everything, so it would rank every query first (perfect
  figures), and an infinity only arises from an overflow (a model's scores are bounded: cosine similarities times a
  finite logit scale), ties with other infinities and turns into NaN under dual-softmax re-ranking. A matrix with a
  NaN or an infinity raises `ValueError` naming its rows and columns, never produces figures.
"""

import numpy as np
import torch

RECALL_AT = (1, 5, 10)


def _listing(names: list, limit: int = 10) -> str:
    """`[a, b, c]`, or the first `limit` names and how many more."""
    shown = ", ".join(str(name) for name in names[:limit])
    return f"[{shown}]" if len(names) <= limit else f"[{shown}, ... ({len(names) - limit} more)]"


def check_finite_scores(
    scores: torch.Tensor,
    text_names: list | None = None,
    video_names: list | None = None,
    what: str = "scores",
    text_label: str = "text rows",
    video_label: str = "video columns",
) -> None:
    """
    Refuse a score matrix holding NaN or infinite values (they have no ranking; see the module docstring).

    Args:
        scores (`torch.Tensor` of shape `(n_text, n_video)`)
        text_names (`list`, *optional*): how to name each row in the error (defaults to `text row i`).
        video_names (`list`, *optional*): how to name each column in the error (defaults to `video column j`).
        what (`str`, *optional*): what the matrix is, for the error.
        text_label (`str`, *optional*), video_label (`str`, *optional*): what the rows and columns are called.

    Raises:
        `ValueError`: naming how many scores are non-finite and which rows (texts) and columns (videos) hold them.
    """
    bad = ~torch.isfinite(scores)
    if not bad.any():
        return
    rows = bad.any(dim=1).nonzero().flatten().tolist()
    columns = bad.any(dim=0).nonzero().flatten().tolist()
    row_names = [text_names[i] for i in rows] if text_names is not None else rows
    column_names = [video_names[j] for j in columns] if video_names is not None else columns
    n_text, n_video = scores.shape
    raise ValueError(
        f"{what} hold {int(bad.sum())} non-finite values (NaN or infinity) of {bad.numel()}, in {len(rows)} of "
        f"{n_text} {text_label} {_listing(row_names)} and {len(columns)} of {n_video} "
        f"{video_label} {_listing(column_names)}: such scores cannot be ranked (a NaN would rank first), so no metrics are given; "
        "the model's parameters or features hold NaN or infinity, or its scores overflowed"
    )


def _pessimistic_ranks(scores: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """For each query row, 1 + the number of wrong candidates scoring >= the best correct candidate.

    Args:
        scores (`torch.Tensor` of shape `(queries, candidates)`)
        correct (`torch.BoolTensor` of shape `(queries, candidates)`): at least one True per row.

    Returns:
        `torch.LongTensor` of shape `(queries,)`, ranks starting at 1.
    """
    if not correct.any(dim=1).all():
        missing = int((~correct.any(dim=1)).nonzero()[0])
        raise ValueError(f"query {missing} has no correct candidate")
    best_correct = scores.masked_fill(~correct, float("-inf")).amax(dim=1, keepdim=True)
    return 1 + ((scores >= best_correct) & ~correct).sum(dim=1)


def retrieval_ranks(scores: torch.Tensor, text_to_video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Ranks of both retrieval directions (pessimistic ties, see the module docstring).

    Args:
        scores (`torch.Tensor` of shape `(n_text, n_video)`): higher means more similar.
        text_to_video (`torch.LongTensor` of shape `(n_text,)`): the video of each caption; every video needs at
            least one caption.

    Returns:
        text_to_video_ranks (`(n_text,)`) and video_to_text_ranks (`(n_video,)`), starting at 1.

    Raises:
        `ValueError`: a score is NaN or infinite (naming its text rows and video columns), `text_to_video` has the
            wrong length or indexes outside the gallery, or a video has no caption.
    """
    n_text, n_video = scores.shape
    text_to_video = torch.as_tensor(text_to_video, device=scores.device).long()
    if text_to_video.shape != (n_text,):
        raise ValueError(f"text_to_video must have one entry per text ({n_text}); got {tuple(text_to_video.shape)}")
    if n_text and (text_to_video.min() < 0 or text_to_video.max() >= n_video):
        raise ValueError(f"text_to_video must index the {n_video} videos; got values outside [0, {n_video})")
    scores = scores.float()
    check_finite_scores(scores)
    correct = text_to_video.unsqueeze(1) == torch.arange(n_video, device=scores.device).unsqueeze(0)
    if not correct.any(dim=0).all():
        missing = int((~correct.any(dim=0)).nonzero()[0])
        raise ValueError(f"video {missing} has no caption: every video of the gallery needs at least one")
    return _pessimistic_ranks(scores, correct), _pessimistic_ranks(scores.t(), correct.t())


def rank_metrics(ranks: torch.Tensor, prefix: str) -> dict[str, float]:
    """R@1, R@5, R@10 (percent), their sum Rsum, median rank MdR and mean rank MnR of one direction."""
    ranks_np = ranks.cpu().numpy()
    metrics = {f"{prefix}R@{k}": float(100.0 * (ranks_np <= k).mean()) for k in RECALL_AT}
    metrics[f"{prefix}Rsum"] = sum(metrics[f"{prefix}R@{k}"] for k in RECALL_AT)
    metrics[f"{prefix}MdR"] = float(np.median(ranks_np))
    metrics[f"{prefix}MnR"] = float(ranks_np.mean())
    return metrics


def dual_softmax_scores(scores: torch.Tensor, inverse_temperature: float = 100.0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""
    Dual-softmax re-ranking (as in CAMoE's DSL): each score is multiplied by a prior computed over the *other* side of
    the gallery, `s * softmax(lambda s)` over the texts for text-to-video and over the videos for video-to-text. It
    uses the whole test gallery at once, so it is a transductive post-processing, reported separately and never
    mixed into the plain figures (the paper's Table I uses none).

    Returns:
        text-to-video scores and video-to-text scores, both `(n_text, n_video)`.
    """
    scores = scores.float()
    return (
        scores * torch.softmax(inverse_temperature * scores, dim=0),
        scores * torch.softmax(inverse_temperature * scores, dim=1),
    )


def compute_retrieval_metrics(
    scores: torch.Tensor,
    text_to_video: torch.Tensor,
    dual_softmax: bool = False,
    dual_softmax_inverse_temperature: float = 100.0,
) -> dict[str, float]:
    """
    Text-to-video (`t2v_*`) and video-to-text (`v2t_*`) R@1, R@5, R@10, Rsum, MdR and MnR of a score matrix; with
    `dual_softmax=True` the same figures after dual-softmax re-ranking are added under `dsl_t2v_*` / `dsl_v2t_*`.

    Args:
        scores (`torch.Tensor` of shape `(n_text, n_video)`)
        text_to_video (`torch.LongTensor` of shape `(n_text,)`): the video of each caption.
        dual_softmax (`bool`, *optional*, defaults to `False`): also report dual-softmax re-ranked figures.
        dual_softmax_inverse_temperature (`float`, *optional*, defaults to 100.0): lambda of the re-ranking.

    Raises:
        `ValueError`: see [`retrieval_ranks`]; notably a NaN or infinite score, naming its text rows and video columns.
    """
    t2v_ranks, v2t_ranks = retrieval_ranks(scores, text_to_video)
    metrics = {**rank_metrics(t2v_ranks, "t2v_"), **rank_metrics(v2t_ranks, "v2t_")}
    if dual_softmax:
        t2v_scores, v2t_scores = dual_softmax_scores(scores, dual_softmax_inverse_temperature)
        metrics.update(rank_metrics(retrieval_ranks(t2v_scores, text_to_video)[0], "dsl_t2v_"))
        metrics.update(rank_metrics(retrieval_ranks(v2t_scores, text_to_video)[1], "dsl_v2t_"))
    return metrics


def chance_metrics(n_text: int, n_video: int, text_to_video: torch.Tensor | None = None) -> dict[str, float]:
    """Expected R@K of a random ranking, for reporting next to measured figures (`t2v_R@K` / `v2t_R@K`). Text-to-video
    has one correct video among `n_video`; video-to-text counts a hit when any of the video's captions is in the top
    K of `n_text` captions (computed exactly, hypergeometric)."""
    metrics = {f"t2v_R@{k}": 100.0 * min(k, n_video) / n_video for k in RECALL_AT}
    if text_to_video is None:
        captions_per_video = np.full(n_video, n_text // max(n_video, 1))
    else:
        captions_per_video = np.bincount(torch.as_tensor(text_to_video).cpu().numpy(), minlength=n_video)
    for k in RECALL_AT:
        miss = [_probability_no_hit(n_text, int(c), k) for c in captions_per_video]
        metrics[f"v2t_R@{k}"] = 100.0 * (1.0 - float(np.mean(miss)))
    return metrics


def _probability_no_hit(population: int, hits: int, draws: int) -> float:
    """Probability that `draws` items drawn without replacement from `population` contain none of `hits` items."""
    probability = 1.0
    for i in range(min(draws, population)):
        remaining = population - i
        if remaining <= 0:
            break
        probability *= max(remaining - hits, 0) / remaining
    return probability


__all__ = [
    "chance_metrics",
    "check_finite_scores",
    "compute_retrieval_metrics",
    "dual_softmax_scores",
    "rank_metrics",
    "retrieval_ranks",
]
