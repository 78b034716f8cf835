import numpy as np

from stream_app.batch import process_records
from stream_app.engine import Engine
from stream_app.store import WorkerStore
from streamrec.schema import validate_interaction
from streamrec.settings import Settings

S = Settings(padding_min=20, no_components=8, epochs_per_batch=2, num_threads=1)


def ev(u, i, **kw):
    return validate_interaction({"user_id": u, "item_id": i, **kw})


def test_disliked_and_low_rated_items_are_never_recommended_back():
    e = Engine(S)
    events = [ev(f"u{1 + k % 4}", f"i{k % 12}") for k in range(60)]
    events += [ev("u0", f"i{k}") for k in range(3)]
    e.apply_interactions(events)
    e.apply_interactions([ev("u0", "i11", event_type="dislike"),
                          ev("u0", "i10", event_type="rating", rating=1),
                          ev("u0", "i9", event_type="rating", rating=5)])
    items = [i for i, *_ in e.recommend("u0", 20)[0]]
    seen = {"i0", "i1", "i2", "i9", "i10", "i11"}
    assert not set(items) & seen
    assert len(items) == 12 - len(seen)


def test_event_id_is_applied_once_and_unknown_users_get_fallback():
    e = Engine(S)
    out = e.apply_interactions([ev("u1", "i1", event_id="x"), ev("u1", "i1", event_id="x"),
                                ev("u2", "i1", event_id="y")])
    assert out.applied == 2 and out.duplicates == 1
    assert e.apply_interactions([ev("u1", "i1", event_id="x")]).applied == 0
    lst, source = e.recommend("stranger", 5)
    assert source == "fallback" and lst[0][0] == "i1"
    assert e.users.get("stranger") is None  # reads never write


def test_new_ids_beyond_padding_grow_the_model():
    e = Engine(S)
    cap = e.model.user_capacity
    e.apply_interactions([ev(f"u{k}", f"i{k % 3}") for k in range(cap + 5)])
    assert e.model.user_capacity > cap + 5 - 1
    assert len(e.recommend_rows(np.array([cap + 4]), 2)[0]) == 2


def _records(topic, start, events):
    import orjson
    return [(topic, 0, start + k, ev["user_id"].encode(), orjson.dumps(ev), 1.0)
            for k, ev in enumerate(events)]


def test_checkpoint_plus_wal_restores_exactly(tmp_path):
    s = S.model_copy(update={"state_dir": tmp_path})
    evs = [{"user_id": f"u{k % 7}", "item_id": f"i{k % 11}"} for k in range(50)]
    store = WorkerStore(tmp_path)
    e = Engine(s)
    process_records(e, _records(s.topic_interactions, 0, evs[:30]), s)
    store.checkpoint(e)
    later = _records(s.topic_interactions, 30, evs[30:])
    store.append_wal(later)
    process_records(e, later, s)
    store.close()

    store2 = WorkerStore(tmp_path)
    e2, wal_seq = store2.load(s)
    assert e2.n_applied == 30
    for _, recs in store2.wal_after(wal_seq):
        process_records(e2, recs, s)
    assert e2.n_applied == e.n_applied == 50
    assert e2.offsets == e.offsets == {f"{s.topic_interactions}:0": 50}
    assert [e2.seen[r].tolist() for r in range(8)] == [e.seen[r].tolist() for r in range(8)]
    assert e2.is_trained(np.arange(8)).tolist() == e.is_trained(np.arange(8)).tolist()
    rows = np.arange(7)
    assert [[i for i, *_ in lst] for lst in e2.recommend_rows(rows, 5)] == \
        [[i for i, *_ in lst] for lst in e.recommend_rows(rows, 5)]  # incl. co-occurrence
    np.testing.assert_array_equal(e2.cooc.pairs[:11, :11], e.cooc.pairs[:11, :11])
    np.testing.assert_allclose(e2.model.scores(np.arange(7)), e.model.scores(np.arange(7)),
                               rtol=1e-5)
    # redelivered records are skipped, not applied twice
    res = process_records(e2, later, s)
    assert res.skipped == len(later) and e2.n_applied == 50


def test_invalid_records_are_returned_not_raised():
    e = Engine(S)
    recs = _records(S.topic_interactions, 0, [{"user_id": "u", "item_id": "i"}])
    recs.append((S.topic_interactions, 0, 1, b"k", b"{bad", 1.0))
    recs.append((S.topic_items, 0, 0, b"m1", b'{"item_id": "m1", "features": {"g": "x"}}', 1.0))
    res = process_records(e, recs, S)
    assert res.outcome.applied == 1 and len(res.invalid) == 1 and res.metadata == 1
    assert "JSON" in res.invalid[0][2]


def test_full_checkpoint_restores_user_stores_and_sparse_cooccurrence_exactly(tmp_path):
    s = S.model_copy(update={"state_dir": tmp_path, "cooc_dense_items": 8})   # sparse counts
    rng = np.random.default_rng(3)
    evs = [{"user_id": f"u{int(u)}", "item_id": f"i{int(i)}",
            **({"event_type": "dislike"} if k % 9 == 0 else {})}
           for k, (u, i) in enumerate(zip(rng.integers(0, 30, 400), rng.integers(0, 60, 400)))]
    evs.append({"user_id": "only-dislikes", "item_id": "i1", "event_type": "dislike"})
    e = Engine(s)
    store = WorkerStore(tmp_path)
    process_records(e, _records(s.topic_interactions, 0, evs), s)
    assert e.cooc.sparse
    store.checkpoint(e, full=True)
    store.close()
    e2, _ = WorkerStore(tmp_path).load(s)
    rows = np.arange(len(e.users))
    assert [e2.seen[r].tolist() for r in rows] == [e.seen[r].tolist() for r in rows]
    assert [e2.cooc.positives(r) for r in rows] == [e.cooc.positives(r) for r in rows]
    trained = e.is_trained(rows)
    assert not trained[e.users.get("only-dislikes")] and trained.sum() == len(rows) - 1
    assert e2.is_trained(rows).tolist() == trained.tolist()
    np.testing.assert_allclose(e2.cooc.scores(rows, 70), e.cooc.scores(rows, 70), rtol=1e-6)
    assert [[i for i, *_ in lst] for lst in e2.recommend_rows(rows, 5)] == \
        [[i for i, *_ in lst] for lst in e.recommend_rows(rows, 5)]


def test_lists_before_the_lightfm_step_leave_the_same_state():
    """``list_before_fit``: building a batch's lists between its counts and its LightFM
    step changes no parameter, so the state after the step equals training first."""
    history = [ev(f"u{k % 5}", f"i{(3 * k) % 13}") for k in range(80)]
    batch = [ev("u1", "i2"), ev("u7", "i4"), ev("u1", "i5")]
    now, later = Engine(S), Engine(S)
    for e in (now, later):
        e.apply_interactions(history)
    now.apply_interactions(batch)
    later.apply_interactions(batch, train=False)
    u, i, v = later.last_batch_arrays
    rows = np.unique(u)
    before = later.lists(rows, 5)     # what the worker publishes first
    later.fit_batch(u, i, v)
    for name in ("user_embeddings", "user_biases", "item_embeddings", "item_biases",
                 "item_embedding_gradients", "user_embedding_gradients"):
        assert np.array_equal(getattr(now.model.lightfm, name),
                              getattr(later.model.lightfm, name)), name
    assert [list(r) for r, *_ in later.lists(rows, 5)] == \
        [list(r) for r, *_ in now.lists(rows, 5)]
    assert len(before) == len(rows)
