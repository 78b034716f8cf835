"""Exploration slots: a small share of each list goes to items the model is unsure about.

A model trained only on what it already shows never learns about new or rarely seen items.
So a few slots (``explore_share``, see ``docs/evaluation.md`` for the measured price and gain)
go to candidates drawn by a *sampled score*: k items sampled without replacement with
probability proportional to ``exp(z / temperature) / sqrt(1 + positives)``, ``z`` the
model's z-scored score for this user. Uncertain items (few positives) the model does not
rule out come first; seen items, and items already in the list, are never drawn.

The randomness is *counter-based* (:func:`counter_uniform`): a pure function of (seed,
model step, user row). So a user's list depends on the state and the user only, not on
which other users share the micro-batch, and a restarted worker recomputes the same lists.

Two entry points, one distribution and one set of placement rules: :func:`explore_batch`
for the engine (a whole micro-batch's score matrix, vectorised), :func:`mix_exploration`
for one user's list (Gumbel-top-k with a numpy generator). Exploration entries never take
the first ``protect_top`` positions and are spread so that every prefix of the list holds
about its share of them (the API serves prefixes).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from stream_app.blend import row_moments  # noqa: F401 (re-exported)
from stream_app.topn import TopN

EXPLORE = "explore"
"""The ``reason`` of an exploration entry in a published list."""

Entry = tuple[int, float, "str | None"]
"""(item row, score, reason): reason is ``"explore"`` for an exploration slot, else None."""

_MASK64 = (1 << 64) - 1
_GOLDEN_INT = 0x9E3779B97F4A7C15
_GOLDEN = np.uint64(_GOLDEN_INT)
_ROW_MULT = np.uint64(0xD1B54A32D192ED03)         # odd, unrelated to _GOLDEN: rows and
_ONE = np.uint64(1)                                # columns never share a counter in practice
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = (np.uint64(s) for s in (30, 27, 31, 11))


def exploration_log_weights(scores: np.ndarray, interactions: np.ndarray,
                            temperature: float = 1.0) -> np.ndarray:
    """Log sampling weights of candidates: ``score / temperature - log(1 + n) / 2``.

    ``scores``: the model's scores of the candidates for one user (``-inf`` where the item
    must never be shown); ``interactions``: how often each candidate was interacted with.
    The ``1 / sqrt(1 + n)`` factor is the usual uncertainty of a mean estimated from ``n``
    observations: a brand-new item weighs as much as a known one scoring ``log(n) / 2``
    higher. A high temperature flattens the scores towards pure novelty.
    """
    return (np.asarray(scores, np.float64) / temperature
            - 0.5 * np.log1p(np.asarray(interactions, np.float64)))


def explore_slots(n: int, share: float, rng: np.random.Generator) -> int:
    """How many of ``n`` slots explore: ``n * share`` rounded at random (its expectation is
    exact, so 1 in 10 holds for lists of 5 too)."""
    return slot_count(n, share, rng.random())


def slot_count(n: int, share: float, u: float) -> int:
    """:func:`explore_slots` with the uniform ``u`` in [0, 1) given."""
    want = max(0.0, n * share)
    k = int(want)
    return k + int(u < want - k)


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> _S30)
    x = x * _MIX1
    x = x ^ (x >> _S27)
    x = x * _MIX2
    return x ^ (x >> _S31)


def _splitmix_int(x: int) -> int:
    """:func:`_splitmix` on one Python int (the key's fixed part: no numpy call overhead)."""
    x &= _MASK64
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _MASK64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def counter_uniform(seed: int, step: int, rows: np.ndarray, width: int,
                    stream: int = 0) -> np.ndarray:
    """(len(rows) x width) uniforms in (0, 1), each a pure function of
    (seed, step, stream, row, column): one splitmix64 round over a counter, vectorised.

    Unlike one generator per batch, a user's draws do not depend on the other users of the
    batch or on their order, and replaying the same state reproduces them.
    """
    key = _splitmix_int(_splitmix_int(seed * _GOLDEN_INT + stream) + step * _GOLDEN_INT)
    # array arithmetic wraps modulo 2**64 silently (only numpy scalars warn), so no errstate
    x = (np.asarray(rows, np.uint64) * _ROW_MULT + np.uint64(key))[:, None] \
        + np.arange(1, width + 1, dtype=np.uint64) * _GOLDEN
    x = _splitmix(x)
    return ((x >> _S11) | _ONE).astype(np.float64) * (1.0 / 9007199254740992.0)


def slot_positions(length: int, k: int, share: float, protect_top: int,
                   u: Sequence[float]) -> list[int]:
    """Where ``k`` exploration entries go in a list of ``length``: the j-th at a random
    position (uniform ``u[j]``) of the j-th block of ``1 / share`` positions, never among the
    first ``protect_top``. So a list of 20 with share 0.1 has one exploration entry in its
    first 10 and one in its last 10, and the top 10 the API serves keeps its share."""
    if k <= 0:
        return []
    block = 1.0 / share if share > 0 else float(length)
    out, lo_min = [], protect_top
    for j in range(k):
        lo = min(max(lo_min, int(j * block)), length - (k - j))
        hi = min(max(lo + 1, int((j + 1) * block)), length - (k - 1 - j))
        pos = lo + min(hi - lo - 1, int(u[j] * (hi - lo)))
        out.append(pos)
        lo_min = pos + 1
    return out


def merge(exploit: Sequence[Entry], explore: Sequence[Entry], positions: Sequence[int],
          n: int) -> list[Entry]:
    """The exploit list (order kept) with ``explore[j]`` at ``positions[j]``, cut to ``n``."""
    out = list(exploit)
    for pos, entry in sorted(zip(positions, explore), key=lambda pe: pe[0]):
        out.insert(pos, entry)          # ascending: earlier inserts sit before ``pos``
    return out[:n]


def mix_exploration(exploit_rows: np.ndarray, exploit_scores: np.ndarray,
                    candidates: np.ndarray, log_weights: np.ndarray, n: int,
                    rng: np.random.Generator, share: float = 0.1,
                    seen: Collection[int] = (), protect_top: int = 3,
                    candidate_scores: np.ndarray | None = None) -> list[Entry]:
    """The user's list of ``n``: exploit entries, with some slots given to sampled candidates.

    ``exploit_rows``/``exploit_scores``: the best-first list (at least ``n`` long when the
    catalogue allows). ``candidates``/``log_weights``: item rows that may be explored and
    their log weights (:func:`exploration_log_weights`); a candidate the user has ``seen``,
    one already in the list, or one with a non-finite weight is never drawn. Exploration
    entries take :func:`slot_positions` and carry their model score from
    ``candidate_scores`` (else 0.0). With fewer candidates than slots, the exploit list
    fills the rest.
    """
    exploit = [(int(r), float(s), None) for r, s in zip(exploit_rows[:n], exploit_scores[:n])]
    k = min(explore_slots(n, share, rng), max(0, n - protect_top))
    if k == 0 or len(candidates) == 0:
        return exploit
    candidates = np.asarray(candidates)
    log_weights = np.asarray(log_weights, np.float64)
    ok = np.isfinite(log_weights) & ~np.isin(candidates, exploit_rows[:n])
    if len(seen):
        ok &= ~np.isin(candidates, np.fromiter(seen, np.int64, len(seen)))
    pool = np.flatnonzero(ok)
    k = min(k, len(pool))
    if k == 0:
        return exploit
    sampled = log_weights[pool] + rng.gumbel(size=len(pool))
    drawn = pool[np.argsort(-sampled, kind="stable")[:k]]
    scores = (np.zeros(k) if candidate_scores is None
              else np.asarray(candidate_scores, np.float64)[drawn])
    explore = [(int(candidates[d]), round(float(s), 5), EXPLORE) for d, s in zip(drawn, scores)]
    length = min(n, len(exploit) + k)
    return merge(exploit, explore, slot_positions(length, k, share, protect_top,
                                                  rng.random(k)), n)


_BLOCK = 64
"""Columns per block of the two-level inverse CDF in :func:`draw_exploration`."""

Pick = tuple[list[int], list[float], list[int]]
"""One user's list: item rows and scores best-first, and the positions (ascending) of its
exploration slots (empty when it has none)."""


def explore_batch(user_rows: np.ndarray, scores: np.ndarray, moments: tuple[np.ndarray,
                  np.ndarray], picked: Sequence[tuple[np.ndarray, np.ndarray]],
                  interactions: np.ndarray, n: int, share: float, temperature: float,
                  protect_top: int, seed: int, step: int, tries: int = 16
                  ) -> list[list[Entry]]:
    """Every user's list of ``n`` with exploration slots as (row, score, reason) entries,
    from top_n's per-user (rows, scores) pairs: :func:`explore_picks` in the entry form of
    the single-list :func:`mix_exploration`."""
    counts = np.array([len(r) for r, _ in picked], np.int64)
    flat = TopN(np.concatenate([r for r, _ in picked] or [np.empty(0, np.int64)]),
                np.concatenate([v for _, v in picked] or [np.empty(0, np.float32)]),
                np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64), counts)
    out = []
    for rows, sc, explored in explore_picks(user_rows, scores, moments[1], flat,
                                            interactions, n, share, temperature, protect_top,
                                            seed, step, tries):
        why = [None] * len(rows)
        for pos in explored:
            why[pos] = EXPLORE
        out.append(list(zip(rows, sc, why)))
    return out


def explore_picks(user_rows: np.ndarray, scores: np.ndarray, sd: np.ndarray, picked: TopN,
                  interactions: np.ndarray, n: int, share: float, temperature: float,
                  protect_top: int, seed: int, step: int, tries: int = 16,
                  decimals: int | None = None) -> list[Pick]:
    """Every user's list of ``n`` with exploration slots, for a whole micro-batch at once.

    ``scores``: (users x assigned items) after :func:`~stream_app.topn.top_n_flat` masked
    what must never be shown with ``-inf`` (seen, disliked); ``sd``: the per-row standard
    deviation (:func:`~stream_app.blend.row_moments`) of the scores before masking;
    ``picked``: top_n_flat's best-first lists; ``interactions``: positives per assigned
    item row, or per cell (users x columns) when each user's columns are other items (the
    candidate path); ``decimals``: round every score (as published) if given.

    The draw is the same Plackett-Luce sampling without replacement as
    :func:`mix_exploration`'s Gumbel-top-k, by inverse CDF (:func:`draw_exploration`)
    with uniforms from :func:`counter_uniform` keyed by ``seed``, ``step`` and the user
    row, so a user's list does not depend on the other users of the batch.
    """
    plain = picks_of(picked, n, decimals)
    n_users = len(picked)
    k_cap = max(0, n - protect_top)
    if n_users == 0 or k_cap == 0 or share <= 0:
        return plain
    ctl = counter_uniform(seed, step, user_rows, 1 + n + tries, stream=1)
    want = max(0.0, n * share)
    wants = np.minimum(int(want) + (ctl[:, 0] < want - int(want)), k_cap)
    if not wants.any():
        return plain
    drawn = draw_exploration(scores, sd, picked, interactions, n, temperature, wants,
                             ctl[:, 1 + n:])
    users = [b for b, got in enumerate(drawn) if got]
    if not users:
        return plain
    counts = [len(drawn[b]) for b in users]
    flat_rows = [r for b in users for r in drawn[b]]
    extra = scores[np.repeat(users, counts), flat_rows].astype(np.float64)
    extra = (np.round(extra, decimals) if decimals is not None else extra).tolist()
    lengths = np.minimum(n, picked.counts[users].clip(max=n) + counts)
    single = first_slots(lengths, share, protect_top, ctl[users, 1])
    at = 0
    for b, k, length, pos1 in zip(users, counts, lengths.tolist(), single.tolist()):
        rows, sc, _ = plain[b]
        positions = [pos1] if k == 1 else \
            slot_positions(length, k, share, protect_top, ctl[b, 1:1 + n])
        for pos, r, v in zip(positions, drawn[b], extra[at:at + k]):  # ascending positions
            rows.insert(pos, r)
            sc.insert(pos, v)
        at += k
        del rows[n:], sc[n:]
        plain[b] = (rows, sc, [p for p in positions if p < n])
    return plain


def first_slots(lengths: np.ndarray, share: float, protect_top: int,
                u: np.ndarray) -> np.ndarray:
    """:func:`slot_positions` of a single exploration entry (the usual case), for many
    lists at once: ``slot_positions(lengths[b], 1, share, protect_top, [u[b]])[0]``."""
    block = 1.0 / share if share > 0 else lengths.astype(np.float64)
    lo = np.minimum(protect_top, lengths - 1)
    hi = np.minimum(np.maximum(lo + 1, np.floor(block).astype(np.int64)), lengths)
    return lo + np.minimum(hi - lo - 1, (u * (hi - lo)).astype(np.int64))


def picks_of(picked: TopN, n: int, decimals: int | None = None) -> list[Pick]:
    """top_n_flat's lists (cut to ``n``) as picks without exploration slots."""
    vals = picked.vals.astype(np.float64)
    cols = picked.cols.tolist()
    vals = (np.round(vals, decimals) if decimals is not None else vals).tolist()
    out: list[Pick] = []
    for s, c in zip(picked.starts.tolist(), np.minimum(picked.counts, n).tolist()):
        out.append((cols[s:s + c], vals[s:s + c], []))
    return out


def draw_exploration(scores: np.ndarray, sd: np.ndarray, picked: TopN,
                     interactions: np.ndarray, n: int, temperature: float, wants: np.ndarray,
                     uniforms: np.ndarray) -> list[list[int]]:
    """Per user, up to ``wants[b]`` distinct item rows drawn with weight
    ``exp((s - mu) / (T sd)) / sqrt(1 + positives)``, never a masked (``-inf``) or picked one.

    Weights are scaled per row by the row's best score (``picked``'s first), so ``exp``
    never overflows. The inverse CDF is two-level: block sums of ``_BLOCK`` columns and
    their cumulative sums locate a draw's block, a cumulative sum inside that block its
    column. That is one pass over the matrix instead of a full-width ``cumsum`` (3 ns per
    element, the most expensive step of a list before). The j-th uniform of a user is
    used for its j-th try; a repeat or a zero-weight hit tries the next one.
    """
    n_users, n_items = len(picked), interactions.shape[-1]
    nb = -(-n_items // _BLOCK)
    w = np.zeros((n_users, nb * _BLOCK), np.float32)
    body = w[:, :n_items]
    scale = (1.0 / (temperature * sd)).astype(np.float32)
    np.subtract(scores[:, :n_items], picked.best().astype(np.float32)[:, None], out=body)
    body *= scale
    body += (-0.5 * np.log1p(interactions.astype(np.float64))).astype(np.float32)  # per
    # column (n_items,), or per cell (users x n_items) when columns differ by user
    np.exp(body, out=body)
    shown = np.minimum(picked.counts, n)
    if shown.sum():
        keep = np.arange(len(picked.cols)) - np.repeat(picked.starts, picked.counts) < \
            np.repeat(shown, picked.counts)
        w[picked.user_index()[keep], picked.cols[keep]] = 0.0
    blocks = w.reshape(n_users, nb, _BLOCK)
    cum = np.cumsum(blocks.sum(axis=2, dtype=np.float64), axis=1)
    total = cum[:, -1]
    out: list[list[int]] = [[] for _ in range(n_users)]
    need = np.flatnonzero((wants > 0) & (total > 0))
    for t in range(uniforms.shape[1]):
        if len(need) == 0:
            break
        target = uniforms[need, t] * total[need]
        c = cum[need]
        blk = np.minimum((c <= target[:, None]).sum(axis=1), nb - 1)
        base = np.where(blk > 0, c[np.arange(len(need)), np.maximum(blk - 1, 0)], 0.0)
        inside = np.cumsum(blocks[need, blk].astype(np.float64), axis=1) + base[:, None]
        col = blk * _BLOCK + np.minimum((inside <= target[:, None]).sum(axis=1), _BLOCK - 1)
        ok = (col < n_items) & (w[need, np.minimum(col, w.shape[1] - 1)] > 0)
        if t == 0:   # nothing drawn yet, so no repeats: accept in bulk (k = 1 is usual)
            for b, r in zip(need[ok].tolist(), col[ok].tolist()):
                out[b].append(r)
            need = need[~ok | (wants[need] > 1)]
            continue
        still = []
        for b, r, good in zip(need.tolist(), col.tolist(), ok.tolist()):
            got = out[b]
            if good and r not in got:
                got.append(r)
            if len(got) < wants[b]:
                still.append(b)
        need = np.asarray(still, np.int64)
    return out
