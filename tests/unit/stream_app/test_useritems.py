"""The numpy user store keeps each row's items distinct and in order, however it grows."""

from __future__ import annotations

import numpy as np

from stream_app.topn import Cells, top_n
from stream_app.useritems import UserItems, ranges


def _reference(batches):
    rows: dict[int, list[int]] = {}
    for u, i in batches:
        for a, b in zip(u.tolist(), i.tolist()):
            h = rows.setdefault(a, [])
            if b not in h:
                h.append(b)
    return rows


def _batches(seed=0, n_batches=200, rows=60, items=40, size=50):
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, rows, size), rng.integers(0, items, size)) for _ in range(n_batches)]


def test_add_keeps_items_distinct_in_first_seen_order_and_reports_what_it_appended():
    s = UserItems()
    taken, pos = s.add(np.array([3, 3, 1, 3, 3]), np.array([7, 5, 7, 7, 9]))
    assert taken.tolist() == [0, 1, 2, 4]            # the repeated (3, 7) is skipped
    assert pos.tolist() == [0, 1, 0, 2]               # positions in their rows
    taken, pos = s.add(np.array([3, 1]), np.array([5, 2]))   # (3, 5) is already stored
    assert taken.tolist() == [1] and pos.tolist() == [1]
    assert s[3].tolist() == [7, 5, 9] and s[1].tolist() == [7, 2]
    assert s[0].tolist() == [] and s[99].tolist() == []
    assert s.n_items == 5


def test_growth_past_every_capacity_relocates_and_compacts_without_losing_items():
    s = UserItems(arena=16)                           # tiny: every row moves many times
    batches = _batches()
    for u, i in batches:
        s.add(u, i)
    ref = _reference(batches)
    assert {r: s[r].tolist() for r in range(60)} == {r: ref.get(r, []) for r in range(60)}
    assert s.nbytes < 4 * 4 * s.n_items + 8192       # within ~4 int32 slots per item
    hot = UserItems(arena=16)                         # one row growing one item at a time
    for k in range(1000):
        hot.add(np.array([5, k % 7]), np.array([k, k]))
    assert hot[5].tolist() == list(range(1000))


def test_batch_reads_give_cells_last_items_and_membership_without_writing():
    s = UserItems()
    s.add(np.array([0, 0, 0, 2, 2]), np.array([4, 1, 6, 8, 4]))
    rows = np.array([2, 7, 0])
    local, items = s.cells(rows)
    assert list(zip(local.tolist(), items.tolist())) == [(0, 8), (0, 4), (2, 4), (2, 1), (2, 6)]
    local, items = s.last(rows, 2)
    assert list(zip(local.tolist(), items.tolist())) == [(0, 8), (0, 4), (2, 1), (2, 6)]
    assert s.has(np.array([0, 1, 2, 7, -1])).tolist() == [True, False, True, False, False]
    assert s.contains(np.array([0, 0, 2, 9]), np.array([6, 8, 8, 1])).tolist() == \
        [True, False, True, False]
    assert 2 in s and 1 not in s and 7 not in s
    assert s.n_rows == 3                              # reads never write


def test_cells_mask_a_score_matrix_like_per_user_lists():
    s = UserItems()
    s.add(np.array([0, 0, 1]), np.array([0, 2, 4]))
    scores = np.array([[5., 4., 3., 2., 1.], [1., 2., 3., 4., 5.]], np.float32)
    by_cells = top_n(scores.copy(), 3, 5, Cells(*s.cells(np.array([0, 1]))))
    by_lists = top_n(scores.copy(), 3, 5, [{0, 2}, {4}])
    assert [r.tolist() for r, _ in by_cells] == [r.tolist() for r, _ in by_lists] == \
        [[1, 3, 4], [3, 2, 1]]


def test_restart_roundtrip_restores_rows_exactly_and_keeps_growing_the_same_way():
    live = UserItems()
    batches = _batches(seed=4)
    for u, i in batches[:100]:
        live.add(u, i)
    saved = [(r, items.astype(np.int32).tobytes()) for r, items in live.items()]
    again = UserItems()
    again.load([r for r, _ in saved], [np.frombuffer(b, np.int32) for _, b in saved])
    for u, i in batches[100:]:
        assert [x.tolist() for x in live.add(u, i)] == [x.tolist() for x in again.add(u, i)]
    assert [(r, x.tolist()) for r, x in live.items()] == \
        [(r, x.tolist()) for r, x in again.items()]


def test_ranges_matches_the_loop():
    starts, lengths = np.array([5, 0, 10, 3, 7]), np.array([2, 0, 3, 1, 0])
    want = np.concatenate([np.arange(s, s + k) for s, k in zip(starts, lengths)])
    np.testing.assert_array_equal(ranges(starts, lengths), want)
    assert len(ranges(np.array([4]), np.array([0]))) == 0
