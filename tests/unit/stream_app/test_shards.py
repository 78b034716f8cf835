"""A shard's share of an engine bootstrapped on every user (``shard_bootstrap="all"``):
its users with their model rows, every item, and counts that add up across shards."""

from __future__ import annotations

import numpy as np

from consumers.partitioner import user_partition
from stream_app.deltas import apply_delta, parse_delta
from stream_app.engine import Engine
from stream_app.shards import own_share
from stream_app.store import WorkerStore
from streamrec.schema import validate_interaction
from streamrec.settings import Settings

S = Settings(padding_min=20, no_components=8, epochs_per_batch=1, num_threads=1,
             explore_share=0.0, ann_min_items=0, guard_enabled=False, shards=2)
PARTITIONS = 4


def _full() -> tuple[Engine, np.ndarray]:
    rng = np.random.default_rng(3)
    e = Engine(S.model_copy(update={"shards": 1}))
    e.apply_item_features("i3", {"genre": "x"})
    e.apply_user_features("u5", {"age": "30"})
    evs = [validate_interaction({"user_id": f"u{a}", "item_id": f"i{b}"})
           for a, b in zip(rng.integers(0, 40, 800).tolist(),
                           (rng.pareto(1.2, 800) * 10).astype(int).tolist())]
    e.apply_interactions(evs)
    e.offsets = {"interactions:0": 10, "interactions:1": 11, "interactions:2": 12,
                 "interactions:3": 13, "items:0": 5}
    return e, e.last_batch_arrays[0]


def test_each_shard_keeps_its_users_and_every_item_and_the_counts_add_up(tmp_path) -> None:
    full, applied = _full()
    shards = [own_share(full, applied, S.model_copy(update={"shard": k}), PARTITIONS)
              for k in range(2)]
    assert sorted(shards[0].users.ids + shards[1].users.ids) == sorted(full.users.ids)
    assert sum(e.n_applied for e in shards) == full.n_applied
    b = full.model.users.buckets
    for k, e in enumerate(shards):
        assert all(user_partition(u, PARTITIONS) % 2 == k for u in e.users.ids)
        assert e.items.ids == full.items.ids
        assert set(e.offsets) == {f"interactions:{p}" for p in (k, k + 2)} | {"items:0"}
        for uid in e.users.ids[:10]:   # model rows moved with their users
            old, new = full.users.get(uid), e.users.get(uid)
            np.testing.assert_array_equal(e.model.lightfm.user_embeddings[b + new],
                                          full.model.lightfm.user_embeddings[b + old])
            np.testing.assert_array_equal(e.seen[new], full.seen[old])
        np.testing.assert_array_equal(e.model.lightfm.item_embeddings,
                                      full.model.lightfm.item_embeddings)
        if "u5" in e.users:
            assert e.model.users.get(e.users.get("u5")) == {"age": "30"}
    # each shard's own counts, shared as deltas, add up to the full engine's counts
    values = [e.cooc.capture.encode(e.items, k, 0) for k, e in enumerate(shards)]
    for k, e in enumerate(shards):
        e.cooc.capture.clear()
        for value in values[1 - k]:
            apply_delta(e, parse_delta(value, None))
        n = len(full.items)
        np.testing.assert_allclose(e.cooc.counts[:n], full.cooc.counts[:n])
        np.testing.assert_allclose(e.cooc.pairs[:n, :n], full.cooc.pairs[:n, :n])
        np.testing.assert_allclose(e.cooc.transitions.dense[:n, :n],
                                   full.cooc.transitions.dense[:n, :n])
        lists = e.lists(np.arange(len(e.users)), 5)   # it scores its users
        assert len(lists) == len(e.users)
    # and its first checkpoint holds it whole
    store = WorkerStore(tmp_path)
    try:
        store.checkpoint(shards[0])
        restored, _ = store.load(S.model_copy(update={"shard": 0}))
    finally:
        store.close()
    assert restored.users.ids == shards[0].users.ids
    assert restored.n_applied == shards[0].n_applied
