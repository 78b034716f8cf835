"""Exploration slots: a few marked, reproducible, never-seen items in each list."""

from __future__ import annotations

import numpy as np

from stream_app.explore import (
    EXPLORE,
    exploration_log_weights,
    explore_slots,
    mix_exploration,
)

N_ITEMS = 200


def setup(seed: int = 0):
    """One user's scores over a catalogue, their exploit top-20 and the candidates."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=N_ITEMS)
    counts = rng.integers(0, 500, size=N_ITEMS)
    counts[150:] = 0                                   # new items: never interacted with
    seen = set(range(0, 40, 2))
    scores[list(seen)] = -np.inf                       # what top_n leaves for seen items
    order = np.argsort(-scores)[:20]
    candidates = np.flatnonzero(counts < 20)           # few interactions
    return scores, counts, seen, order, candidates


def mixed(seed: int, n: int = 10, share: float = 0.1, **kw):
    scores, counts, seen, order, cand = setup()
    lw = exploration_log_weights(scores[cand], counts[cand])
    return mix_exploration(order, scores[order], cand, lw, n, np.random.default_rng(seed),
                           share=share, seen=seen, candidate_scores=scores[cand], **kw)


def test_one_slot_in_ten_explores_marked_and_never_seen_or_repeated():
    scores, _, seen, order, cand = setup()
    for seed in range(50):
        lst = mixed(seed)
        assert len(lst) == 10
        explore = [(r, s) for r, s, why in lst if why == EXPLORE]
        assert len(explore) == 1
        (row, score), = explore
        assert row in set(cand.tolist()) and row not in seen
        assert row not in set(order[:10].tolist())
        assert score == round(float(scores[row]), 5)   # the honest model score
        assert len({r for r, _, _ in lst}) == 10
        assert all(why is None for _, _, why in lst[:3])   # the head stays the best items
        exploit = [r for r, _, why in lst if why is None]
        assert exploit == order[:9].tolist()           # exploit order kept, last one yields


def test_same_seed_same_list_and_seeds_differ():
    assert mixed(7) == mixed(7)
    assert len({tuple(mixed(s)) for s in range(20)}) > 5


def test_share_scales_with_list_length_and_rounds_at_random():
    assert sum(why == EXPLORE for _, _, why in mixed(1, n=20)) == 2
    rng = np.random.default_rng(0)
    mean = np.mean([explore_slots(5, 0.1, rng) for _ in range(4000)])
    assert 0.45 < mean < 0.55                          # 1 in 10 on average, even for n=5
    assert mixed(3, share=0.0) == [(int(r), float(s), None) for r, s in
                                   zip(setup()[3][:10], setup()[0][setup()[3][:10]])]


def test_uncertain_items_are_drawn_more_often():
    scores = np.zeros(2)
    lw = exploration_log_weights(scores, np.array([0, 99]))   # new vs well-known, same score
    rng = np.random.default_rng(0)
    wins = sum(mix_exploration(np.array([10]), np.array([1.0]), np.array([0, 1]), lw, 2, rng,
                               share=0.5, protect_top=1)[1][0] == 0 for _ in range(2000))
    assert 0.85 < wins / 2000 < 0.95                   # 1/sqrt(1) vs 1/sqrt(100): 10:1


def test_no_usable_candidate_leaves_the_exploit_list():
    scores, _, seen, order, _ = setup()
    cand = np.array(sorted(seen))                      # all seen
    lst = mix_exploration(order, scores[order], cand, np.zeros(len(cand)), 10,
                          np.random.default_rng(0), seen=seen)
    assert [r for r, _, _ in lst] == order[:10].tolist()
    lst = mix_exploration(order, scores[order], np.array([199]), np.array([-np.inf]), 10,
                          np.random.default_rng(0))
    assert all(why is None for _, _, why in lst)


def test_short_catalogue_still_gets_its_exploration_slot():
    lst = mix_exploration(np.array([5, 6]), np.array([2.0, 1.0]), np.array([7, 8]),
                          np.zeros(2), 10, np.random.default_rng(0), share=0.1, protect_top=1)
    assert len(lst) == 3 and lst[0][0] == 5
    assert sum(why == EXPLORE for _, _, why in lst) == 1
