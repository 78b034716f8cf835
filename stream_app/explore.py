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
    with np.errstate(over="ignore"):
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


def row_moments(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row mean and standard deviation (columns), taken *before* top-N masks scores
    with ``-inf``: exploration z-scores with them, so its temperature means the same
    whether the scores are LightFM's or a blend."""
    m = scores.shape[1]
    mu = scores.sum(axis=1, keepdims=True, dtype=np.float64) / m
    var = np.einsum("ij,ij->i", scores, scores, dtype=np.float64)[:, None] / m - mu * mu
    sd = np.sqrt(np.maximum(var, 0.0))
    sd[~(sd > 1e-12)] = 1.0
    return mu.astype(scores.dtype), sd.astype(scores.dtype)


def explore_batch(user_rows: np.ndarray, scores: np.ndarray, moments: tuple[np.ndarray,
                  np.ndarray], picked: Sequence[tuple[np.ndarray, np.ndarray]],
                  interactions: np.ndarray, n: int, share: float, temperature: float,
                  protect_top: int, seed: int, step: int, tries: int = 16
                  ) -> list[list[Entry]]:
    """Every user's list of ``n`` with exploration slots, for a whole micro-batch at once.

    ``scores``: (users x item capacity) after :func:`~stream_app.topn.top_n` masked what
    must never be shown with ``-inf`` (seen, disliked, unassigned); ``moments``:
    :func:`row_moments` of the assigned columns before masking; ``picked``: top_n's
    best-first (rows, scores) per user; ``interactions``: positives per assigned item row.

    The draw is the same Plackett-Luce sampling without replacement as
    :func:`mix_exploration`'s Gumbel-top-k, but by inverse CDF: one ``exp`` and one
    ``cumsum`` over the matrix and a handful of uniforms per user (a repeat is redrawn),
    instead of one random number per (user, item). The uniforms come from
    :func:`counter_uniform` keyed by ``seed``, ``step`` and the user row.
    """
    n_users = len(picked)
    exploit = [[(int(r), float(s), None) for r, s in zip(rows[:n].tolist(), sc[:n].tolist())]
               for rows, sc in picked]
    k_cap = max(0, n - protect_top)
    if n_users == 0 or k_cap == 0 or share <= 0:
        return exploit
    n_items = len(interactions)
    ctl = counter_uniform(seed, step, user_rows, 1 + n + tries, stream=1)
    want = max(0.0, n * share)
    wants = np.minimum(int(want) + (ctl[:, 0] < want - int(want)), k_cap)
    if not wants.any():
        return exploit
    # weight = exp((s - mu) / (T sd)) / sqrt(1 + positives), scaled per row by the row's best
    # so exp never overflows: exp((s - max s) / (T sd)) * (1 + positives) ** -0.5.
    # Masked entries (-inf) get weight 0; so do the exploit picks, set below.
    _, sd = moments
    w = scores[:, :n_items].copy()
    top = w.max(axis=1, keepdims=True)
    top[~np.isfinite(top)] = 0.0
    w -= top
    w *= (1.0 / (temperature * sd)).astype(w.dtype)
    np.exp(w, out=w)
    w *= (1.0 + interactions.astype(w.dtype)) ** -0.5
    lens = [min(n, len(rows)) for rows, _ in picked]
    if sum(lens):
        w[np.repeat(np.arange(n_users), lens),
          np.concatenate([rows[:n] for rows, _ in picked])] = 0.0
    cdf = np.cumsum(w, axis=1, out=w)    # in place: one extra matrix; float32: 3x faster
    out = []
    for b in range(n_users):
        k, total = int(wants[b]), cdf[b, -1]
        if k == 0 or not total > 0:
            out.append(exploit[b])
            continue
        drawn: list[int] = []
        for u in ctl[b, 1 + n:]:
            r = min(int(np.searchsorted(cdf[b], u * total, side="right")), n_items - 1)
            if r not in drawn and cdf[b, r] > (cdf[b, r - 1] if r else 0.0):  # weight > 0
                drawn.append(r)
                if len(drawn) == k:
                    break
        if not drawn:
            out.append(exploit[b])
            continue
        explore = [(r, float(scores[b, r]), EXPLORE) for r in drawn]
        length = min(n, len(exploit[b]) + len(drawn))
        pos = slot_positions(length, len(drawn), share, protect_top, ctl[b, 1:1 + n])
        out.append(merge(exploit[b], explore, pos, n))
    return out
