"""Tansu's fetch cost against the number of record batches already in the partition.

    python bench/tansu_fetch.py [--fills 0 5000 10000 20000] [--rate 200]

One topic on a fresh embedded broker. Each step first writes ``fill`` single-record batches
(one flush each, as a live producer at a low rate does), then a consumer at the tail
(fetch.wait.max.ms 10) times 300 single-record produces at ``--rate`` per second: hop =
consumed - produced. Tansu's CPU over the step comes from /proc (psutil). Prints a table and
writes bench/results/tansu_fetch.json. Found: the hop and Tansu's CPU grow with the batches
in the partition (docs/latency-notes.md).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import print_table, write_results  # noqa: E402
from streamrec.broker import free_port, start_broker  # noqa: E402

TOPIC = "fetch-cost"


def hop(bootstrap: str, start: int, n: int, rate: float, broker: psutil.Process) -> dict:
    """Tail-consumer latency of ``n`` produces, and the broker's CPU meanwhile."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g{start}",
                  "fetch.wait.max.ms": 10, "fetch.queue.backoff.ms": 1})
    c.assign([TopicPartition(TOPIC, 0, start)])
    lat: list[float] = []
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set():
            m = c.poll(0.1)
            if m is not None and m.error() is None and m.value() != b"f":
                lat.append(time.time() - float(m.value()))

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(1)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    broker.cpu_percent()
    for _ in range(n):
        p.produce(TOPIC, value=repr(time.time()).encode())
        p.poll(0)
        time.sleep(1 / rate)
    p.flush(10)
    deadline = time.time() + 20
    while len(lat) < n and time.time() < deadline:
        time.sleep(0.1)
    cpu = broker.cpu_percent()
    stop.set()
    t.join()
    c.close()
    ms = np.array(lat) * 1000
    return {"delivered": len(lat), "broker_cpu_pct": cpu,
            "hop_ms_p50": float(np.percentile(ms, 50)) if len(ms) else None,
            "hop_ms_p90": float(np.percentile(ms, 90)) if len(ms) else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fills", type=int, nargs="+", default=[0, 5000, 10000, 20000])
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--probes", type=int, default=300)
    args = ap.parse_args()
    broker = start_broker("tansu", free_port(), None)
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        for future in admin.create_topics([NewTopic(TOPIC, 1, 1)]).values():
            future.result()
        proc = psutil.Process(broker.proc.pid)
        filler = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
        total, rows, results = 0, [], []
        for fill in args.fills:
            for _ in range(fill):
                filler.produce(TOPIC, value=b"f")
                filler.flush(10)
            total += fill
            r = hop(broker.bootstrap, total, args.probes, args.rate, proc)
            total += args.probes
            r["batches_in_partition"] = total
            results.append(r)
            rows.append([total, r["delivered"], r["hop_ms_p50"], r["hop_ms_p90"],
                         r["broker_cpu_pct"]])
            print(f"{total} batches done", file=sys.stderr, flush=True)
    finally:
        broker.stop()
    print_table(["batches in partition", "delivered", "hop p50 ms", "hop p90 ms",
                 "Tansu CPU %"], rows)
    print(f"wrote {write_results('tansu_fetch', {'args': vars(args), 'steps': results})}")


if __name__ == "__main__":
    main()
