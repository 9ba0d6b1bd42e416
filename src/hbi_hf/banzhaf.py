r"""
The Banzhaf interaction of (word, frame) pairs in HBI's video-text game (Eq. 1, spec §2).

**The game.** The players are the valid words and the valid frames of one video-text pair. The value of a coalition
`C = (words W, frames F)` is the similarity of Eq. 12 restricted to its players ([`banzhaf_characteristic_function`]):
the maxima run over the present players only and the WTI weights are renormalised (softmax) over the present players.
A coalition without any word or without any frame is worth 0, so `phi(only video) = phi(only text) = phi(empty) = 0`
(condition (c) of spec §2.2).

**The merged pair.** For a word i and a frame j, the merged player `[ij]` is the pair acting as one player: it is
present exactly when both are, with all their similarities and their own WTI weights. So
`phi(C + [ij]) = phi(C + {i, j})`, and Eq. 1 becomes the classical pairwise Banzhaf interaction index

    I(i, j) = 2^-(n-2) * sum_{C subset of N \ {i, j}} [phi(C + {i, j}) - phi(C + {i}) - phi(C + {j}) + phi(C)].

It satisfies conditions (a) and (b): with no other player present the bracket is exactly the cosine `a_ij`, positive
for a matched pair and negative for an irrelevant one, and in larger coalitions it is the gain of i's best frame and
j's best word being each other beyond what the rest of the coalition already offers. The official code instead lets
`[ij]` see only the single `(i, j)` entry of the matrix (its row and column are otherwise hidden); that is not the
value of any coalition of the game, so the index loses the Banzhaf axioms (e.g. a player that adds nothing does not
get zero interaction). It is not reproduced, nor is the official sampler's zeroing of absent players (a 0 then takes
part in every maximum); docs/banzhaf.md measures how far the official sampler is from this index. Two defects of older
copies of the official sampler (one sample assigned instead of accumulated, `phi(C + {i, j})` as the fourth term) were
fixed upstream in 2023.

**Scale.** `logit_scale` multiplies the similarities before the game is played. Eq. 12 is positively homogeneous in
the similarities (maxima and weighted sums; the weights come from separate logits), so this scales every interaction
by the same factor: it is the inverse temperature of the teacher distributions that Eq. 8 builds from the interactions.
The official code uses 1000.

Functions:

* [`closed_form_banzhaf_interaction`]: the exact values for games of any size in polynomial time (the default teacher);
* [`exact_banzhaf_interaction`]: every pair by full enumeration of the `2^n` coalitions (small games, the ground truth);
* [`sampled_banzhaf_interaction`]: the unbiased Monte-Carlo estimate of Eq. 1 for games of any size.
"""

import math

import torch

from .modeling_hbi import weighted_token_interaction

MAX_EXACT_PLAYERS = 20
"""Largest game (words + frames, padding included) that [`exact_banzhaf_interaction`] enumerates by default."""

_CELLS_PER_CHUNK = 1 << 22
"""Bound on `batch * samples * words * frames` (or `batch * coalitions * words * frames`) evaluated at once."""


def banzhaf_characteristic_function(
    similarity: torch.Tensor,
    text_coalition: torch.Tensor,
    video_coalition: torch.Tensor,
    text_weight_logits: torch.Tensor | None = None,
    video_weight_logits: torch.Tensor | None = None,
    logit_scale: float = 1.0,
) -> torch.Tensor:
    r"""
    The value `phi(C)` of a coalition: the similarity of Eq. 12 ([`weighted_token_interaction`]) over the coalition's
    words and frames, with the WTI weights renormalised over them. 0 for a coalition without a word or a frame.

    Args:
        similarity (`torch.Tensor` of shape `(..., words, frames)`): token cosine similarities.
        text_coalition (`torch.BoolTensor` of shape `(..., words)`): the words in the coalition.
        video_coalition (`torch.BoolTensor` of shape `(..., frames)`): the frames in the coalition.
        text_weight_logits (`torch.Tensor` of shape `(..., words)`, *optional*): MLP_t logits; uniform if omitted.
        video_weight_logits (`torch.Tensor` of shape `(..., frames)`, *optional*): MLP_v logits; uniform if omitted.
        logit_scale (`float`, *optional*, defaults to 1.0): multiplies the similarities (see the module docstring).
    All leading dimensions broadcast against each other.

    Returns:
        `torch.Tensor` of shape `(...)`.
    """
    if text_weight_logits is None:
        text_weight_logits = torch.zeros(text_coalition.shape, dtype=similarity.dtype, device=similarity.device)
    if video_weight_logits is None:
        video_weight_logits = torch.zeros(video_coalition.shape, dtype=similarity.dtype, device=similarity.device)
    return weighted_token_interaction(
        logit_scale * similarity,
        text_weight_logits.unsqueeze(-1),
        video_weight_logits.unsqueeze(-2),
        text_coalition.unsqueeze(-1),
        video_coalition.unsqueeze(-2),
    )


def exact_banzhaf_interaction(
    similarity: torch.Tensor,
    text_weight_logits: torch.Tensor | None = None,
    video_weight_logits: torch.Tensor | None = None,
    text_mask: torch.Tensor | None = None,
    video_mask: torch.Tensor | None = None,
    logit_scale: float = 1.0,
    max_players: int = MAX_EXACT_PLAYERS,
) -> torch.Tensor:
    r"""
    The Banzhaf interaction (Eq. 1) of every (word, frame) pair by full enumeration: the ground truth for small games.

    Every coalition S of the `n = words + frames` players is valued once, and Eq. 1 is evaluated for all pairs at once
    through the identity `I(i, j) = 2^-(n-2) * sum_S s_i(S) s_j(S) phi(S)` with `s_k(S) = +1` if k is in S and -1
    otherwise (each S is `C + {i, j}`, `C + {i}`, `C + {j}` or `C` for exactly one C, with the sign of its term).
    Padded players never join a coalition; they are dummies and do not change the valid players' interactions.
    Cost: `2^n` evaluations of Eq. 12 per matrix.

    Args:
        similarity (`torch.Tensor` of shape `(batch, words, frames)`): token cosine similarities of each pair.
        text_weight_logits (`(batch, words)`), video_weight_logits (`(batch, frames)`), *optional*: WTI weight
            logits; uniform weights if omitted.
        text_mask (`(batch, words)`), video_mask (`(batch, frames)`), *optional*: valid words and frames.
        logit_scale (`float`, *optional*, defaults to 1.0): multiplies the similarities (and so the interactions).
        max_players (`int`, *optional*, defaults to 20): refuse larger games (their cost doubles with every player).

    Returns:
        `torch.Tensor` of shape `(batch, words, frames)`: the interactions, 0 on padded cells.
    """
    similarity, text_weight_logits, video_weight_logits, text_mask, video_mask = _prepare_game(
        similarity, text_weight_logits, video_weight_logits, text_mask, video_mask
    )
    batch, words, frames = similarity.shape
    players = words + frames
    if players > max_players:
        raise ValueError(
            f"exact enumeration of a {words} x {frames} game needs 2^{players} coalitions; at most max_players="
            f"{max_players} players are allowed (use sampled_banzhaf_interaction for larger games)"
        )
    device = similarity.device
    chunk = max(1, _CELLS_PER_CHUNK // max(1, batch * words * frames))
    total = similarity.new_zeros(batch, words, frames)
    player_bits = 1 << torch.arange(players, device=device)
    for start in range(0, 1 << players, chunk):
        codes = torch.arange(start, min(start + chunk, 1 << players), device=device)
        members = (codes.unsqueeze(-1) & player_bits) != 0
        values = banzhaf_characteristic_function(
            similarity.unsqueeze(1),
            members[:, :words] & text_mask.unsqueeze(1),
            members[:, words:] & video_mask.unsqueeze(1),
            text_weight_logits.unsqueeze(1),
            video_weight_logits.unsqueeze(1),
            logit_scale,
        )
        signs = members.to(similarity.dtype) * 2 - 1
        total += torch.einsum("bc,cw,cf->bwf", values, signs[:, :words], signs[:, words:])
    interaction = total / 2 ** (players - 2)
    return interaction * _cell_mask(text_mask, video_mask)


def closed_form_banzhaf_interaction(
    similarity: torch.Tensor,
    text_weight_logits: torch.Tensor | None = None,
    video_weight_logits: torch.Tensor | None = None,
    text_mask: torch.Tensor | None = None,
    video_mask: torch.Tensor | None = None,
    logit_scale: float = 1.0,
) -> torch.Tensor:
    r"""
    The exact Banzhaf interaction (Eq. 1) of every (word, frame) pair of HBI's game, in polynomial time.

    Writing `I(i, j) = 2^-(n-2) sum_S s_i(S) s_j(S) phi(S)` as `4 E[s_i s_j phi(T, F)]` over uniform random word sets
    T and frame sets F (`s = +1` inside, -1 outside; see [`exact_banzhaf_interaction`]), each half of Eq. 12 is a sum
    of products of a factor that depends only on T and one that depends only on F, and T and F are independent:

        I(i, j) = 2 * [ sum_w K_t(i, w) M_t(j, w) + sum_f M_v(i, f) K_v(j, f) ]

    * `M_v(i, f) = E_T[s_i(T) max_{w in T} a_wf]` (and `M_t(j, w) = E_F[s_j(F) max_{f in F} a_wf]`): with the words
      sorted by `a_wf`, the maximum over T is the first sorted word in T, which is the k-th with probability `2^-k`,
      so `M_v(i, f) = 2^-r a_(r) - sum_{k > r} 2^-k a_(k)` for i of rank r ([`_expected_signed_maximum`]);
    * `K_t(i, w) = E_T[s_i(T) [w in T] u_w / sum_{k in T} u_k]` (WTI weights `u = exp(logit)`; `K_v` alike over
      frames) depends on the weights only; `1 / x = int_0^inf exp(-t x) dt` turns the expectation over T into a
      one-dimensional integral of a product over the players, computed by the trapezoidal rule in `log t`
      ([`_expected_signed_weight_share`]; nodes only where some player's integrand lives, so any spread of the WTI
      logits is exact to rounding at a cost that does not grow with the spread: one far-off logit, even the official
      padding value -9e15 given without a mask, adds at most one window of nodes to its own game).

    The same numbers as full enumeration (tested against [`exact_banzhaf_interaction`]) for games of any size, in
    `O(words * frames * (words + frames))` per matrix instead of `2^(words + frames)`, and without the Monte-Carlo
    noise of [`sampled_banzhaf_interaction`]. Valid for this game only (Eq. 12 restricted to the coalition's players,
    0 without a word or a frame). Computed in float64.

    Args:
        similarity (`torch.Tensor` of shape `(batch, words, frames)`): token cosine similarities of each pair.
        text_weight_logits (`(batch, words)`), video_weight_logits (`(batch, frames)`), *optional*: WTI weight
            logits; uniform weights if omitted.
        text_mask (`(batch, words)`), video_mask (`(batch, frames)`), *optional*: valid words and frames. Padded
            players never join a coalition and their cells are 0.
        logit_scale (`float`, *optional*, defaults to 1.0): multiplies the similarities (and so the interactions).

    Returns:
        `torch.Tensor` of shape `(batch, words, frames)` in the dtype of `similarity`: the interactions, 0 on padded
        cells.

    Raises:
        `ValueError`: bad shapes (as [`exact_banzhaf_interaction`]), NaN or +inf WTI weight logits, or finite logits
            whose differences overflow float64 (mask such players instead).
    """
    dtype = similarity.dtype
    similarity, text_weight_logits, video_weight_logits, text_mask, video_mask = _prepare_game(
        similarity.double(), text_weight_logits, video_weight_logits, text_mask, video_mask
    )
    for name, logits in (("text_weight_logits", text_weight_logits), ("video_weight_logits", video_weight_logits)):
        if logits.isnan().any():
            raise ValueError(f"{name} contains NaN; the WTI weights of the game are undefined")
        if logits.isposinf().any():
            raise ValueError(f"{name} contains +inf; the WTI weights of the game are undefined")
        top = logits.amax(-1, keepdim=True)
        if (logits.isfinite() & (logits - top).isinf()).any():
            raise ValueError(
                f"{name} spans more than float64 can subtract (finite logits whose difference overflows); mask "
                "padded players (text_mask / video_mask) instead of giving them huge logits"
            )
    if similarity.numel() == 0:
        return similarity.to(dtype)
    similarity = logit_scale * similarity.masked_fill(~_cell_mask(text_mask, video_mask), 0.0)
    word_share = _expected_signed_weight_share(text_weight_logits)  # (batch, words i, words w)
    frame_share = _expected_signed_weight_share(video_weight_logits)  # (batch, frames j, frames f)
    best_frame = _expected_signed_maximum(similarity.transpose(1, 2), video_mask)  # (batch, frames j, words w)
    best_word = _expected_signed_maximum(similarity, text_mask)  # (batch, words i, frames f)
    interaction = 2 * (word_share @ best_frame.transpose(1, 2) + best_word @ frame_share.transpose(1, 2))
    return (interaction * _cell_mask(text_mask, video_mask)).to(dtype)


def _expected_signed_maximum(values: torch.Tensor, row_mask: torch.Tensor) -> torch.Tensor:
    r"""
    `E_R[s_r(R) max_{r' in R} values[r', c]]` for every valid row r and column c, over uniform random sets R of the
    valid rows (the maximum of an empty set is 0, as a coalition without a word or a frame is worth 0).

    Args:
        values (`(batch, rows, columns)`), row_mask (`(batch, rows)`, bool).

    Returns:
        `(batch, rows, columns)`, 0 on padded rows.
    """
    rows = values.shape[1]
    ordered, order = values.masked_fill(~row_mask.unsqueeze(-1), float("-inf")).sort(dim=1, descending=True)
    rank = torch.arange(1, rows + 1, device=values.device)
    first_present = torch.where(
        rank.unsqueeze(0) <= row_mask.sum(-1, keepdim=True), torch.pow(0.5, rank.to(values.dtype)), 0.0
    ).unsqueeze(-1)  # probability that the sorted row of this rank is the best present one
    expected = torch.where(first_present > 0, first_present * ordered, 0.0)
    after = expected.flip(1).cumsum(1).flip(1) - expected
    return torch.zeros_like(values).scatter(1, order, expected - after) * row_mask.unsqueeze(-1)


_QUADRATURE_STEP = 0.125
"""Step in `log t` of the trapezoidal rule of [`_expected_signed_weight_share`] (error about exp(-pi^2 / step))."""
_NODES_PER_CHUNK = 128
"""Quadrature nodes of [`_expected_signed_weight_share`] evaluated at once (fewer for large batches)."""
_WINDOW = (-40.0, math.log(60.0))
"""Where a player's integrands live, in `log(t u)`: below, `t u exp(-t u)` is under exp(-40); above, under
60 exp(-60)."""


def _quadrature_nodes(relative: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""
    The nodes of the trapezoidal rule of [`_expected_signed_weight_share`], for each game, as `log t = z - anchor`.

    A player's integrands are negligible unless `log(t u)` is in `_WINDOW`, so only the union of the players' windows
    needs nodes. The players are grouped into clusters whose windows overlap (sorted by logit, a gap wider than the
    window starts a new cluster); each cluster gets its own uniform grid of step `_QUADRATURE_STEP` in coordinates
    relative to its heaviest player (`anchor`: `z = log(t u_anchor)`), from the bottom of that player's window to the
    top of its lightest player's. The integrands are negligible between clusters, so each grid is a trapezoidal rule
    of its own part of the integral and the sum is exact to rounding for any spread of the logits, with at most
    `players * (window / step + 1)` nodes per game (about 360 per cluster) however far apart the clusters are; and no
    node coordinate is larger than a cluster's extent, so logits of any size keep their precision.

    Args:
        relative (`(batch, players)`, float64): logits minus each game's largest, -inf on players that never play.

    Returns:
        z, anchor, weight (each `(batch, nodes)`): node coordinates, the anchor of each node's cluster, and the
        quadrature weight (`_QUADRATURE_STEP`, 0 on the nodes that pad a game's grid to the longest game's).
    """
    batch, players = relative.shape
    device = relative.device
    ordered = relative.sort(-1, descending=True).values  # valid players first
    valid = ordered.isfinite()
    width = _WINDOW[1] - _WINDOW[0]
    starts = valid.clone()
    starts[:, 1:] &= (ordered[:, :-1] - ordered[:, 1:]) > width
    clusters = starts.sum(-1)
    slots = int(clusters.max()) + 1 if batch else 1  # one spare slot collects the players that never play
    cluster = torch.where(valid, starts.long().cumsum(-1) - 1, slots - 1)
    anchor = ordered.new_full((batch, slots), float("-inf")).scatter_reduce(1, cluster, ordered, "amax")
    lightest = ordered.new_full((batch, slots), float("inf")).scatter_reduce(1, cluster, ordered, "amin")
    exists = torch.arange(slots, device=device) < clusters.unsqueeze(-1)
    anchor = torch.where(exists, anchor, 0.0)
    extent = torch.where(exists, anchor - lightest, 0.0)
    count = torch.where(exists, torch.floor((width + extent) / _QUADRATURE_STEP).long() + 1, 0).flatten()
    per_game = count.view(batch, slots).sum(-1)
    nodes = int(per_game.max()) if batch else 0
    node_cluster = torch.repeat_interleave(torch.arange(count.numel(), device=device), count)
    node_index = torch.arange(node_cluster.numel(), device=device)
    step = node_index - (count.cumsum(0) - count)[node_cluster]
    game = node_cluster // slots
    position = node_index - (per_game.cumsum(0) - per_game)[game]
    z, node_anchor, weight = (relative.new_zeros(batch, nodes) for _ in range(3))
    z[game, position] = _WINDOW[0] + _QUADRATURE_STEP * step.to(relative.dtype)
    node_anchor[game, position] = anchor.flatten()[node_cluster]
    weight[game, position] = _QUADRATURE_STEP
    return z, node_anchor, weight


def _expected_signed_weight_share(weight_logits: torch.Tensor) -> torch.Tensor:
    r"""
    `K(i, w) = E_T[s_i(T) [w in T] u_w / sum_{k in T} u_k]` over uniform random sets T of the valid players, with
    `u = exp(logits)` (padded players have logit -inf and never play).

    With `E_R[exp(-t sum_{k in R} u_k)] = prod_k (1 + exp(-t u_k)) / 2` over the players k that R may hold:
    `K(w, w) = 1/2 int u_w exp(-t u_w) prod_{k != w} dt` and, for i != w,
    `K(i, w) = 1/4 int u_w exp(-t u_w) (exp(-t u_i) - 1) prod_{k != i, w} dt`, integrated over `t = exp(y)` with the
    trapezoidal rule in y (the integrands are analytic in a strip of half-width pi/2 around the real axis, hence the
    geometric convergence), on the nodes of [`_quadrature_nodes`]: only where some player's integrand is not
    negligible, so the cost does not grow with the spread of the logits (a player of tiny weight still holds the whole
    share when it is alone, and gets its own nodes). Every factor is formed from logarithms, so no weight underflows.

    Args:
        weight_logits (`(batch, players)`, float64): WTI logits, -inf on padded players.

    Returns:
        `(batch, players, players)` indexed `[i, w]`.
    """
    top = weight_logits.amax(-1, keepdim=True)
    relative = weight_logits - torch.where(top.isfinite(), top, torch.zeros_like(top))  # <= 0; -inf on padded
    z, anchor, weight = _quadrature_nodes(relative)
    nodes_per_game = (weight > 0).sum(-1)  # each game's nodes come first, the padding after
    batch, players = relative.shape
    share = relative.new_zeros(batch, players, players)
    own = relative.new_zeros(batch, players)
    chunk = max(1, min(_NODES_PER_CHUNK, _CELLS_PER_CHUNK // max(1, batch * players)))
    for start in range(0, z.shape[1], chunk):
        # only the games with nodes here: a game with far-apart logits does not make the others integrate padding
        games = (nodes_per_game > start).nonzero().squeeze(-1)
        part = (games.unsqueeze(-1), torch.arange(start, min(start + chunk, z.shape[1]), device=z.device))
        # log(t u_k) = z + (relative_k - anchor): (games, players, nodes), exact however large the logits
        log_tu = z[part].unsqueeze(1) + (relative[games].unsqueeze(-1) - anchor[part].unsqueeze(1))
        tu = torch.exp(log_tu)
        log_half_factor = torch.log1p(torch.exp(-tu)) - math.log(2.0)  # log (1 + exp(-t u_k)) / 2; 0 if padded
        log_others = log_half_factor.sum(1, keepdim=True) - log_half_factor  # the product over k != w, as a log
        # u_w exp(-t u_w) prod_{k != w} (1 + exp(-t u_k)) / 2 times the Jacobian dt = t dy, formed in logs
        present = torch.exp(log_tu - tu + log_others) * weight[part].unsqueeze(1)
        joins = torch.expm1(-tu) * torch.exp(-log_half_factor)  # (exp(-t u_i) - 1) / ((1 + exp(-t u_i)) / 2)
        share.index_add_(0, games, torch.einsum("bip,bwp->biw", joins, present))
        own.index_add_(0, games, present.sum(-1))
    eye = torch.eye(players, dtype=torch.bool, device=relative.device)
    return 0.25 * share * ~eye + 0.5 * torch.diag_embed(own)


def sampled_banzhaf_interaction(
    similarity: torch.Tensor,
    num_samples: int = 1000,
    text_weight_logits: torch.Tensor | None = None,
    video_weight_logits: torch.Tensor | None = None,
    text_mask: torch.Tensor | None = None,
    video_mask: torch.Tensor | None = None,
    logit_scale: float = 1.0,
    generator: torch.Generator | None = None,
    method: str = "incremental",
) -> torch.Tensor:
    r"""
    Unbiased Monte-Carlo estimate of the Banzhaf interaction (Eq. 1) of every (word, frame) pair.

    Each sample draws a random coalition B: every valid word and frame joins independently with probability 1/2. For
    the pair (i, j) its coalition is `C = B \ {i, j}`, which is uniform over the subsets of the other players, and the
    sample's term is `phi(C + {i, j}) + phi(C) - phi(C + {i}) - phi(C + {j})`. The estimate is the mean of the terms
    over `num_samples` samples; its standard error falls like `1 / sqrt(num_samples)`. All pairs share the samples'
    coalitions (common random numbers), which leaves every pair's estimate unbiased.

    Args:
        similarity (`torch.Tensor` of shape `(batch, words, frames)`): token cosine similarities of each pair.
        num_samples (`int`, *optional*, defaults to 1000): coalitions per pair (official: 1000, 100 for labels).
        text_weight_logits (`(batch, words)`), video_weight_logits (`(batch, frames)`), *optional*: WTI weight
            logits; uniform weights if omitted.
        text_mask (`(batch, words)`), video_mask (`(batch, frames)`), *optional*: valid words and frames. Padded
            players never join a coalition and their cells are 0.
        logit_scale (`float`, *optional*, defaults to 1.0): multiplies the similarities (and so the interactions);
            the official code uses 1000.
        generator (`torch.Generator`, *optional*): source of the coalitions, on the device of `similarity`.
        method (`str`, *optional*, defaults to `"incremental"`): how the four coalition values are computed.
            `"direct"` calls [`banzhaf_characteristic_function`] on each of the `4 * words * frames` coalitions of a
            sample (`O((words * frames)^2)` per sample); `"incremental"` computes the same values from the sample's
            coalition B with per-pair corrections (running maxima without one player, weight sums without one player)
            in `O(words * frames)` per sample. Both give the same estimate from the same generator state.

    Returns:
        `torch.Tensor` of shape `(batch, words, frames)`: the estimated interactions, 0 on padded cells.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer; got {num_samples}")
    terms = {"incremental": _incremental_pair_terms, "direct": _direct_pair_terms}
    if method not in terms:
        raise ValueError(f"method must be one of {sorted(terms)}; got {method!r}")
    similarity, text_weight_logits, video_weight_logits, text_mask, video_mask = _prepare_game(
        similarity, text_weight_logits, video_weight_logits, text_mask, video_mask
    )
    similarity = logit_scale * similarity
    batch, words, frames = similarity.shape
    cells = batch * words * frames
    chunk = max(
        1, _CELLS_PER_CHUNK // cells if method == "incremental" else _CELLS_PER_CHUNK // (cells * words * frames)
    )
    total = similarity.new_zeros(batch, words, frames)
    for start in range(0, num_samples, chunk):
        text_coalitions, video_coalitions = sample_coalitions(
            text_mask, video_mask, min(chunk, num_samples - start), generator
        )
        total += terms[method](
            similarity, text_weight_logits, video_weight_logits, text_coalitions, video_coalitions
        ).sum(1)
    return total / num_samples * _cell_mask(text_mask, video_mask)


def sample_coalitions(
    text_mask: torch.Tensor, video_mask: torch.Tensor, num_samples: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""
    Random coalitions: every valid player joins independently with probability 1/2.

    Args:
        text_mask (`torch.BoolTensor` of shape `(batch, words)`), video_mask (`torch.BoolTensor` of shape
            `(batch, frames)`): the valid players.
        num_samples (`int`): coalitions per game.
        generator (`torch.Generator`, *optional*)

    Returns:
        text_coalitions (`(batch, num_samples, words)`), video_coalitions (`(batch, num_samples, frames)`), bool.

    The k-th valid word (frame) of an item takes the k-th word (frame) draw, so the coalitions that a generator state
    gives do not depend on how far the items are padded, nor where the padding sits.
    """
    batch = text_mask.shape[0]
    text_players = max(int(text_mask.sum(1).max()), 1) if batch else 1
    video_players = max(int(video_mask.sum(1).max()), 1) if batch else 1
    draws = (
        torch.rand(batch, num_samples, text_players + video_players, generator=generator, device=text_mask.device)
        < 0.5
    )

    def by_rank(player_draws: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        rank = (mask.long().cumsum(1) - 1).clamp_min(0).clamp_max(player_draws.shape[-1] - 1)
        return player_draws.gather(2, rank.unsqueeze(1).expand(batch, num_samples, mask.shape[1])) & mask.unsqueeze(1)

    return by_rank(draws[..., :text_players], text_mask), by_rank(draws[..., text_players:], video_mask)


def _direct_pair_terms(similarity, text_weight_logits, video_weight_logits, text_coalitions, video_coalitions):
    """The bracket of Eq. 1 by valuing the four coalitions of every pair with [`banzhaf_characteristic_function`]."""
    batch, words, frames = similarity.shape
    word_is_i = torch.eye(words, dtype=torch.bool, device=similarity.device)[:, None, :]
    frame_is_j = torch.eye(frames, dtype=torch.bool, device=similarity.device)[None, :, :]
    base_text = text_coalitions[:, :, None, None, :] & ~word_is_i
    base_video = video_coalitions[:, :, None, None, :] & ~frame_is_j

    def value(with_i: bool, with_j: bool) -> torch.Tensor:
        return banzhaf_characteristic_function(
            similarity[:, None, None, None],
            base_text | word_is_i if with_i else base_text,
            base_video | frame_is_j if with_j else base_video,
            text_weight_logits[:, None, None, None],
            video_weight_logits[:, None, None, None],
        )

    return value(True, True) + value(False, False) - value(True, False) - value(False, True)


def _incremental_pair_terms(similarity, text_weight_logits, video_weight_logits, text_coalitions, video_coalitions):
    """The bracket of Eq. 1 from the two halves of Eq. 12, each evaluated for the four coalitions of every pair."""
    text_weights = _relative_weights(text_weight_logits)
    video_weights = _relative_weights(video_weight_logits)
    word_side = _pooled_half(similarity, text_weights, text_coalitions, video_coalitions)
    frame_side = _pooled_half(similarity.transpose(1, 2), video_weights, video_coalitions, text_coalitions)

    def value(with_i: int, with_j: int) -> torch.Tensor:
        return 0.5 * (word_side[with_i][with_j] + frame_side[with_j][with_i].transpose(-1, -2))

    return value(1, 1) + value(0, 0) - value(1, 0) - value(0, 1)


def _pooled_half(
    similarity: torch.Tensor, row_weights: torch.Tensor, row_coalitions: torch.Tensor, column_coalitions: torch.Tensor
) -> list[list[torch.Tensor]]:
    r"""
    One half of Eq. 12, `sum_r w_r max_c a_rc / sum_r w_r` over the rows r and columns c of a coalition, for the
    coalitions `B \ {i, j}` plus row i (`x = 1`) and / or column j (`y = 1`), for every row i and column j.

    Args:
        similarity (`(batch, rows, columns)`), row_weights (`(batch, rows)`, unnormalised and >= 0),
        row_coalitions (`(batch, samples, rows)`), column_coalitions (`(batch, samples, columns)`).

    Returns:
        `terms[x][y]`, each of shape `(batch, samples, rows, columns)`; 0 where the coalition has no row or no column.
    """
    similarity = similarity.unsqueeze(1)
    columns = similarity.shape[-1]
    present = similarity.masked_fill(~column_coalitions.unsqueeze(-2), torch.finfo(similarity.dtype).min)
    if columns == 1:
        present = torch.cat([present, torch.full_like(present, torch.finfo(similarity.dtype).min)], dim=-1)
    top = present.topk(2, dim=-1)
    is_best = torch.arange(columns, device=similarity.device) == top.indices[..., :1]
    best_without_j = torch.where(is_best, top.values[..., 1:2], top.values[..., :1])
    others = column_coalitions.sum(-1, keepdim=True) - column_coalitions.long()
    has_others = (others > 0).unsqueeze(-2)
    best = [
        torch.where(has_others, best_without_j, 0.0),
        torch.where(has_others, torch.maximum(best_without_j, similarity), similarity),
    ]

    weights = row_weights.unsqueeze(1) * row_coalitions
    weight_without_i = (weights.sum(-1, keepdim=True) - weights).unsqueeze(-1)
    own_weight = row_weights[:, None, :, None]
    terms = [[None, None], [None, None]]
    for with_j in (0, 1):
        contributions = weights.unsqueeze(-1) * best[with_j]
        numerator_without_i = contributions.sum(-2, keepdim=True) - contributions
        own_contribution = own_weight * best[with_j]
        for with_i in (0, 1):
            numerator = numerator_without_i + own_contribution if with_i else numerator_without_i
            denominator = weight_without_i + own_weight if with_i else weight_without_i
            terms[with_i][with_j] = torch.where(
                denominator > 0, numerator / denominator.clamp_min(torch.finfo(similarity.dtype).tiny), 0.0
            )
    return terms


def _relative_weights(logits: torch.Tensor) -> torch.Tensor:
    """`exp(logits - max)` over the valid players (padded logits are -inf): the unnormalised softmax weights."""
    top = logits.amax(-1, keepdim=True)
    top = torch.where(top.isfinite(), top, torch.zeros_like(top))
    return torch.exp(logits - top)


def _prepare_game(similarity, text_weight_logits, video_weight_logits, text_mask, video_mask):
    """Validate shapes, fill the optional inputs, and give padded players -inf weight logits."""
    if similarity.dim() != 3:
        raise ValueError(f"similarity must be (batch, words, frames); got {tuple(similarity.shape)}")
    if not similarity.is_floating_point():
        raise ValueError(f"similarity must be a floating-point tensor; got {similarity.dtype}")
    batch, words, frames = similarity.shape
    expected = {
        "text_weight_logits": (batch, words),
        "video_weight_logits": (batch, frames),
        "text_mask": (batch, words),
        "video_mask": (batch, frames),
    }
    given = {
        "text_weight_logits": text_weight_logits,
        "video_weight_logits": video_weight_logits,
        "text_mask": text_mask,
        "video_mask": video_mask,
    }
    for name, tensor in given.items():
        if tensor is not None and tuple(tensor.shape) != expected[name]:
            raise ValueError(
                f"{name} must be {expected[name]} for similarity {tuple(similarity.shape)}; got {tuple(tensor.shape)}"
            )
    options = dict(dtype=similarity.dtype, device=similarity.device)
    text_mask = (
        torch.ones(batch, words, dtype=torch.bool, device=similarity.device) if text_mask is None else text_mask
    )
    video_mask = (
        torch.ones(batch, frames, dtype=torch.bool, device=similarity.device) if video_mask is None else video_mask
    )
    text_mask, video_mask = text_mask.bool(), video_mask.bool()
    text_weight_logits = torch.zeros(batch, words, **options) if text_weight_logits is None else text_weight_logits
    video_weight_logits = torch.zeros(batch, frames, **options) if video_weight_logits is None else video_weight_logits
    text_weight_logits = text_weight_logits.to(**options).masked_fill(~text_mask, float("-inf"))
    video_weight_logits = video_weight_logits.to(**options).masked_fill(~video_mask, float("-inf"))
    return similarity, text_weight_logits, video_weight_logits, text_mask, video_mask


def _cell_mask(text_mask: torch.Tensor, video_mask: torch.Tensor) -> torch.Tensor:
    return text_mask.unsqueeze(-1) & video_mask.unsqueeze(-2)


__all__ = [
    "banzhaf_characteristic_function",
    "closed_form_banzhaf_interaction",
    "exact_banzhaf_interaction",
    "sample_coalitions",
    "sampled_banzhaf_interaction",
]
