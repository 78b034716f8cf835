"""What an operator reads off the two processes (issue #20): readiness, consumer lag per
partition, and committed offsets that standard lag tools (kafka-consumer-groups) see."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson
import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streamrec.kafka import producer_config
from streamrec.settings import Settings
from tests.integration.processes import (WORKER_START_S, Proc, applied, metric, seed_events,
                                         send, start_worker, wait_until)

pytestmark = pytest.mark.integration


def _committed(s: Settings, group: str, topic: str) -> int:
    admin = AdminClient(s.kafka_common())
    req = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0)])
    (fut,) = admin.list_consumer_group_offsets([req]).values()
    return fut.result(20).topic_partitions[0].offset


def test_worker_readiness_lag_and_committed_offsets(settings: Settings, tmp_path: Path) -> None:
    worker = start_worker(settings, tmp_path)
    base = f"http://127.0.0.1:{settings.worker_metrics_port}"
    try:
        wait_until(lambda: httpx.get(f"{base}/healthz").status_code == 200, WORKER_START_S,
                   "worker /healthz", (worker,))
        ready = wait_until(lambda: (r := httpx.get(f"{base}/readyz")).status_code == 200 and
                           r.json(), WORKER_START_S, "worker /readyz", (worker,))
        assert ready["streaming"] is True and ready["lag"] == 0
        events = seed_events()
        send(settings, events)
        wait_until(lambda: applied(settings) == len(events), 30, "events applied", (worker,))
        lag = f'{{partition="0",topic="{settings.topic_interactions}"}}'
        wait_until(lambda: metric(settings.worker_metrics_port,
                                  "streamrec_worker_consumer_lag", lag) == 0 and
                   "streamrec_worker_consumer_lag" in httpx.get(f"{base}/metrics").text, 10,
                   "the lag gauge", (worker,))
        # the group's offsets follow the checkpoints: kafka-consumer-groups sees the worker
        wait_until(lambda: _committed(settings, settings.worker_group,
                                      settings.topic_interactions) == len(events), 30,
                   "committed offsets", (worker,))
    finally:
        assert worker.stop() == 0


def test_lookup_is_not_ready_until_caught_up_and_shows_its_lag(settings: Settings,
                                                               tmp_path: Path) -> None:
    """5,000 lists wait on the topic: /readyz answers 503 until the store has them, /healthz
    200 all along; then lag 0 per partition and, with lookup_commit_group, committed offsets
    at the end of the topic."""
    s = settings.model_copy(update={"lookup_commit_group": f"lookup-{settings.worker_group}"})
    p = Producer(producer_config(s))
    for k in range(5000):
        doc = {"user_id": f"u{k}", "items": [{"item_id": "m1", "score": 1.0}],
               "model_version": "v", "updated_at": time.time(), "source": "model"}
        p.produce(s.topic_recommendations, key=f"u{k}".encode(), value=orjson.dumps(doc))
    assert p.flush(20) == 0
    lookup = Proc(["serve"], s, tmp_path / "serve.log").start()
    base = f"http://127.0.0.1:{s.http_port}"
    try:
        statuses = []
        wait_until(lambda: statuses.append(httpx.get(f"{base}/readyz").status_code) or
                   statuses[-1] == 200, 60, "lookup /readyz", (lookup,), interval=0.01)
        assert httpx.get(f"{base}/healthz").status_code == 200
        body = httpx.get(f"{base}/readyz").json()
        assert body["consumer_ready"] is True and body["lag"] == 0
        assert httpx.get(f"{base}/recommendations/u4999").json()["source"] == "model"
        text = httpx.get(f"{base}/metrics").text
        assert f'streamrec_lookup_consumer_lag{{partition="0",topic="{s.topic_recommendations}"}} 0.0' \
            in text
        assert "streamrec_lookup_ready 1.0" in text
        wait_until(lambda: _committed(s, s.lookup_commit_group, s.topic_recommendations)
                   == 5000, 30, "the lookup's committed offsets", (lookup,))
    finally:
        lookup.stop()
