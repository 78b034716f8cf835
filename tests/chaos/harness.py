"""The chaos harness: a real broker, worker and lookup under a steady stream and a steady
read load, faults injected as an operator meets them, and an exact account afterwards.

The stream (:class:`Stream`) sends events *without* ``event_id`` at a steady rate, each a
(user, item) pair never sent before, so the worker's dedup cannot hide a double
application and a lost event leaves a hole. Only events the broker acknowledged count as
produced. The read load (:class:`Reader`) asks the lookup API for random users at a steady
rate and records every status and latency. :func:`account` then stops the worker cleanly
and reads its own state (the RocksDB store and model checkpoint it would restart from):
each produced event must be among its user's items (else lost), and the events applied
must equal those produced (else doubled). :func:`lists_check` compares, for every touched
user, the list the lookup serves with the newest one on the ``recommendations`` topic and
requires it to be newer than the user's last event.

Used by ``tests/chaos`` (short, in CI) and ``bench/chaos.py`` (long, writes the table of
``docs/reliability.md``).
"""

from __future__ import annotations

import functools
import http.client
import multiprocessing
import random
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import orjson

from streamrec.broker import ensure_topics, free_port
from streamrec.delivery import DeliveringProducer
from streamrec.polling import wait_until
from streamrec.replay import read_topics
from streamrec.settings import Settings
from tests.integration.processes import Proc, metric

N_USERS = 2000
N_ITEMS = 1000


def chaos_settings(bootstrap: str, work: Path, **overrides: object) -> Settings:
    """Fresh topics (2 partitions), group, state dir and ports; checkpoints every second
    and a large padded model (slow checkpoint writes: kills land during them)."""
    tag = uuid.uuid4().hex[:6]
    s = Settings(bootstrap_servers=bootstrap, state_dir=work / f"state-{tag}",
                 topic_interactions=f"i-{tag}", topic_users=f"u-{tag}", topic_items=f"it-{tag}",
                 topic_recommendations=f"r-{tag}", topic_dlq=f"d-{tag}",
                 topic_quarantine=f"q-{tag}", topic_control=f"c-{tag}",
                 topic_released=f"rel-{tag}", worker_group=f"w-{tag}", partitions=2,
                 http_port=free_port(), worker_metrics_port=free_port(),
                 checkpoint_interval_s=1.0, padding_min=50_000, epochs_bootstrap=2,
                 **overrides)
    ensure_topics(s)
    return s


def pair(seq: int) -> tuple[str, str]:
    """The seq-th event's (user, item): unique for seq < N_USERS * N_ITEMS, spread so that
    no item is hit by a burst of new users (the guard would rightly hold those)."""
    rnd, user = divmod(seq, N_USERS)
    return f"c{user}", f"i{(rnd + user) % N_ITEMS}"


class Stream(threading.Thread):
    """Events at ``rate``/s until stopped; remembers which the broker acknowledged."""

    def __init__(self, s: Settings, rate: float = 1000.0) -> None:
        super().__init__(name="chaos-stream", daemon=True)
        self.s, self.rate = s, rate
        self._halt = threading.Event()
        self.sent = 0
        self.acked: set[int] = set()
        self.failed = 0
        self.replaced = 0
        self.last_sent: dict[str, float] = {}     # user -> when their last event was sent
        self._lock = threading.Lock()

    def _delivered(self, seq: int, err) -> None:
        with self._lock:
            if err is None:
                self.acked.add(seq)
            else:
                self.failed += 1

    def run(self) -> None:
        # like an app's EventProducer: a stuck librdkafka producer is replaced
        producer = DeliveringProducer(self.s, **{"message.timeout.ms": 600_000})
        start = time.perf_counter()
        topic = self.s.topic_interactions
        while not self._halt.is_set():
            due = int((time.perf_counter() - start) * self.rate)
            while self.sent < due:
                user, item = pair(self.sent)
                value = orjson.dumps({"user_id": user, "item_id": item, "event_type": "click"})
                # stamped before the send: stamped after, a descheduled thread could date
                # the event later than the list it produced (and call that list stale)
                self.last_sent[user] = time.time()
                producer.produce(topic, key=user.encode(), value=value,
                                 on_delivery=lambda err, _m, k=self.sent:
                                 self._delivered(k, err))
                self.sent += 1
            producer.poll(0)
            time.sleep(0.001)
        while producer.flush(1.0):
            pass
        self.replaced = producer.replaced

    def stop(self) -> None:
        self._halt.set()
        self.join(660)


def _read(port: int, rate: float, halt, out) -> None:
    """The reader's loop, in a process of its own (so the stream thread's GIL does not show
    in the lookup's latency): ``rate`` lookups/s of random users until ``halt`` is set."""
    rng = random.Random(1)
    conn: http.client.HTTPConnection | None = None
    samples: list[tuple[float, int, float]] = []
    start = time.perf_counter()
    k = 0
    while not halt.is_set():
        wait = start + k / rate - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        k += 1
        t0 = time.perf_counter()
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", f"/recommendations/c{rng.randrange(N_USERS)}")
            resp = conn.getresponse()
            resp.read()
            status = resp.status
        except (OSError, http.client.HTTPException):
            status = 0
            if conn is not None:
                conn.close()
            conn = None
        samples.append((time.time(), status, time.perf_counter() - t0))
    out.send(samples)
    out.close()


class Reader:
    """``rate`` lookups/s of random users from a separate process; status and latency of
    each, by time, in ``samples`` after :meth:`stop`."""

    def __init__(self, port: int, rate: float = 1000.0) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._halt = ctx.Event()
        self._recv, send = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_read, args=(port, rate, self._halt, send),
                                 name="chaos-reader", daemon=True)
        self.samples: list[tuple[float, int, float]] = []
        """(when, status or 0 for a connection error, seconds)"""

    def start(self) -> None:
        self._proc.start()

    def stop(self) -> None:
        self._halt.set()
        if self._recv.poll(30):
            self.samples = self._recv.recv()
        self._proc.join(10)


def worker_ready(s: Settings) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{s.worker_metrics_port}/readyz",
                         timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def writing_checkpoint(s: Settings) -> bool:
    """A checkpoint snapshot was taken and its background write has not finished."""
    snaps = metric(s.worker_metrics_port, "streamrec_worker_checkpoint_seconds_count",
                   '{phase="snapshot"}')
    writes = metric(s.worker_metrics_port, "streamrec_worker_checkpoint_seconds_count",
                    '{phase="write"}')
    return snaps > writes


wait_for = functools.partial(wait_until, interval=0.05, error=AssertionError,
                             retry_on=(httpx.HTTPError, OSError, ValueError, KeyError))
"""``wait_for(predicate, timeout, what, interval=0.05)``: poll until ``predicate`` holds
(:func:`streamrec.polling.wait_until`); AssertionError after ``timeout``."""


@dataclass
class Account:
    produced: int
    applied: int
    lost: int
    doubled: int
    lost_examples: list[tuple[str, str]]


def account(s: Settings, stream: Stream) -> Account:
    """From the worker's own state (after a clean stop): lost and doubled events."""
    from stream_app.store import WorkerStore

    store = WorkerStore(s.state_dir)
    try:
        loaded = store.load(s)
        assert loaded is not None, "the worker left no checkpoint"
        engine, wal_seq = loaded
        assert not list(store.wal_after(wal_seq)), "a clean stop leaves no WAL to replay"
    finally:
        store.close()
    pairs = [pair(seq) for seq in sorted(stream.acked)]
    rows = np.array([-1 if (r := engine.users.get(u)) is None else r for u, _ in pairs])
    cols = np.array([-1 if (c := engine.items.get(i)) is None else c for _, i in pairs])
    known = (rows >= 0) & (cols >= 0)
    held = np.zeros(len(pairs), bool)
    held[known] = engine.seen.contains(rows[known], cols[known])
    lost = [pairs[k] for k in np.flatnonzero(~held)]
    produced = len(stream.acked)
    doubled = max(0, engine.n_applied - (produced - len(lost)))
    return Account(produced, engine.n_applied, len(lost), doubled, lost[:5])


def lists_check(s: Settings, stream: Stream, within_s: float = 60.0) -> list[str]:
    """Users whose served list is not the newest published one, or predates their last
    event, ``within_s`` after the check began (the lookup may still be reading the last
    lists: its lag gauge only knows the ends of the fetches it has had; and a list producer
    found stuck after a broker restart is replaced only after the worker's ``STALL_S``, so
    the newest lists may not be on the topic yet: it is read again each round); empty when
    every touched user's latest list reached the lookup."""
    users = list(stream.last_sent.items())
    deadline = time.monotonic() + within_s
    with httpx.Client(base_url=f"http://127.0.0.1:{s.http_port}", timeout=5) as client:
        while True:
            newest = _newest_lists(s)
            bad = []
            for user, sent_at in users:
                served = client.get(f"/recommendations/{user}").json()
                top = newest.get(user)
                if top is None or served["updated_at"] != top["updated_at"] or \
                        top["updated_at"] < sent_at:
                    bad.append((user, sent_at))
            if not bad or time.monotonic() > deadline:
                for user, sent_at in bad:   # shown with a failing test: which check failed
                    served = client.get(f"/recommendations/{user}").json()
                    print(f"stale list of {user}: served updated_at "
                          f"{served.get('updated_at')}, newest on the topic "
                          f"{(newest.get(user) or {}).get('updated_at')}, last event sent "
                          f"at {sent_at}")
                return [user for user, _ in bad]
            users = bad
            time.sleep(1.0)


def _newest_lists(s: Settings) -> dict[str, dict]:
    """The newest list of every user on ``recommendations`` now."""
    newest: dict[str, dict] = {}
    for chunk in read_topics(s, [s.topic_recommendations]):
        for _, _, _, key, value, _ in chunk:
            if key is None or value is None:
                continue
            doc = orjson.loads(value)
            k = key.decode()
            if k not in newest or doc["updated_at"] >= newest[k]["updated_at"]:
                newest[k] = doc
    return newest


def reads_summary(reader: Reader, exempt: list[tuple[float, float]]) -> dict:
    """5xx and connection errors in all reads; p99 over the reads outside ``exempt``
    windows (the lookup down, or without a broker)."""
    def inside(t: float) -> bool:
        return any(a <= t <= b for a, b in exempt)

    five = sum(1 for _, st, _ in reader.samples if st >= 500)
    refused = sum(1 for t, st, _ in reader.samples if st == 0 and not inside(t))
    lat = sorted(d for t, st, d in reader.samples if st == 200 and not inside(t))
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1e3 if lat else float("nan")
    p50 = lat[len(lat) // 2] * 1e3 if lat else float("nan")
    return {"reads": len(reader.samples), "5xx": five, "errors_outside_outages": refused,
            "p50_ms": p50, "p99_ms": p99}


class Stack:
    """Worker and lookup processes of one scenario, restartable, logs in ``work``."""

    def __init__(self, s: Settings, work: Path) -> None:
        self.s, self.work = s, work
        self.worker: Proc | None = None
        self.lookup: Proc | None = None
        self._n = 0

    def _log(self, name: str) -> Path:
        self._n += 1
        return self.work / f"{self._n:02d}-{name}.log"

    def start_worker(self) -> Proc:
        self.worker = Proc(["worker", "--no-progress"], self.s, self._log("worker")).start()
        return self.worker

    def start_lookup(self) -> Proc:
        self.lookup = Proc(["serve"], self.s, self._log("serve")).start()
        return self.lookup

    def kill_worker(self) -> None:
        assert self.worker is not None
        self.worker.stop(signal.SIGKILL)

    def stop(self) -> dict[str, int | None]:
        codes = {}
        for name in ("worker", "lookup"):
            proc = getattr(self, name)
            if proc is not None:
                codes[name] = proc.stop(signal.SIGTERM, timeout=60)
        return codes


def warm_broker(bootstrap: str, seconds: float = 60.0, rate: float = 2000.0) -> None:
    """Produce and fetch ``rate`` small records/s on a throwaway topic for ``seconds``: a
    broker JVM just started spends its first minute compiling its hot paths (measured: the
    lookup's p99 in the first scenario on a fresh broker 5.3-6.5 ms, on one that had run a
    few scenarios 2.6-3.8 ms). A deployment's broker is long warm; the suite measures that."""
    from confluent_kafka import Consumer, Producer

    topic = f"warmup-{uuid.uuid4().hex[:6]}"
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": topic,
                         "auto.offset.reset": "earliest", "fetch.wait.max.ms": 5})
    consumer.subscribe([topic])
    start = time.perf_counter()
    sent = 0
    try:
        while (elapsed := time.perf_counter() - start) < seconds:
            while sent < elapsed * rate:
                producer.produce(topic, key=str(sent % 97).encode(), value=b"x" * 100)
                sent += 1
            producer.poll(0)
            consumer.consume(500, timeout=0.005)
        producer.flush(10)
    finally:
        consumer.close()
