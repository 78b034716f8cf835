"""TLS and SASL reach every Kafka client: end to end on Apache Kafka's SASL_SSL listener.

One broker for the module (``KafkaBroker`` with a SASL_SSL listener next to its PLAINTEXT
one, certificate from a CA made here). Every client is pointed at the SASL_SSL port only, and
Kafka advertises to a client only the listener it came in on, so nothing below can fall back
to PLAINTEXT: topic creation (admin), ``EventProducer``, a real ``streamrec worker`` (batch
ingest: librdkafka consumer and producer, replay at bootstrap), a real ``streamrec serve``,
``streamrec retrain --dry-run`` (replay), and the worker again with ``ingest=agent`` (Faust's
own aiokafka consumer and producer). Before: the Faust app spoke SASL_PLAINTEXT to it.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from streamrec.broker import ensure_topics, free_port
from streamrec.broker.kafka import KafkaBroker, TlsFiles
from streamrec.errors import ConfigError
from streamrec.settings import Settings
from tests.certs import Certs, make_certs
from tests.integration.processes import (WORKER_START_S, Proc, applied, get_list, seed_events,
                                         send, settings_env, start_lookup, start_worker,
                                         wait_until)

pytestmark = [pytest.mark.integration, pytest.mark.kafka_only]

USER, PASSWORD = "alice", "alice-secret"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KafkaBroker, Certs]]:
    root = tmp_path_factory.mktemp("tls")
    certs = make_certs(root / "certs")
    broker = KafkaBroker(free_port(), data_dir=root / "kafka", sasl_ssl_port=free_port(),
                         tls=TlsFiles(certs.server_cert, certs.server_key),
                         users={USER: PASSWORD, "bob": "bob-secret"})
    broker.start()
    try:
        yield broker, certs
    finally:
        broker.stop()


def sasl_settings(tls: tuple[KafkaBroker, Certs], mechanism: str, tmp_path: Path,
                  **more: object) -> Settings:
    """Fresh names (as the conftest ``settings`` fixture), SASL_SSL to the TLS listener."""
    broker, certs = tls
    tag = uuid.uuid4().hex[:8]
    values: dict = dict(
        bootstrap_servers=broker.sasl_ssl_bootstrap, security_protocol="SASL_SSL",
        sasl_mechanism=mechanism, sasl_username=USER, sasl_password=PASSWORD,
        ssl_ca_location=str(certs.ca), state_dir=tmp_path / "state",
        topic_interactions=f"interactions-{tag}", topic_items=f"items-{tag}",
        topic_users=f"users-{tag}", topic_recommendations=f"recommendations-{tag}",
        topic_dlq=f"interactions.dlq-{tag}", topic_quarantine=f"interactions.quarantine-{tag}",
        topic_control=f"streamrec.control-{tag}", topic_released=f"interactions.released-{tag}",
        worker_group=f"worker-{tag}", session_timeout_ms=6000, http_port=free_port(),
        worker_metrics_port=free_port(), checkpoint_interval_s=2.0, padding_min=50,
        epochs_bootstrap=5)
    values.update(more)
    return Settings(**values)


def cli(args: list[str], s: Settings, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamrec.cli", *args], env=settings_env(s),
                          capture_output=True, text=True, timeout=timeout)


def model_list(s: Settings, user: str, procs: tuple[Proc, ...], timeout: float) -> dict:
    return wait_until(lambda: (d := get_list(s, user))["source"] == "model" and d, timeout,
                      f"{user}'s list", procs)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_every_client_works_over_sasl_ssl(tls, mechanism: str, tmp_path: Path) -> None:
    s = sasl_settings(tls, mechanism, tmp_path)
    ensure_topics(s)                                   # admin client
    base = seed_events()
    send(s, base)                                      # EventProducer
    worker, lookup = start_worker(s, tmp_path), start_lookup(s, tmp_path)
    try:
        wait_until(lambda: applied(s) >= len(base), WORKER_START_S, "seed events applied",
                   (worker,))
        send(s, [{"user_id": "tls-new", "item_id": i} for i in ("i1", "i3", "i5")])
        doc = model_list(s, "tls-new", (worker, lookup), WORKER_START_S)
        assert not {"i1", "i3", "i5"} & {it["item_id"] for it in doc["items"]}
        assert worker.stop() == 0, worker.log()[-3000:]

        # the retrain job replays every topic over TLS (a dry run: trains, announces nothing)
        r = cli(["retrain", "--dry-run"], s, timeout=180)
        assert r.returncode == 0, r.stderr[-3000:]
        result = orjson.loads(r.stdout)
        assert result["records"] >= len(base) + 3 and result["announced"] is False

        # the Faust agent: aiokafka's consumer and producer over SASL_SSL, same state
        agent = s.model_copy(update={"ingest": "agent", "worker_metrics_port": free_port()})
        worker = start_worker(agent, tmp_path, "worker-agent")
        send(agent, [{"user_id": "tls-agent", "item_id": i} for i in ("i2", "i4")])
        doc = model_list(agent, "tls-agent", (worker, lookup), WORKER_START_S)
        assert not {"i2", "i4"} & {it["item_id"] for it in doc["items"]}
        assert worker.stop() == 0, worker.log()[-3000:]
        assert "Traceback" not in worker.log(), worker.log()[-3000:]
    finally:
        worker.stop()
        lookup.stop()


def test_wrong_password_fails_at_once_with_one_line(tls, tmp_path: Path) -> None:
    """Authentication is not an outage: no waiting forever (broker_wait_s 0 is 'forever')."""
    broker, _ = tls
    s = sasl_settings(tls, "SCRAM-SHA-256", tmp_path, sasl_password="not-the-password")
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=f"authentication failed for user {USER} at "
                                          f"{broker.sasl_ssl_bootstrap}"):
        ensure_topics(s)
    worker = start_worker(s, tmp_path)
    try:
        code = worker.p.wait(60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker still runs with a wrong password:\n{worker.log()[-3000:]}")
    finally:
        worker.stop()
    out = worker.log()
    assert code == 1, out[-3000:]
    assert (f"streamrec: authentication failed for user {USER} at {broker.sasl_ssl_bootstrap}"
            " (SASL SCRAM-SHA-256): check STREAMREC_SASL_USERNAME/PASSWORD") in out
    assert "not-the-password" not in out
    assert time.monotonic() - t0 < 90


def test_untrusted_certificate_fails_at_once(tls, tmp_path: Path) -> None:
    """Another CA than the one that signed the broker: a clear error, not a retry loop."""
    other = make_certs(tmp_path / "other", ca_name="some other CA")
    s = sasl_settings(tls, "PLAIN", tmp_path, ssl_ca_location=str(other.ca))
    with pytest.raises(ConfigError, match="TLS certificate of the broker .* could not be "
                                          "verified: check STREAMREC_SSL_CA_LOCATION"):
        ensure_topics(s)
