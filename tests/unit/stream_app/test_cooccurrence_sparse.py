"""Sparse co-occurrence rows give the dense matrix's counts and scores."""

from __future__ import annotations

import numpy as np

from stream_app.cooccurrence import CooccurrenceIndex


def _stream(seed: int = 3, n: int = 3000, users: int = 80, items: int = 300):
    rng = np.random.default_rng(seed)
    return rng.integers(0, users, n), (rng.pareto(1.5, n) * 20).astype(int) % items


def test_sparse_rows_match_the_dense_matrix() -> None:
    u, i = _stream()
    dense = CooccurrenceIndex(pair_window=20, capacity=16, dense_max=10_000)
    sparse = CooccurrenceIndex(pair_window=20, capacity=16, dense_max=8)  # sparse from the start
    for k in range(0, len(u), 97):  # micro-batches, as the engine feeds it
        dense.add(u[k:k + 97], i[k:k + 97])
        sparse.add(u[k:k + 97], i[k:k + 97])
    assert not dense.sparse and sparse.sparse
    for a, b in [(0, 1), (3, 7), (1, 250), (299, 0)]:
        assert dense.pair(a, b) == sparse.pair(a, b)
    users = list(range(80))
    np.testing.assert_allclose(sparse.scores(users, 300), dense.scores(users, 300), rtol=1e-5)


def test_a_large_catalogue_costs_only_its_pairs() -> None:
    idx = CooccurrenceIndex(pair_window=20, capacity=100_000)  # dense would be 40 GB
    rng = np.random.default_rng(1)
    idx.add(rng.integers(0, 500, 5000), rng.integers(0, 100_000, 5000))
    assert idx.sparse and idx.nbytes < 50 * 2**20
    assert idx.scores([0, 1, 2], 100_000).shape == (3, 100_000)


def test_growing_past_dense_max_switches_to_sparse_without_losing_counts() -> None:
    u, i = _stream(seed=5)
    ref = CooccurrenceIndex(pair_window=None, capacity=8, dense_max=10_000)
    idx = CooccurrenceIndex(pair_window=None, capacity=8, dense_max=100)
    half = len(u) // 2
    for index in (ref, idx):
        index.add(u[:half], i[:half])
    assert not idx.sparse or idx.capacity > 100
    for index in (ref, idx):
        index.add(u[half:], i[half:])
    assert idx.sparse
    np.testing.assert_allclose(idx.scores(range(80), 300), ref.scores(range(80), 300), rtol=1e-5)


def test_sparse_restart_rebuilds_the_same_counts() -> None:
    u, i = _stream(seed=9)
    live = CooccurrenceIndex(pair_window=20, capacity=8, dense_max=8)
    live.add(u, i)
    again = CooccurrenceIndex(pair_window=20, capacity=8, dense_max=8)
    again.load_histories({user: list(h) for user, h in live.history.items()})
    np.testing.assert_allclose(again.scores(range(80), 300), live.scores(range(80), 300),
                               rtol=1e-6)
