"""What only a real Apache Kafka can show: durability across a broker restart, compaction."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from streamrec.broker import ensure_topics
from streamrec.kafka import producer_config
from streamrec.replay import read_topics
from streamrec.settings import Settings
from tests.integration.processes import (WORKER_START_S, Proc, applied, get_list, ready,
                                         seed_events, send, start_lookup, start_worker,
                                         wait_until)

pytestmark = [pytest.mark.integration, pytest.mark.kafka_only]


@pytest.fixture
def kafka(broker):
    if not broker.restartable:
        pytest.skip(f"needs the local Apache Kafka engine (this session: {broker.engine})")
    return broker


def test_broker_restart_mid_stream_loses_nothing(kafka, settings: Settings,
                                                 tmp_path: Path) -> None:
    first, second = seed_events(seed=11), seed_events(seed=12, n_users=16)
    worker = start_worker(settings, tmp_path)
    lookup = start_lookup(settings, tmp_path)
    try:
        wait_until(lambda: ready(settings), WORKER_START_S,
                   "worker up", (worker,))
        send(settings, first)
        wait_until(lambda: applied(settings) == len(first), WORKER_START_S, "first events",
                   (worker,))
        before = wait_until(lambda: (d := get_list(settings, "u5"))["source"] == "model" and d,
                            15, "u5's list", (lookup,))
        kafka.process.stop()
        time.sleep(2)
        kafka.process.start()
        send(settings, second)
        wait_until(lambda: applied(settings) == len(first) + len(second), 120,
                   "events after the broker restart", (worker, lookup))
        time.sleep(2)
        assert applied(settings) == len(first) + len(second)
        after = wait_until(lambda: (d := get_list(settings, "u5"))["updated_at"] >
                           before["updated_at"] and d, 60, "u5's list after restart",
                           (worker, lookup))
        seen = {e["item_id"] for e in first + second if e["user_id"] == "u5"}
        assert not seen & {it["item_id"] for it in after["items"]}
    finally:
        worker.stop()
        lookup.stop()


def test_compaction_keeps_latest_and_a_fresh_lookup_rebuilds(kafka, broker,
                                                             tmp_path: Path) -> None:
    tag = tmp_path.name[-12:].replace("_", "-")
    s = Settings(bootstrap_servers=broker.bootstrap, state_dir=tmp_path / "state",
                 topic_recommendations=f"recs-compact-{tag}", compaction_segment_ms=500,
                 topic_interactions=f"i-{tag}", topic_users=f"u-{tag}", topic_items=f"it-{tag}",
                 topic_dlq=f"d-{tag}", topic_quarantine=f"q-{tag}", topic_control=f"c-{tag}",
                 topic_released=f"rel-{tag}",
                 http_port=__import__("streamrec.broker", fromlist=["free_port"]).free_port())
    ensure_topics(s)
    users = [f"user{k}" for k in range(20)]
    p = Producer(producer_config(s))

    def publish(version: int) -> None:
        for u in users:
            doc = {"user_id": u, "items": [{"item_id": f"v{version}", "score": 1.0}],
                   "model_version": f"v{version}", "updated_at": float(version),
                   "source": "model"}
            p.produce(s.topic_recommendations, key=u.encode(), value=orjson.dumps(doc))
        assert p.flush(10) == 0

    for version in range(1, 5):
        publish(version)
    time.sleep(1.0)
    publish(5)   # rolls the segment: versions 1-4 become cleanable

    def count() -> int:
        return sum(len(c) for c in read_topics(s, [s.topic_recommendations], idle_s=0.3))

    n = wait_until(lambda: (c := count()) < 100 and c, 60, "compaction", interval=1.0)
    assert n <= 60, n
    latest: dict[bytes, bytes] = {}
    for chunk in read_topics(s, [s.topic_recommendations]):
        for _, _, _, k, v, _ in chunk:
            latest[k] = v
    assert {orjson.loads(v)["model_version"] for v in latest.values()} == {"v5"}

    lookup = Proc(["serve"], s, tmp_path / "serve.log").start()  # empty store
    try:
        wait_until(lambda: all(get_list(s, u)["model_version"] == "v5" for u in users), 30,
                   "every latest list rebuilt from the topic", (lookup,))
    finally:
        lookup.stop()
