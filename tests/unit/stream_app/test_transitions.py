"""Transition counts (the order of users' positives): the sequential rules' T, kept
incrementally per micro-batch, rebuilt from stored histories, dense or sparse alike, and
blended into the engine's exact and candidate lists."""

from __future__ import annotations

import numpy as np
import pytest

from stream_app.blend import blend_terms_into
from stream_app.cooccurrence import CooccurrenceIndex
from stream_app.engine import Engine
from stream_app.transitions import TransitionCounts, gaps_of
from streamrec.errors import ConfigError
from streamrec.schema import validate_interaction
from streamrec.settings import Settings


def _stream(seed: int = 3, n: int = 3000, users: int = 80, items: int = 300):
    rng = np.random.default_rng(seed)
    return rng.integers(0, users, n), (rng.pareto(1.5, n) * 20).astype(int) % items


def reference_T(u: np.ndarray, i: np.ndarray, n_items: int, window: int = 5) -> np.ndarray:
    """The sequential rules by hand: distinct positives per user in order, 1/gap."""
    T = np.zeros((n_items, n_items))
    seqs: dict[int, list[int]] = {}
    for a, b in zip(u.tolist(), i.tolist()):
        seq = seqs.setdefault(a, [])
        if b in seq:
            continue
        for gap, prev in enumerate(reversed(seq[-window:]), 1):
            T[prev, b] += 1.0 / gap
        seq.append(b)
    return T


def index(dense_max: int = 10_000, **kw) -> CooccurrenceIndex:
    return CooccurrenceIndex(pair_window=20, capacity=16, dense_max=dense_max,
                             transitions=(5, 0.6, 5), **kw)


def test_counts_are_the_sequential_rules_whatever_the_micro_batches():
    u, i = _stream()
    want = reference_T(u, i, 300)
    for step in (1, 7, 97, 3000):
        idx = index()
        for k in range(0, len(u), step):
            idx.add(u[k:k + step], i[k:k + step])
        got = np.array([[idx.transitions.get(a, b) for b in range(300)] for a in range(300)])
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_restart_rebuilds_the_same_counts_from_stored_positives():
    u, i = _stream(seed=4)
    live = index()
    for k in range(0, len(u), 50):
        live.add(u[k:k + 50], i[k:k + 50])
    restored = index()
    restored.load_histories({row: h for row, h in live.history.items()})
    users = np.arange(80)
    np.testing.assert_array_equal(restored.transition_scores(users, 300),
                                  live.transition_scores(users, 300))


def test_sparse_counts_match_dense_and_scores_weight_recent_positives():
    u, i = _stream(seed=5)
    dense, sparse = index(), index(dense_max=8, max_neighbours=0)
    for k in range(0, len(u), 97):
        dense.add(u[k:k + 97], i[k:k + 97])
        sparse.add(u[k:k + 97], i[k:k + 97])
    assert not dense.transitions.sparse and sparse.transitions.sparse
    users = np.arange(80)
    want = dense.transition_scores(users, 300)
    np.testing.assert_allclose(sparse.transition_scores(users, 300), want, rtol=1e-5)
    csr = sparse.transition_scores(users, 300, sparse=True)
    np.testing.assert_allclose(csr.toarray(), want, rtol=1e-5)
    T = reference_T(u, i, 300)
    last = dense.history[7].tolist()[-5:][::-1]           # newest first
    by_hand = sum(0.6 ** k * T[a] for k, a in enumerate(last))
    np.testing.assert_allclose(want[7], by_hand, rtol=1e-5)


def test_gaps_count_back_from_each_new_positive():
    assert gaps_of(np.array([0, 0, 0, 1, 2, 2]), 3).tolist() == [3, 2, 1, 1, 2, 1]


def test_whole_number_storage_for_the_window():
    assert TransitionCounts(window=5).scale == 60
    with pytest.raises(ValueError):
        TransitionCounts(window=0)


def test_blend_of_terms_is_the_weighted_sum_of_z_scores():
    rng = np.random.default_rng(0)
    m, c, t = (rng.normal(size=(4, 50)).astype(np.float32) for _ in range(3))
    z = lambda x: (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)  # noqa
    want = 0.5 * z(m) + 0.3 * z(c) + 0.2 * z(t)
    got = blend_terms_into(m.copy(), [(c.copy(), 0.3), (t.copy(), 0.2)])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


S = Settings(padding_min=20, no_components=8, epochs_per_batch=2, num_threads=1,
             explore_share=0.0, ann_min_items=0, cooc_weight=0.2, trans_weight=0.3)


def engine(**kw) -> Engine:
    """Users walk a fixed item order (i0, i1, ... in blocks): what follows is learnable."""
    e = Engine(S.model_copy(update=kw))
    rng = np.random.default_rng(0)
    events = []
    for u in range(60):
        start = int(rng.integers(0, 380))
        events += [validate_interaction({"user_id": f"u{u}", "item_id": f"i{start + k}"})
                   for k in range(12)]
    for k in range(0, len(events), 97):
        e.apply_interactions(events[k:k + 97])
    return e


def test_engine_lists_put_what_usually_comes_next_first():
    e = engine()
    row = e.users.get("u0")
    last = e.items.id_of(int(e.cooc.positives(row)[-1]))
    nxt = e.items.get(f"i{int(last[1:]) + 1}")
    if nxt is None:
        pytest.skip("the walk of u0 ends at the catalogue's end")
    with_t = e.lists(np.array([row]), 5)[0][0]
    assert nxt in with_t[:2]


def test_candidate_path_with_transitions_gives_the_exact_lists():
    rows = np.arange(60)
    want = engine().lists(rows, 10)
    got = engine(ann_min_items=1, ann_candidates=10_000).lists(rows, 10)
    for (wr, ws, _), (gr, gs, _) in zip(want, got):
        assert wr == gr
        np.testing.assert_allclose(gs, ws, rtol=1e-3, atol=1e-3)


def test_engine_refuses_blend_weights_above_one():
    with pytest.raises(ConfigError):
        Engine(S.model_copy(update={"cooc_weight": 0.6, "trans_weight": 0.5}))


def test_candidate_blend_moments_are_the_exact_catalogue_moments():
    """Exploration samples by z-score: the candidate path's per-user standard deviation of
    the three-way blend equals the exact path's over every item."""
    from stream_app.candidates import score_union, union_rows

    e = engine()
    rows = np.arange(20)
    valid = len(e.items)
    exact = e.score_rows(rows)[:, :valid]
    i_bias, i_emb = e.model.item_representations()
    _, u_emb = e.model.user_representations(rows)
    every = np.tile(np.arange(valid), (len(rows), 1))
    items, void = union_rows([every])
    terms = [(e.cooc.scores_sparse(rows, valid), 0.2),
             (e.cooc.transition_scores(rows, valid, sparse=True), 0.3)]
    from stream_app.candidates import ItemMoments
    scores, sd = score_union(u_emb, items, void, i_emb, i_bias,
                             ItemMoments.of(i_emb, i_bias, valid), terms, valid)
    np.testing.assert_allclose(scores, exact, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(sd[:, 0], exact.std(axis=1), rtol=1e-3)


def test_a_checkpoint_restores_the_transitions_from_the_stored_positives(tmp_path):
    """No new state: the store's per-user positives (``hist:``, in event order) rebuild the
    transition counts on load, as they rebuild the co-occurrence counts."""
    from stream_app.store import WorkerStore

    e = engine()
    store = WorkerStore(tmp_path)
    try:
        store.checkpoint(e)
        restored, _ = store.load(e.settings)
    finally:
        store.close()
    rows = np.arange(60)
    valid = len(e.items)
    np.testing.assert_array_equal(restored.cooc.transition_scores(rows, valid),
                                  e.cooc.transition_scores(rows, valid))
    assert [p[0] for p in restored.lists(rows, 10)] == [p[0] for p in e.lists(rows, 10)]


def test_sparse_transitions_in_the_engine_give_the_dense_lists():
    rows = np.arange(60)
    dense, sparse = engine(), engine(trans_dense_items=8)
    assert not dense.cooc.transitions.sparse and sparse.cooc.transitions.sparse
    for (wr, ws, _), (gr, gs, _) in zip(dense.lists(rows, 10), sparse.lists(rows, 10)):
        assert wr == gr
        np.testing.assert_allclose(gs, ws, rtol=1e-5, atol=1e-5)
