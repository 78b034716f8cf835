"""End to end on a real broker: events -> worker -> recommendations topic -> lookup API."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from producers import EventProducer
from streamrec.kafka import producer_config
from streamrec.replay import read_topics
from streamrec.settings import Settings
from tests.integration.processes import (WORKER_START_S, Proc, applied, get_list, metric, ready,
                                         seed_events, send, start_lookup, start_worker,
                                         wait_until)

pytestmark = pytest.mark.integration

@pytest.fixture(params=["batch", "agent"])
def ingest(request) -> str:
    """Both ways the worker reads its topics: whole batches (default) and the Faust agent."""
    return request.param


@pytest.fixture
def pipeline(settings: Settings, tmp_path: Path):
    """A running worker and lookup API on fresh topics."""
    worker = start_worker(settings, tmp_path)
    lookup = start_lookup(settings, tmp_path)
    wait_until(lambda: get_list(settings, "nobody")["source"] == "fallback", WORKER_START_S,
               "lookup API", (lookup,))
    wait_until(lambda: "streamrec_worker" in __import__("httpx").get(
        f"http://127.0.0.1:{settings.worker_metrics_port}/metrics").text, WORKER_START_S,
        "worker metrics", (worker,))
    yield worker, lookup
    for p in (worker, lookup):
        p.stop()


@pytest.mark.tansu
def test_new_user_list_within_10s_excludes_seen(settings: Settings, ingest: str,
                                                tmp_path: Path) -> None:
    settings = settings.model_copy(update={"ingest": ingest})
    worker, lookup = start_worker(settings, tmp_path), start_lookup(settings, tmp_path)
    try:
        _new_user_list(settings, worker, lookup)
    finally:
        worker.stop()
        lookup.stop()


def _new_user_list(settings: Settings, worker: Proc, lookup: Proc) -> None:
    base = seed_events()
    send(settings, base)
    wait_until(lambda: applied(settings) >= len(base), WORKER_START_S, "seed events applied",
               (worker,))
    new_items = ["i1", "i3", "i5"]
    t0 = time.monotonic()
    send(settings, [{"user_id": "brand-new", "item_id": i, "event_type": "click"}
                    for i in new_items])
    doc = wait_until(lambda: (d := get_list(settings, "brand-new"))["source"] == "model" and d,
                     10, "brand-new user's list", (worker, lookup))
    elapsed = time.monotonic() - t0
    assert elapsed < 10
    got = [it["item_id"] for it in doc["items"]]
    assert len(got) == 10
    assert not set(got) & set(new_items), "a seen item came back"
    # The user's taste group is the first half of the catalogue: the list should lean there.
    assert sum(int(i[1:]) < 30 for i in got) >= 6, got
    assert get_list(settings, "brand-new", n=3)["items"] == doc["items"][:3]


def test_new_item_with_features_can_appear(settings: Settings, pipeline) -> None:
    worker, _ = pipeline
    base = seed_events()
    with EventProducer(settings) as p:
        p.send_item("fresh-item", {"genre": ["Drama"]})
        for ev in base:
            p.send(ev)
        for u in range(0, 20, 2):  # half of one taste group clicks the new item
            p.send({"user_id": f"u{u}", "item_id": "fresh-item", "event_type": "purchase"})
    wait_until(lambda: applied(settings) >= len(base) + 10, WORKER_START_S, "events applied",
               (worker,))
    others = [f"u{u}" for u in range(20, 30, 2)]  # same group, never touched it

    def own_lists_with_it() -> list[dict]:
        """Lists of ``others`` that show the new item: only their own (model) lists count,
        the popular fallback list an unknown user gets does not."""
        docs = [get_list(settings, u) for u in others]
        return [d for d in docs if "fresh-item" in [it["item_id"] for it in d["items"]]
                and d["source"] == "model"]

    # fails (AssertionError after 20 s) unless a real user's own list shows the new item
    wait_until(own_lists_with_it, 20, "fresh-item in a user's own list", (worker,))
    clicked = get_list(settings, "u0")["items"]
    assert "fresh-item" not in [it["item_id"] for it in clicked]


INVALID = [
    b"{not json",
    b"[1, 2]",
    b'{"user_id": "", "item_id": "i1"}',
    b'{"user_id": "u1"}',
    b'{"user_id": "u1", "item_id": "i1", "event_type": "teleport"}',
    b'{"user_id": "u1", "item_id": "i1", "event_type": "rating", "rating": "five"}',
    b'{"user_id": "u1", "item_id": "i1", "event_type": "rating", "rating": 1e999}',
    b'{"user_id": "u1", "item_id": "i1", "timestamp": -5}',
    b'{"user_id": "u1", "item_id": "i1", "surprise": true}',
    b'{"user_id": "u1", "item_id": "i1", "user_features": {"a": {"nested": 1}}}',
    ('{"user_id": "%s", "item_id": "i1"}' % ("x" * 300)).encode(),
    b"\xff\xfe not utf-8",
    None,
]


@pytest.mark.tansu
def test_invalid_events_go_to_dlq_and_valid_ones_all_apply(settings: Settings,
                                                           pipeline) -> None:
    worker, _ = pipeline
    valid = seed_events(n_users=10, per_user=5)
    raw = Producer(producer_config(settings))
    for k, ev in enumerate(valid):
        raw.produce(settings.topic_interactions, key=ev["user_id"].encode(),
                    value=orjson.dumps(ev))
        if k < len(INVALID):
            raw.produce(settings.topic_interactions, key=b"bad", value=INVALID[k])
    assert raw.flush(10) == 0
    wait_until(lambda: applied(settings) >= len(valid), WORKER_START_S, "valid events applied",
               (worker,))
    wait_until(lambda: metric(settings.worker_metrics_port, "streamrec_worker_events_total",
                              '{outcome="invalid"}') >= len(INVALID), 20, "invalid counted",
               (worker,))
    time.sleep(1.0)
    assert applied(settings) == len(valid)
    dlq = [r for chunk in read_topics(settings, [settings.topic_dlq]) for r in chunk]
    assert len(dlq) == len(INVALID)
    assert sorted((r.value or b"") for r in dlq) == sorted((v or b"") for v in INVALID)
    # every DLQ record says why, in the "error" header
    from confluent_kafka import Consumer, TopicPartition
    from streamrec.kafka import consumer_config
    c = Consumer(consumer_config(settings, "dlq-reader"))
    c.assign([TopicPartition(settings.topic_dlq, 0, 0)])
    reasons = []
    while len(reasons) < len(INVALID):
        m = c.poll(5)
        assert m is not None, "DLQ records missing"
        reasons.append(dict(m.headers() or [])["error"].decode())
    c.close()
    assert all(len(r) > 10 for r in reasons)
    assert any("JSON" in r for r in reasons)
    assert any("event_type" in r for r in reasons)


def test_bootstrap_from_existing_topic(settings: Settings, tmp_path: Path) -> None:
    """No model yet, events already in the topic: the worker trains on them first."""
    events = seed_events()
    send(settings, events)
    worker = start_worker(settings, tmp_path)
    lookup = start_lookup(settings, tmp_path)
    try:
        doc = wait_until(lambda: (d := get_list(settings, "u4"))["source"] == "model" and d,
                         WORKER_START_S, "bootstrapped lists", (worker, lookup))
        seen = {e["item_id"] for e in events if e["user_id"] == "u4"}
        assert not seen & {it["item_id"] for it in doc["items"]}
        wait_until(lambda: applied(settings) == len(events), 10, "all events in state",
                   (worker,))
    finally:
        worker.stop()
        lookup.stop()


@pytest.mark.tansu
@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_restart_worker_and_lookup_loses_nothing(settings: Settings, tmp_path: Path,
                                                 how: str, ingest: str) -> None:
    """Events without event_id (so dedup cannot hide a double application) across a worker
    stop (clean or killed) and a lookup restart: the state holds each event exactly once."""
    settings = settings.model_copy(update={"ingest": ingest})
    sig = signal.SIGTERM if how == "sigterm" else signal.SIGKILL
    first, second = seed_events(seed=1), seed_events(seed=2, n_users=12)
    worker = start_worker(settings, tmp_path, "worker1")
    lookup = start_lookup(settings, tmp_path, "serve1")
    try:
        wait_until(lambda: ready(settings), WORKER_START_S,
                   "worker up", (worker,))
        send(settings, first)
        wait_until(lambda: applied(settings) == len(first), WORKER_START_S, "first batch",
                   (worker,))
        wait_until(lambda: get_list(settings, "u3")["source"] == "model", 10, "lists", (lookup,))
        before = get_list(settings, "u3")
        worker.stop(sig)
        lookup.stop()
        send(settings, second)  # while the worker is down
        lookup = start_lookup(settings, tmp_path, "serve2")
        # the restarted lookup serves the stored list at once
        wait_until(lambda: get_list(settings, "u3")["items"], 15, "stored list", (lookup,))
        worker = start_worker(settings, tmp_path, "worker2")
        wait_until(lambda: applied(settings) == len(first) + len(second), WORKER_START_S,
                   "every event applied once", (worker,))
        time.sleep(2.0)  # redelivered records must not be applied again
        assert applied(settings) == len(first) + len(second)
        after = wait_until(lambda: (d := get_list(settings, "u3"))["updated_at"] >
                           before["updated_at"] and d, 15, "u3's list refreshed", (lookup,))
        seen = {e["item_id"] for e in first + second if e["user_id"] == "u3"}
        assert not seen & {it["item_id"] for it in after["items"]}
    finally:
        worker.stop()
        lookup.stop()


def test_growth_past_padding_refuses_nothing(settings: Settings, tmp_path: Path) -> None:
    """Tiny padding: hundreds of new users and items arrive; the model grows in place."""
    import httpx

    s = settings.model_copy(update={"padding_min": 10, "padding_fraction": 0.0})
    worker = start_worker(s, tmp_path)
    lookup = start_lookup(s, tmp_path)
    try:
        wait_until(lambda: ready(s), WORKER_START_S, "worker up",
                   (worker,))
        events = [{"user_id": f"g{k}", "item_id": f"x{(k * 7) % 150}"} for k in range(300)]
        events += [{"user_id": f"g{k}", "item_id": f"x{(k * 7 + 1) % 150}"} for k in range(300)]
        send(s, events)
        wait_until(lambda: applied(s) == len(events), WORKER_START_S, "all applied", (worker,))
        text = httpx.get(f"http://127.0.0.1:{s.worker_metrics_port}/metrics").text
        cap = {side: float(next(line.split()[1] for line in text.splitlines() if
                                line.startswith(f'streamrec_worker_capacity{{side="{side}"}}')))
               for side in ("user", "item")}
        assert cap["user"] >= 300 and cap["item"] >= 150
        doc = wait_until(lambda: (d := get_list(s, "g299"))["source"] == "model" and d, 10,
                         "the last new user's list", (lookup,))
        assert len(doc["items"]) == 10
        assert not {"x" + str((299 * 7) % 150), "x" + str((299 * 7 + 1) % 150)} & \
            {it["item_id"] for it in doc["items"]}
    finally:
        worker.stop()
        lookup.stop()
