"""Item deltas between user shards: merged counts equal one worker's, each delta applies
once, forged ones are refused, and a shard's checkpoint keeps the other shards' counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from consumers.partitioner import user_partition
from stream_app.deltas import (AppliedSeqs, DeltaBuffer, apply_delta, parse_delta,
                               sign_value)
from stream_app.engine import Engine
from stream_app.store import WorkerStore
from streamrec.errors import InvalidEvent
from streamrec.schema import validate_interaction
from streamrec.settings import Settings

S = Settings(padding_min=20, no_components=8, epochs_per_batch=1, num_threads=1,
             explore_share=0.0, ann_min_items=0, guard_enabled=False, shards=2,
             cooc_pair_window=10)


def _events(n: int = 1500, users: int = 60, items: int = 200, seed: int = 1) -> list:
    rng = np.random.default_rng(seed)
    u = rng.integers(0, users, n)
    i = (rng.pareto(1.2, n) * 15).astype(int) % items
    return [validate_interaction({"user_id": f"u{a}", "item_id": f"i{b}"})
            for a, b in zip(u.tolist(), i.tolist())]


def _pairs(e: Engine, ids: list[str]) -> np.ndarray:
    rows = [e.items.get(x) for x in ids]
    return np.array([[e.cooc.pair(a, b) for b in rows] for a in rows])


def _trans(e: Engine, ids: list[str]) -> np.ndarray:
    rows = [e.items.get(x) for x in ids]
    return np.array([[e.cooc.transitions.get(a, b) for b in rows] for a in rows])


def _counts(e: Engine, ids: list[str]) -> np.ndarray:
    return np.array([e.cooc.counts[e.items.get(x)] for x in ids])


def _sharded(events: list, settings: Settings, sync_every: int = 97,
             max_entries: int = 20_000) -> tuple[Engine, list[Engine]]:
    one = Engine(settings.model_copy(update={"shards": 1}))
    shards = [Engine(settings.model_copy(update={"shard": k})) for k in range(2)]
    for e in shards:
        e.cooc.capture = DeltaBuffer()
    seqs = [0, 0]
    for start in range(0, len(events), sync_every):
        chunk = events[start:start + sync_every]
        one.apply_interactions(chunk)
        for k, e in enumerate(shards):
            mine = [ev for ev in chunk if user_partition(ev.user_id, 2) == k]
            if mine:
                e.apply_interactions(mine)
        values = []
        for k, e in enumerate(shards):
            values.append(e.cooc.capture.encode(e.items, k, seqs[k], max_entries=max_entries))
            e.cooc.capture.clear()
            seqs[k] += len(values[-1])
        for k, e in enumerate(shards):
            for value in values[1 - k]:
                assert apply_delta(e, parse_delta(value, None))
                assert not apply_delta(e, parse_delta(value, None))   # once only
    return one, shards


@pytest.mark.parametrize("dense_max,max_entries", [(100_000, 20_000), (16, 20_000),
                                                    (100_000, 7)])
def test_merged_shard_counts_equal_one_workers(dense_max: int, max_entries: int) -> None:
    """Pairs, transitions and per-item positives: the sum-of-deltas rule is exact for
    counts (dense_max=16 switches both shards to the sparse counts; max_entries=7 splits
    every cut into several records)."""
    s = S.model_copy(update={"cooc_dense_items": dense_max, "trans_dense_items": dense_max,
                             "cooc_max_neighbours": 0})
    one, shards = _sharded(_events(), s, max_entries=max_entries)
    ids = one.items.ids
    for e in shards:
        assert sorted(e.items.ids) == sorted(ids)   # items met only elsewhere are known
        np.testing.assert_allclose(_counts(e, ids), _counts(one, ids))
        some = ids[:60]   # the most liked items first met; pair reads are slow when sparse
        np.testing.assert_allclose(_pairs(e, some), _pairs(one, some))
        np.testing.assert_allclose(_trans(e, some), _trans(one, some), rtol=1e-6)
        assert sorted(e.recent_positives) != []
        assert sorted(e.items.ids_of(list(e.recent_positives))) == \
            sorted(one.items.ids_of(list(one.recent_positives)))


def test_a_shard_checkpoint_keeps_other_shards_counts(tmp_path: Path) -> None:
    """A shard's users' histories rebuild only its own counts; the others' come back from
    the checkpoint, with the sequences applied (a delta seen again is still skipped)."""
    _, shards = _sharded(_events(600), S)
    e = shards[0]
    s0 = S.model_copy(update={"shard": 0, "state_dir": tmp_path})
    store = WorkerStore(tmp_path)
    store.checkpoint(e, outbox={7: b'{"v":1}'})
    store.close()
    store = WorkerStore(tmp_path)
    try:
        restored, _ = store.load(s0)
        assert store.outbox() == {7: b'{"v":1}'}
    finally:
        store.close()
    ids = e.items.ids
    np.testing.assert_allclose(_pairs(restored, ids), _pairs(e, ids))
    np.testing.assert_allclose(_trans(restored, ids), _trans(e, ids))
    np.testing.assert_allclose(_counts(restored, ids), _counts(e, ids))
    assert restored.applied_deltas.seen(1, 0)
    assert not restored.applied_deltas.seen(1, 10_000)


def test_forged_and_malformed_deltas_are_refused() -> None:
    e = Engine(S.model_copy(update={"shard": 0}))
    e.cooc.capture = DeltaBuffer()
    e.apply_interactions(_events(50))
    body, = e.cooc.capture.encode(e.items, 0, 0)
    assert parse_delta(sign_value(body, "k"), "k").seq == 0
    with pytest.raises(InvalidEvent, match="unsigned"):
        parse_delta(body, "k")
    with pytest.raises(InvalidEvent, match="bad signature"):
        parse_delta(sign_value(body, "other"), "k")
    with pytest.raises(InvalidEvent, match="outside items"):
        parse_delta(b'{"v":1,"shard":1,"seq":0,"items":["a"],"pos":[3]}', None)
    with pytest.raises(InvalidEvent, match="item delta"):
        parse_delta(b'{"v":1,"shard":-1,"seq":0,"items":[]}', None)
    with pytest.raises(InvalidEvent, match="item delta"):
        parse_delta(b"not json", None)


def test_applied_seqs_are_bounded_and_take_late_retries() -> None:
    a = AppliedSeqs()
    assert not a.seen(1, 500)
    a.add(1, 500)                       # joined another shard's sequence in the middle
    assert a.seen(1, 500) and not a.seen(1, 501) and not a.seen(1, 499)
    a.add(1, 502)
    assert not a.seen(1, 501)           # a retry arriving after its successor
    a.add(1, 501)
    assert a.seen(1, 501)
    for seq in range(503, 503 + 5 * AppliedSeqs.WINDOW):
        a.add(1, seq)
    assert len(a.recent[1]) <= 2 * AppliedSeqs.WINDOW + 1
    assert a.seen(1, 600)               # far below the window: applied
    assert AppliedSeqs(a.state()).seen(1, 503 + 5 * AppliedSeqs.WINDOW - 1)
