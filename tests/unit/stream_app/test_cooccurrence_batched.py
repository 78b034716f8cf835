"""Vectorised co-occurrence updates give the per-positive counts; pruning bounds memory."""

from __future__ import annotations

import numpy as np
import pytest

from stream_app.cooccurrence import CooccurrenceIndex, blend
from stream_app.sparsecounts import SparseCounts, top_per_row


def _one_by_one(users, items, window):
    """The semantics the batched update must keep, one positive at a time: a repeated
    (user, item) counts once; a new positive pairs with the user's last ``window`` earlier
    distinct positives."""
    hist: dict[int, list[int]] = {}
    counts: dict[int, int] = {}
    pairs: dict[tuple[int, int], int] = {}
    for u, i in zip(users, items):
        h = hist.setdefault(u, [])
        if i in h:
            continue
        for j in (h if window is None else h[-window:]):
            pairs[i, j] = pairs.get((i, j), 0) + 1
            pairs[j, i] = pairs.get((j, i), 0) + 1
        counts[i] = counts.get(i, 0) + 1
        h.append(i)
    return hist, counts, pairs


def _stream(seed, n=2500, users=50, items=120):
    rng = np.random.default_rng(seed)
    return rng.integers(0, users, n), (rng.pareto(1.2, n) * 10).astype(int) % items


def _all_pairs(idx: CooccurrenceIndex) -> dict[tuple[int, int], int]:
    m = idx.pairs if not idx.sparse else \
        idx.sparse_counts.rows(np.arange(idx.capacity)).toarray()
    return {(int(a), int(b)): int(m[a, b]) for a, b in zip(*np.nonzero(m))}


@pytest.mark.parametrize("window", [1, 5, None])
@pytest.mark.parametrize("dense_max,hot_len,tail_max", [(10_000, 0, 0), (0, 0, 0), (0, 3, 0),
                                                        (0, 3, 64), (0, 0, 100_000)])
def test_batched_add_equals_adding_positives_one_by_one(window, dense_max, hot_len, tail_max):
    u, i = _stream(seed=window or 0)
    hist, counts, pairs = _one_by_one(u.tolist(), i.tolist(), window)
    idx = CooccurrenceIndex(pair_window=window, capacity=8, dense_max=dense_max,
                            max_neighbours=10_000, merge_min=300)  # merges, no pruning
    if idx.sparse:
        idx.sparse_counts.hot_len = hot_len           # 3: rows are merged early all the time
        idx.sparse_counts.tail_max = tail_max         # 100 k: every pair stays in the tail
    rng = np.random.default_rng(7)
    k = 0
    while k < len(u):                                   # uneven micro-batches
        b = int(rng.integers(1, 400))
        idx.add(u[k:k + b], i[k:k + b])
        k += b
    assert idx.sparse == (dense_max == 0)
    assert {x: int(c) for x, c in enumerate(idx.counts) if c} == counts
    for user, h in hist.items():
        assert idx.positives(user) == h
    assert _all_pairs(idx) == pairs
    for a, b in list(pairs)[:50]:
        assert idx.pair(a, b) == pairs[a, b]
    if hot_len:
        assert idx.sparse_counts.early_merges > 0 and idx.sparse_counts.pruned == 0


def test_order_within_a_batch_and_repeats_count_once():
    idx = CooccurrenceIndex(pair_window=1, capacity=8)
    # user 0: a=1, b=2, a again (ignored), c=3 -> pairs (2,1), (3,2); not (3,1)
    idx.add([0, 0, 0, 0], [1, 2, 1, 3])
    assert idx.positives(0) == [1, 2, 3]
    assert idx.pair(2, 1) == idx.pair(3, 2) == 1 and idx.pair(3, 1) == 0
    idx.add([0, 1, 1], [4, 4, 1])   # pairs with the previous batch's last positive (3)
    assert idx.pair(4, 3) == 1 and idx.pair(4, 1) == 1 and idx.counts[4] == 2


@pytest.mark.parametrize("hot_len,tail_max", [(0, 0), (3, 0), (3, 64)])
def test_sparse_scores_count_pending_deltas_and_match_after_a_merge(hot_len, tail_max):
    u, i = _stream(seed=2)
    dense = CooccurrenceIndex(pair_window=20, capacity=128, dense_max=10_000)
    sparse = CooccurrenceIndex(pair_window=20, capacity=128, dense_max=0,
                               max_neighbours=10_000, merge_min=10**9)   # no full merge
    sparse.sparse_counts.hot_len = hot_len               # 3: early merges into the overlay
    sparse.sparse_counts.tail_max = tail_max             # 64: some pairs wait in the tail
    dense.add(u, i)
    for k in range(0, len(u), 100):
        sparse.add(u[k:k + 100], i[k:k + 100])
    sc = sparse.sparse_counts
    assert sc.base.nnz == 0 and sc.pending_nnz > 0 and (sc.overlay.nnz > 0) == (hot_len > 0)
    users = np.arange(52)
    np.testing.assert_allclose(sparse.scores(users, 130), dense.scores(users, 130), rtol=1e-5)
    for user in range(5):     # one user: the dense product path (times_dense)
        np.testing.assert_allclose(sparse.scores([user], 130), dense.scores([user], 130),
                                   rtol=1e-5)
    np.testing.assert_allclose(sparse.scores_sparse(users, 128).toarray(),
                               dense.scores(users, 128), rtol=1e-5)
    sparse.sparse_counts.merge()
    assert sparse.sparse_counts.pending_nnz == 0
    np.testing.assert_allclose(sparse.scores(users, 130), dense.scores(users, 130), rtol=1e-5)


def test_pruning_keeps_each_items_strongest_neighbours_and_bounds_memory():
    # Item 0 co-occurs with item k (1..60) for 61 - k users: its strongest are 1, 2, 3, ...
    users, items = [], []
    user = 0
    for k in range(1, 61):
        for _ in range(61 - k):
            users += [user, user]
            items += [0, k]
            user += 1
    idx = CooccurrenceIndex(pair_window=5, capacity=64, dense_max=0, max_neighbours=10,
                            merge_min=100)
    idx.add(users, items)
    idx.sparse_counts.merge()
    sc = idx.sparse_counts
    assert sc.pruned > 0
    assert [k for k in range(64) if idx.pair(0, k)] == list(range(1, 11))
    assert [idx.pair(0, k) for k in range(1, 11)] == [60 - k + 1 for k in range(1, 11)]
    assert np.diff(sc.base.indptr).max() <= 10

    u, i = _stream(seed=5, n=20_000, users=400, items=3000)
    bounded = CooccurrenceIndex(pair_window=20, capacity=3000, dense_max=0, max_neighbours=20,
                                merge_min=20_000)
    unbounded = CooccurrenceIndex(pair_window=20, capacity=3000, dense_max=0,
                                  max_neighbours=0, merge_min=20_000)
    for index in (bounded, unbounded):
        for k in range(0, len(u), 1000):
            index.add(u[k:k + 1000], i[k:k + 1000])
        index.sparse_counts.merge()
    assert bounded.sparse_counts.base.nnz <= bounded.capacity * 20
    assert bounded.sparse_counts.nbytes < unbounded.sparse_counts.nbytes / 2


def test_top_per_row_breaks_ties_towards_the_lower_column():
    import scipy.sparse as sp
    m = sp.csr_matrix(np.array([[0, 2, 5, 2, 2, 1], [1, 0, 0, 0, 0, 0]], np.float32))
    pruned, dropped = top_per_row(m, 3)
    assert pruned.toarray().tolist() == [[0, 2, 5, 2, 0, 0], [1, 0, 0, 0, 0, 0]]
    assert dropped == 2
    fractional = sp.csr_matrix(np.array([[0.5, 2.5, 0.25, 1.0]], np.float32))  # general path
    assert top_per_row(fractional, 2)[0].toarray().tolist() == [[0, 2.5, 0, 1.0]]


def test_sparse_counts_grow_without_losing_pairs():
    sc = SparseCounts(4, max_neighbours=0, merge_min=2)
    sc.add(np.array([0, 1]), np.array([1, 0]))
    sc.resize(10)
    sc.add(np.array([9, 0]), np.array([0, 9]))
    assert sc.capacity == 10 and sc.get(0, 1) == sc.get(9, 0) == sc.get(0, 9) == 1


def test_cooccurrence_counts_window_pairs_once_and_scores_asymmetric_cosine():
    idx = CooccurrenceIndex(alpha=0.5, recent=2, pair_window=1, capacity=2)
    idx.add([0, 0, 0, 0, 1, 1], [0, 1, 2, 1, 0, 2])  # repeated (0, 1) counts once
    assert idx.capacity >= 3
    assert idx.counts[:3].tolist() == [2, 1, 2]
    # pair window 1: user 0 pairs (1,0), (2,1); user 1 pairs (2,0)
    assert idx.pairs[0, 1] == idx.pairs[1, 0] == 1 and idx.pairs[0, 2] == 1
    assert idx.pairs[1, 2] == 1 and idx.pairs[0, 0] == 0
    s = idx.scores([1, 7], 4)
    # user 1's recent: items 0 and 2; score(k) = sum_j C[j,k] / (n_j^.5 n_k^.5)
    expect_1 = 1 / np.sqrt(2 * 1) + 1 / np.sqrt(2 * 1)
    assert s[0, 1] == pytest.approx(expect_1)
    assert not s[1].any() and s.shape == (2, 4)


def test_blend_keeps_the_model_ranking_for_users_without_positives():
    model = np.array([[3.0, 1.0, 2.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    cooc = np.array([[0.0, 0.0, 0.0, 0.0], [5.0, 0.0, 0.0, 0.0]])
    out = blend(model, cooc, 0.9, valid=4)
    assert np.argsort(-out[0]).tolist() == [0, 2, 1, 3]
    assert np.argmax(out[1]) == 0
    assert blend(model, cooc, 0.0, 4) is model
