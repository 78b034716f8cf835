"""Event -> list served, hop by hop, on Apache Kafka at a steady background rate.

    python bench/latency_hops.py [--rate 1000] [--seconds 20] [--runs 3]
                                 [--producer-linger-ms L] [--set NAME=VALUE ...]

The stack of ``bench/pipeline.py`` (a warmed Kafka, fresh topics, a real ``streamrec worker``
and ``streamrec serve``, 20,000 warm-up clicks), with both topics switched to broker
append time (``message.timestamp.type=LogAppendTime``), so every record carries when the
broker appended it. Every 0.1 s one of the background clicks is by a brand-new user (a
probe); for each probe:

* ``t0``: just before the app's ``produce`` call (an ``EventProducer``-like producer with
  its default linger, 0 ms, unless ``--producer-linger-ms``);
* ``A1``: when the broker appended the event (its delivery report);
* ``W``: when the worker started building the user's list (the list's ``updated_at``);
* ``A2``: when the broker appended the list (a reader of ``recommendations`` in this
  process);
* ``S``: when the lookup API first served it (polled every 1 ms while the probe is young).

Hops: producer (A1 - t0: linger and the produce request), worker (W - A1: the fetch, the
micro-batch's parse, guard, WAL and ``fit_partial``), list (A2 - W: scoring, ranking, the
list's produce), lookup (S - A2: its fetch, validation, RocksDB write, and the HTTP answer,
with the poller's resolution). Also the worker's and the lookup's own histograms over the
phase. Prints a table (median and p99 per hop, end to end) and writes
bench/results/latency_hops.json.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import median, percentile, print_table, write_results  # noqa: E402
from bench.pipeline import Brokers, Probes, Stack, offer, warm_up  # noqa: E402
from streamrec.kafka import APP_LINGER_MS, consumer_config, producer_config  # noqa: E402


def append_time(s, topics: list[str]) -> None:
    """Records of ``topics`` carry the broker's append time from now on."""
    admin = AdminClient(s.kafka_common())
    entry = ConfigEntry("message.timestamp.type", "LogAppendTime",
                        incremental_operation=AlterConfigOpType.SET)
    futures = admin.incremental_alter_configs(
        [ConfigResource(ConfigResource.Type.TOPIC, t, incremental_configs=[entry])
         for t in topics])
    for fut in futures.values():
        fut.result(30)


class HopProbes:
    """Probe users' clicks, their appends and lists; the first served answers are polled
    by ``bench/pipeline.py``'s :class:`Probes`, every 0.2 ms while a probe is young."""

    def __init__(self, stack: Stack, linger_ms: float | None) -> None:
        self.stack = stack
        extra = {} if linger_ms is None else {"linger.ms": linger_ms}
        self.producer = Producer(producer_config(stack.s, **extra))
        self.poller = Probes(stack, young_s=0.05, young_every_s=0.001)
        self.t0: dict[str, float] = {}
        self.a1: dict[str, float] = {}
        self.a2: dict[str, float] = {}
        self.w: dict[str, float] = {}
        self._stop = threading.Event()
        self._assigned = threading.Event()
        self._reader = threading.Thread(target=self._read_lists, daemon=True)
        self._reader.start()
        self._warm(stack)

    def _warm(self, stack: Stack) -> None:
        """Connect the probe producer (metadata, producer id) and let the lists reader join
        before the first probe: an app's producer is long-lived. (Until 2026-12-05 the
        first probes waited ~0.4 s for a just-created producer: 4 of ~150 probes, the whole
        p99 of 405 ms the producer hop was quoted at.)"""
        self.producer.produce(stack.s.topic_interactions, key=b"w0",
                              value=orjson.dumps({"user_id": "w0", "item_id": "m0",
                                                  "event_type": "click"}))
        if self.producer.flush(30):
            raise RuntimeError("the probe producer could not reach the broker in 30 s")
        if not self._assigned.wait(60):
            raise RuntimeError("the lists reader got no partitions in 60 s")

    def send(self, item: str) -> None:
        user = f"probe-{uuid.uuid4().hex[:8]}"
        value = orjson.dumps({"user_id": user, "item_id": item, "event_type": "click"})
        t0 = time.time()
        self.producer.produce(self.stack.s.topic_interactions, key=user.encode(), value=value,
                              on_delivery=lambda err, m, u=user: self._appended(u, err, m))
        self.t0[user] = t0
        self.poller.add(user, t0)
        self.producer.poll(0)

    def _appended(self, user: str, err, msg) -> None:
        if err is None:
            self.a1[user] = msg.timestamp()[1] / 1000.0

    def _read_lists(self) -> None:
        s = self.stack.s
        c = Consumer(consumer_config(s, f"hops-{uuid.uuid4().hex[:6]}",
                                     **{"auto.offset.reset": "latest"}))
        c.subscribe([s.topic_recommendations], on_assign=lambda *_: self._assigned.set())
        while not self._stop.is_set():
            m = c.poll(0.1)
            if m is None or m.error() is not None or m.key() is None:
                continue
            user = m.key().decode()
            if user.startswith("probe-") and user not in self.a2:
                doc = orjson.loads(m.value())
                if doc.get("source") == "model":
                    self.a2[user] = m.timestamp()[1] / 1000.0
                    self.w[user] = doc["updated_at"]
        c.close()

    def finish(self) -> list[dict]:
        self.producer.flush(10)
        self.poller.finish()
        time.sleep(0.5)
        self._stop.set()
        self._reader.join(5)
        served = self.poller.served
        rows = []
        for user, t0 in self.t0.items():
            if all(user in d for d in (self.a1, self.w, self.a2, served)):
                rows.append({"producer": self.a1[user] - t0, "worker": self.w[user] - self.a1[user],
                             "list": self.a2[user] - self.w[user],
                             "lookup": served[user] - self.a2[user],
                             "total": served[user] - t0})
        return rows


class _ProbeStack:
    """``offer`` sends probes through ``probes.send`` and background through the stack."""

    def __init__(self, probes: HopProbes) -> None:
        self.probes = probes

    def send(self, item: str) -> None:
        self.probes.send(item)


def run_once(brokers: Brokers, work: Path, rate: float, seconds: float,
             linger_ms: float | None, overrides: dict, load_linger_ms: float = 5
             ) -> list[dict]:
    stack = Stack(brokers.fresh(), work, load_linger_ms=load_linger_ms, guard_enabled=False,
                  **brokers.settings(overrides))
    try:
        append_time(stack.s, [stack.s.topic_interactions, stack.s.topic_recommendations])
        warm_up(stack)
        probes = HopProbes(stack, linger_ms)
        offer(stack, rate, seconds, _ProbeStack(probes))
        return probes.finish()
    finally:
        stack.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--producer-linger-ms", type=float, default=APP_LINGER_MS,
                    help="the probe producer's linger (default: EventProducer's)")
    ap.add_argument("--load-linger-ms", type=float, default=5.0,
                    help="the load producer's linger (one producer sending --rate events/s)")
    ap.add_argument("--jvm-warmup", type=float, default=60.0)
    ap.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE")
    args = ap.parse_args()
    overrides = dict(kv.split("=", 1) for kv in args.set)
    work = Path(tempfile.mkdtemp(prefix="streamrec-hops-"))
    brokers = Brokers("kafka", work, args.jvm_warmup)
    runs = []
    try:
        for k in range(args.runs):
            runs.append(run_once(brokers, work, args.rate, args.seconds,
                                 args.producer_linger_ms, overrides, args.load_linger_ms))
            print(f"run {k + 1}/{args.runs}: {len(runs[-1])} probes", file=sys.stderr)
    finally:
        brokers.stop()
        shutil.rmtree(work, ignore_errors=True)
    hops = ["producer", "worker", "list", "lookup", "total"]
    table, summary = [], {}
    for hop in hops:
        p50 = [percentile([r[hop] for r in run], 50) * 1e3 for run in runs if run]
        p99 = [percentile([r[hop] for r in run], 99) * 1e3 for run in runs if run]
        summary[hop] = {"p50_ms": median(p50), "p99_ms": median(p99), "runs_p50": p50,
                        "runs_p99": p99}
        table.append([hop, median(p50), median(p99), " / ".join(f"{v:.1f}" for v in p50)])
    print_table(["hop", "p50 ms (median of runs)", "p99 ms", "p50 per run"], table)
    path = write_results("latency_hops", {"args": vars(args), "settings": overrides,
                                          "hops": summary, "probes": [len(r) for r in runs]})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
