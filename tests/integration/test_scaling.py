"""Lookup replicas on a real Apache Kafka (issue #21): both read modes with two replicas, and
a partitioned replica killed mid-load with no failed request.

Lists are produced straight to ``recommendations`` (4 partitions) with the worker's producer
settings (``partitioner=murmur2_random``), so the partition of every user is the one a
worker would write; no worker is needed to test the lookups.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest
from confluent_kafka import Producer

from consumers.partitioner import user_partition
from streamrec.broker import ensure_topics, free_port
from streamrec.kafka import producer_config
from streamrec.schema import FALLBACK_KEY
from streamrec.settings import Settings
from tests.integration.processes import Proc, metric, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.kafka_only]

PARTITIONS = 4
USERS = 400
START_S = 60


@pytest.fixture
def kafka(broker):
    if broker.engine == "tansu":
        pytest.skip("consumer groups on Tansu join in half the session timeout; Apache Kafka "
                    "only")
    return broker


@pytest.fixture
def scaled(kafka, settings: Settings) -> Settings:
    """The test's settings with a 4-partition recommendations topic and its own group."""
    tag = uuid.uuid4().hex[:8]
    s = settings.model_copy(update={
        "partitions": PARTITIONS, "topic_recommendations": f"recs4-{tag}",
        "topic_interactions": f"events4-{tag}", "lookup_group": f"lookup-{tag}",
        "lookup_members_topic": f"lookup-members-{tag}"})
    ensure_topics(s)
    return s


def fill(s: Settings, users: int = USERS) -> dict[int, list[str]]:
    """Lists for u0..u{users-1} and the fallback; the users of each partition, as Kafka
    placed them (delivery reports)."""
    placed: dict[int, list[str]] = {}

    def delivered(err, msg) -> None:
        assert err is None, err
        if msg.key() != FALLBACK_KEY.encode():
            placed.setdefault(msg.partition(), []).append(msg.key().decode())

    p = Producer(producer_config(s))
    for u in range(users):
        doc = {"user_id": f"u{u}", "items": [{"item_id": f"m{k}", "score": 1.0 - k / 40}
                                             for k in range(20)],
               "model_version": "t", "updated_at": 1.0, "source": "model"}
        p.produce(s.topic_recommendations, key=f"u{u}".encode(), value=orjson.dumps(doc),
                  on_delivery=delivered)
    fb = {"user_id": FALLBACK_KEY, "items": [{"item_id": "pop", "score": 1.0}],
          "model_version": "t", "updated_at": 1.0, "source": "fallback"}
    p.produce(s.topic_recommendations, key=FALLBACK_KEY.encode(), value=orjson.dumps(fb),
              on_delivery=delivered)
    assert p.flush(30) == 0
    return placed


def replica(s: Settings, tmp_path: Path, k: int, mode: str) -> tuple[Proc, Settings]:
    rs = s.model_copy(update={"state_dir": tmp_path / f"lookup{k}", "http_port": free_port(),
                              "lookup_mode": mode})
    return Proc(["serve"], rs, tmp_path / f"serve{k}-{mode}.log").start(), rs


def url(rs: Settings) -> str:
    return f"http://127.0.0.1:{rs.http_port}"


def sources(rs: Settings, users: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    with httpx.Client(base_url=url(rs), timeout=5) as c:
        for u in users:
            r = c.get(f"/recommendations/{u}", params={"n": 5})
            assert r.status_code == 200
            doc = r.json()
            assert doc["user_id"] == u
            out[doc["source"]] = out.get(doc["source"], 0) + 1
    return out


def partitions_of(rs: Settings) -> dict:
    return httpx.get(f"{url(rs)}/lookup/partitions", timeout=2).json()


def test_murmur2_names_the_partition_kafka_chose(scaled: Settings) -> None:
    placed = fill(scaled, 200)
    assert sum(len(v) for v in placed.values()) == 200 and len(placed) == PARTITIONS
    for p, users in placed.items():
        assert all(user_partition(u, PARTITIONS) == p for u in users)


def test_replica_mode_is_a_full_copy_each(scaled: Settings, tmp_path: Path) -> None:
    fill(scaled)
    procs = [replica(scaled, tmp_path, k, "replica") for k in range(2)]
    users = [f"u{u}" for u in range(USERS)]
    try:
        for proc, rs in procs:
            wait_until(lambda rs=rs: httpx.get(f"{url(rs)}/readyz").status_code == 200,
                       START_S, "replica ready", (proc,))
        for _, rs in procs:
            assert sources(rs, users) == {"model": USERS}
            assert sources(rs, ["nobody"]) == {"fallback": 1}
    finally:
        for proc, _ in procs:
            proc.stop()


class Load(threading.Thread):
    """Requests for every user, round and round, through one replica: every answer kept."""

    def __init__(self, rs: Settings, users: list[str]) -> None:
        super().__init__(daemon=True)
        self.rs, self.users = rs, users
        self.answers: list[tuple[float, str, int, str | None]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=url(self.rs), timeout=5) as c:
            while not self.halt.is_set():
                for u in self.users:
                    if self.halt.is_set():
                        break
                    try:
                        r = c.get(f"/recommendations/{u}")
                        doc = r.json() if r.status_code == 200 else {}
                        ok = doc.get("user_id") == u
                        self.answers.append((time.monotonic(), u, r.status_code,
                                             doc.get("source") if ok else "wrong user"))
                    except httpx.HTTPError as exc:
                        self.answers.append((time.monotonic(), u, 0, type(exc).__name__))


def test_partitioned_mode_forwards_and_a_killed_replica_loses_no_request(
        scaled: Settings, tmp_path: Path) -> None:
    placed = fill(scaled)
    users = [f"u{u}" for u in range(USERS)]
    (a, sa), (b, sb) = [replica(scaled, tmp_path, k, "partitioned") for k in range(2)]
    load = None
    try:
        for proc, rs in ((a, sa), (b, sb)):
            wait_until(lambda rs=rs: httpx.get(f"{url(rs)}/readyz").status_code == 200,
                       START_S, "partitioned replica ready", (a, b))
        # the group split the partitions; each replica knows who owns the rest
        wait_until(lambda: len(partitions_of(sa)["owned"]) + len(partitions_of(sb)["owned"])
                   == PARTITIONS and partitions_of(sa)["owned"] and partitions_of(sb)["owned"]
                   and len(partitions_of(sa)["owners"]) == PARTITIONS
                   and len(partitions_of(sb)["owners"]) == PARTITIONS, START_S,
                   "partitions shared", (a, b))
        # every user's list from either replica: its own, or forwarded to the owner
        for rs in (sa, sb):
            assert sources(rs, users) == {"model": USERS}
            assert metric(rs.http_port, "streamrec_lookup_forwarded_total",
                          '{outcome="ok"}') > 0
        theirs = [int(p) for p in partitions_of(sb)["owned"]]
        b_users = [u for p in theirs for u in placed[p]]

        load = Load(sa, users)
        load.start()
        time.sleep(1.0)
        b.stop(signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: all(partitions_of(sa)["owned"].get(str(p)) == "ready"
                               for p in range(PARTITIONS)), START_S,
                   "the survivor serves every partition", (a,))
        wait_until(lambda: sources(sa, b_users) == {"model": len(b_users)}, 20,
                   "the dead replica's users served again", (a,))
        time.sleep(0.5)
        load.halt.set()
        load.join(10)
        after = [x for x in load.answers if x[0] >= killed]
        assert len(after) > 100
        bad = [x for x in load.answers if x[2] != 200 or x[3] not in ("model", "fallback")]
        assert not bad, f"{len(bad)} failed requests, e.g. {bad[:5]}"
        # while the dead replica's partitions were moving, its users got the fallback
        assert {x[3] for x in after if x[1] in set(b_users)} <= {"model", "fallback"}
        fallbacks = [x[0] for x in after if x[3] == "fallback"]
        print(f"after the kill: {len(after)} requests, {len(fallbacks)} answered with the "
              f"fallback, the last {max(fallbacks, default=killed) - killed:.2f} s after it")

        # the killed replica comes back on its state dir: it rejoins and resumes the
        # partitions it held from the offsets stored with its lists
        b, sb = Proc(["serve"], sb, tmp_path / "serve1-again.log").start(), sb
        wait_until(lambda: httpx.get(f"{url(sb)}/readyz").status_code == 200
                   and partitions_of(sb)["owned"], START_S, "rejoined with partitions",
                   (a, b))
        assert sources(sb, users) == {"model": USERS}
        assert sources(sa, users) == {"model": USERS}
    finally:
        if load is not None:
            load.halt.set()
        for proc in (a, b):
            proc.stop()
