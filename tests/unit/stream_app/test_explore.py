"""Exploration slots: a few marked, reproducible, never-seen items in each list, in the
engine's published lists, and the trade-off curve that measures them."""

from __future__ import annotations

import copy

import numpy as np
import orjson

from stream_app.engine import Engine
from stream_app.explore import (
    EXPLORE,
    counter_uniform,
    exploration_log_weights,
    explore_batch,
    explore_slots,
    mix_exploration,
    slot_positions,
)
from streamrec.schema import validate_interaction
from streamrec.settings import Settings

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


# --------------------------------------------------------------------------- in the engine

S = Settings(padding_min=20, no_components=8, epochs_per_batch=2, num_threads=1,
             explore_share=0.2, explore_protect_top=2)


def engine(share: float = 0.2) -> Engine:
    """Two taste groups over 60 items, items 40-59 rarely liked."""
    e = Engine(S.model_copy(update={"explore_share": share}))
    rng = np.random.default_rng(1)
    events = [validate_interaction({"user_id": f"u{u}", "item_id": f"i{int(i)}"})
              for u in range(20) for i in rng.choice(20, 8, replace=False) + 20 * (u % 2)]
    events += [validate_interaction({"user_id": "u0", "item_id": f"i{k}"}) for k in (40, 41)]
    e.apply_interactions(events)
    return e


def test_published_lists_mark_exploration_slots_and_never_show_seen_items():
    e = engine()
    lists = dict(e.lists_for_rows(range(20), 10))
    plain_engine = _without_exploration(e)
    for row in range(20):
        uid = e.users.id_of(row)
        doc = orjson.loads(lists[uid])
        items = [it["item_id"] for it in doc["items"]]
        assert len(items) == 10 == len(set(items))
        assert not set(items) & {e.items.id_of(r) for r in e.seen[row]}
        reasons = [it.get("reason") for it in doc["items"]]
        assert set(reasons) <= {None, "explore"} and reasons[:2] == [None, None]
        assert reasons.count("explore") == 2                 # 0.2 of 10, both after the top 2
        plain = [i for i, *_ in plain_engine.recommend_rows(np.array([row]), 10)[0]]
        assert [i for i, r in zip(items, reasons) if r is None] == plain[:8]   # order kept


def _without_exploration(e: Engine) -> Engine:
    """The same state ranking without exploration (a shallow copy with other settings)."""
    e2 = copy.copy(e)
    e2.settings = e.settings.model_copy(update={"explore_share": 0.0})
    return e2


def test_exploration_off_publishes_the_plain_ranking_without_reasons():
    e = engine(share=0.0)
    for _, raw in e.lists_for_rows(range(20), 10):
        assert all("reason" not in it for it in orjson.loads(raw)["items"])


def test_a_users_draw_depends_on_the_state_and_the_user_only():
    e = engine()
    alone = e.recommend_rows(np.array([7]), 10)[0]
    assert e.recommend_rows(np.array([3, 7, 11]), 10)[1] == alone       # batch-independent
    assert e.recommend_rows(np.array([7]), 10)[0] == alone              # reproducible
    before = [e.recommend_rows(np.array([r]), 10)[0] for r in range(20)]
    e.apply_interactions([validate_interaction({"user_id": "u19", "item_id": "i59"})])
    after = [e.recommend_rows(np.array([r]), 10)[0] for r in range(20)]
    assert before != after                                  # the draw moves with the model


def test_counter_uniforms_are_reproducible_per_row_and_uniform():
    a = counter_uniform(42, 3, np.array([5, 9]), 1000)
    assert np.array_equal(a[1], counter_uniform(42, 3, np.array([9]), 1000)[0])
    assert not np.array_equal(a[0], a[1])
    assert not np.array_equal(a, counter_uniform(42, 4, np.array([5, 9]), 1000))
    assert not np.array_equal(a, counter_uniform(43, 3, np.array([5, 9]), 1000))
    big = counter_uniform(0, 0, np.arange(50), 2000).ravel()
    assert 0 < big.min() and big.max() < 1
    assert np.histogram(big, 10, (0, 1))[0].std() / (len(big) / 10) < 0.02


def test_batch_draw_favours_uncertain_items_like_the_single_list_draw():
    scores = np.array([[5.0, 0.0, 0.0]])                   # item 0 is the exploit pick
    wins = 0
    for step in range(3000):
        s = scores.copy()
        out = explore_batch(np.array([0]), s, (np.zeros((1, 1)), np.ones((1, 1))),
                            [(np.array([0]), np.array([5.0]))], np.array([50.0, 0.0, 99.0]),
                            2, 0.5, 1.0, 1, seed=1, step=step)[0]
        assert out[0] == (0, 5.0, None) and out[1][2] == EXPLORE
        wins += out[1][0] == 1
    assert 0.85 < wins / 3000 < 0.95                       # 1/sqrt(1) vs 1/sqrt(100): 10:1


def test_every_prefix_keeps_its_share_of_exploration_slots():
    for u in np.linspace(0.01, 0.99, 7):
        first, second = slot_positions(20, 2, 0.1, 3, [u, u])
        assert 3 <= first < 10 <= second < 20
    assert slot_positions(10, 3, 0.3, 3, [0.0, 0.0, 0.0]) == [3, 4, 6]
    assert slot_positions(10, 3, 0.3, 3, [0.99] * 3) == [3, 5, 9]


def test_first_slots_equal_slot_positions_of_one_entry():
    from stream_app.explore import first_slots
    rng = np.random.default_rng(3)
    for share in (0.05, 0.1, 0.3, 1.0):
        for protect in (0, 1, 3, 12):
            lengths = rng.integers(1, 30, 200)
            u = rng.random(200)
            want = [slot_positions(int(n), 1, share, protect, [float(x)])[0]
                    for n, x in zip(lengths, u)]
            assert first_slots(lengths, share, protect, u).tolist() == want
