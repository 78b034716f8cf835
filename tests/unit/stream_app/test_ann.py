import numpy as np
import pytest

from stream_app.ann import IndexStateError, IVFIndex, default_lists
from stream_app.topn import top_n


def clustered(n_items=6000, dim=12, n_users=96, clusters=40, seed=0):
    """Items around well separated centres, users near centres: an easy catalogue."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32) * 3
    emb = (centres[rng.integers(0, clusters, n_items)]
           + 0.4 * rng.standard_normal((n_items, dim))).astype(np.float32)
    bias = (0.2 * rng.standard_normal(n_items)).astype(np.float32)
    users = (centres[rng.integers(0, clusters, n_users)]
             + 0.4 * rng.standard_normal((n_users, dim))).astype(np.float32)
    return emb, bias, users


def exact(users, emb, bias, n, n_valid, exclude):
    return top_n(users @ emb.T + bias, n, n_valid, exclude)


def recall(got, want):
    return np.mean([len(np.intersect1d(g[0], w[0])) / len(w[0]) for g, w in zip(got, want)])


def test_all_items_as_candidates_is_the_exact_top_n():
    emb, bias, users = clustered()
    rng = np.random.default_rng(1)
    exclude = [set(rng.integers(0, len(emb), 15).tolist()) for _ in users]
    index = IVFIndex(seed=0).build(emb, bias)
    got = index.search(users, emb, bias, 20, len(emb), exclude, n_candidates=len(emb))
    want = exact(users, emb, bias, 20, len(emb), exclude)
    assert recall(got, want) == 1.0
    for (g_rows, g_sc), (w_rows, w_sc) in zip(got, want):
        np.testing.assert_array_equal(g_rows, w_rows)           # same order, best first
        np.testing.assert_allclose(g_sc, w_sc, rtol=1e-5, atol=1e-5)


def test_high_recall_with_few_candidates_on_clustered_items():
    emb, bias, users = clustered()
    index = IVFIndex(seed=0).build(emb, bias)
    got = index.search(users, emb, bias, 20, len(emb), None, n_candidates=len(emb) // 20)
    assert recall(got, exact(users, emb, bias, 20, len(emb), [()] * len(users))) >= 0.95
    width = index.candidates(users, len(emb) // 20).shape[1]
    assert width < len(emb) // 4                                # it did not scan everything


def test_never_returns_dummy_rows_or_excluded_items():
    emb, bias, users = clustered(n_items=3000)
    n_valid = 2500
    emb[n_valid:] *= 50.0                  # dummy rows would win every list if returned
    index = IVFIndex(seed=0).build(emb, bias)                  # indexed *with* the dummies
    best = exact(users, emb, bias, 30, n_valid, [()] * len(users))
    exclude = [set(rows[:10].tolist()) for rows, _ in best]    # each user's 10 favourites
    for c in (200, 1000, 3000):
        got = index.search(users, emb, bias, 20, n_valid, exclude, n_candidates=c)
        for (rows, scores), ex in zip(got, exclude):
            assert len(rows) == 20 and (rows < n_valid).all()
            assert not set(rows.tolist()) & ex
            assert np.all(np.diff(scores) <= 0)
        assert (index.candidates(users, c, n_valid) < n_valid).all()


def test_fewer_valid_items_than_n_returns_them_all():
    emb, bias, users = clustered(n_items=300, n_users=4)
    index = IVFIndex(seed=0).build(emb, bias, n_items=10)
    got = index.search(users, emb, bias, 20, 10, [{3}] * 4)   # default: all 10
    assert [sorted(r.tolist()) for r, _ in got] == [[0, 1, 2, 4, 5, 6, 7, 8, 9]] * 4


def test_new_item_is_findable_before_and_after_update():
    emb, bias, users = clustered(n_items=4001)
    n_old = 4000
    index = IVFIndex(seed=0).build(emb, bias, n_items=n_old)
    target = users[0]
    emb[n_old] = 3 * target                                     # the best item for user 0
    # Not indexed yet, but valid: every query scores it.
    rows, _ = index.search(users[:1], emb, bias, 5, n_old + 1, None, n_candidates=200)[0]
    assert rows[0] == n_old
    index.update([n_old], emb, bias)
    assert index.n_indexed == n_old + 1 and index.stale_fraction > 0
    rows, _ = index.search(users[:1], emb, bias, 5, n_old + 1, None, n_candidates=200)[0]
    assert rows[0] == n_old
    assert index.candidates(users[:1], 200, n_old + 1)[0].tolist().count(n_old) == 1


def test_update_moves_a_drifted_item_to_where_queries_look():
    emb, bias, users = clustered()
    index = IVFIndex(seed=0).build(emb, bias)
    mover = 17
    emb[mover] = 3 * users[5]                                   # jumped to another region
    index.update([mover], emb, bias)
    rows, _ = index.search(users[5:6], emb, bias, 3, len(emb), None, n_candidates=300)[0]
    assert rows[0] == mover


def test_update_of_a_row_past_the_end_indexes_the_gap_too():
    emb, bias, _ = clustered(n_items=500)
    index = IVFIndex(seed=0).build(emb, bias, n_items=400)
    index.update([450], emb, bias)
    assert index.n_indexed == 451
    assert index.list_sizes().sum() == 451
    with pytest.raises(IndexStateError):
        index.update([600], emb, bias)


def test_deterministic_for_a_seed():
    emb, bias, users = clustered()
    a = IVFIndex(seed=3).build(emb, bias)
    b = IVFIndex(seed=3).build(emb, bias)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    np.testing.assert_array_equal(a.assign, b.assign)
    np.testing.assert_array_equal(a.candidates(users, 300), b.candidates(users, 300))
    c = IVFIndex(seed=4).build(emb, bias)
    assert not np.array_equal(a.centroids, c.centroids)


def test_list_count_default_and_rebuild_policy():
    emb, bias, _ = clustered(n_items=3000)
    index = IVFIndex(seed=0, rebuild_age_s=60).build(emb, bias, n_items=2000)
    assert index.n_lists == default_lists(2000) == 179
    soon = index.built_at + 1
    assert not index.needs_rebuild(emb, bias, now=soon)
    assert index.needs_rebuild(now=index.built_at + 61)                 # old
    index.update(np.arange(2000, 2600), emb, bias)
    assert index.growth == 0.3 and index.needs_rebuild(now=soon)        # grew 30 %
    index.rebuild(emb, bias)
    assert index.stale_fraction == 0 and not index.needs_rebuild(emb, bias, now=soon)
    rng = np.random.default_rng(5)
    moved = emb + rng.permutation(emb)                                  # every row drifted
    assert index.misassigned(moved, bias) > 0.5 and index.needs_rebuild(moved, bias, now=soon)


def test_unbuilt_index_says_what_to_do():
    emb, bias, users = clustered(n_items=100)
    with pytest.raises(IndexStateError, match="build"):
        IVFIndex().search(users, emb, bias, 5, 100)
    with pytest.raises(IndexStateError, match="0 items"):
        IVFIndex().build(emb, bias, n_items=0)
