"""The sharding simulation's merge rule (bench/sharding.py): what the decision rests on."""

from __future__ import annotations

import copy

import numpy as np

from bench.sharding import ShardedEngines, item_state, merge_item_state
from stream_app.engine import Engine
from streamrec.schema import Interaction
from streamrec_eval.adapters import bootstrap_engine, engine_settings
from streamrec_eval.stream import Stream


def _engine() -> Engine:
    e = Engine(engine_settings(padding_min=20))
    for k in range(40):
        e.apply_item_features(f"i{k}", {"genre": "a" if k % 2 else "b"})
    for u in range(8):
        e.apply_user_features(f"u{u}", {"age": str(u % 3)})
    e.cooc._ensure(e.model.item_capacity)
    return e


def _clicks(user: str, items: list[int]) -> list[Interaction]:
    return [Interaction(user_id=user, item_id=f"i{k}", event_type="click") for k in items]


def _snapshot(e: Engine) -> dict[str, np.ndarray]:
    return {k: v.copy() for k, v in item_state(e).items()}


def test_a_sync_after_every_event_is_one_engine() -> None:
    """Only one shard trained since the last sync: every shard ends with its item side."""
    base_engine = _engine()
    shards = [copy.deepcopy(base_engine) for _ in range(3)]
    base = _snapshot(base_engine)
    shards[1].apply_interactions(_clicks("u1", [3, 5, 7]))
    expected = _snapshot(shards[1])
    merged, changed = merge_item_state(shards, base)
    for e in shards:
        for key, arr in item_state(e).items():
            np.testing.assert_allclose(arr, expected[key], rtol=0, atol=1e-6)
    assert changed["cooc_pairs"] > 0 and changed["item_embeddings"] > 0
    assert all(np.array_equal(merged[k], expected[k]) for k in ("cooc_counts", "cooc_pairs"))


def test_counts_of_different_users_add_up_exactly() -> None:
    """Co-occurrence and transition counts of two shards' users, merged, are what one engine
    that saw both users counts."""
    base_engine = _engine()
    shards = [copy.deepcopy(base_engine) for _ in range(2)]
    single = copy.deepcopy(base_engine)
    base = _snapshot(base_engine)
    a, b = _clicks("u0", [1, 2, 3, 4]), _clicks("u5", [2, 4, 6, 8, 1])
    shards[0].apply_interactions(a)
    shards[1].apply_interactions(b)
    single.apply_interactions(a)
    single.apply_interactions(b)
    merge_item_state(shards, base)
    one = item_state(single)
    for key in ("cooc_counts", "cooc_pairs", "trans"):
        for e in shards:
            assert np.array_equal(item_state(e)[key], one[key]), key


def test_mean_rule_averages_the_shards() -> None:
    base_engine = _engine()
    shards = [copy.deepcopy(base_engine) for _ in range(2)]
    base = _snapshot(base_engine)
    shards[0].apply_interactions(_clicks("u0", [1, 2]))
    after = _snapshot(shards[0])
    merge_item_state(shards, base, rule="mean")
    np.testing.assert_allclose(item_state(shards[1])["cooc_counts"],
                               (after["cooc_counts"] + base["cooc_counts"]) / 2)


def test_own_bootstrap_shards_start_with_every_shards_bootstrap_counts() -> None:
    """--own-bootstrap: each shard bootstraps on its own users, then the bootstraps' counts are
    merged at once: every shard counts what one engine bootstrapped on everything counts,
    while its LightFM model saw only its users."""
    rng = np.random.default_rng(0)
    n = 300
    users = [f"u{k}" for k in rng.integers(0, 30, n)]
    items = [f"i{k}" for k in rng.integers(0, 25, n)]
    stream = Stream.from_triples(users, items, np.full(n, 5.0))
    s = engine_settings(padding_min=20, epochs_bootstrap=1)
    sharded = ShardedEngines(2, 1.0, settings=s, own_boot=True)
    sharded.fit_initial(stream.events(0, n))
    one = bootstrap_engine(s, stream.events(0, n), keep=np.ones(n, bool))
    want = item_state(one)
    for m in sharded.models:
        got = item_state(m.engine)
        k = stream.n_items
        for key in ("cooc_counts", "cooc_pairs", "trans"):
            cut = (slice(k),) * got[key].ndim    # capacities differ, registered rows not
            assert np.array_equal(got[key][cut], want[key][cut]), key
        assert m.engine.n_applied < n
    assert sum(m.engine.n_applied for m in sharded.models) == n
