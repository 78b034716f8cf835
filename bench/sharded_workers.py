"""User-sharded workers on Apache Kafka (issue #21, docs/scaling.md "Sharded workers").

Two measurements, real processes on a real single-node Kafka:

- **drain**: workers started on empty topics, then ``--events`` synthetic events produced as
  fast as the producer goes; the time until every event is in the workers' state
  (``streamrec_worker_state_applied_events`` summed over shards). One worker (shards = 1)
  against 2 shards under one supervisor, on the same box in the same run. On 2 cores the
  shards compete with each other and with the broker for the same cores: this says what
  sharding costs per event here, not what N machines gain.
- **failover**: two supervisors, 2 shards, a steady ``--rate`` ev/s stream; ``kill -9`` of a
  supervisor that runs a shard; the time until its shard runs again on the other supervisor
  (ready), until the shards have caught up with the stream, and at the end: events produced
  against applied (lost or doubled), per repetition.

    python bench/sharded_workers.py                 # ~4 min
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (child_env, fresh_settings, median, print_table, spawn,  # noqa: E402
                          wait, write_results)
from producers import EventProducer  # noqa: E402
from streamrec.broker import free_port, start_broker  # noqa: E402
from streamrec.settings import Settings  # noqa: E402

SHARDS = 2


def metric(port: int, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    m = re.search(rf"^{re.escape(name)}\s+([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def applied_on(ports: list[int]) -> int:
    """Events applied over the worker processes answering on ``ports`` (others: down)."""
    total = 0
    for p in ports:
        try:
            total += int(metric(p, "streamrec_worker_state_applied_events"))
        except httpx.HTTPError:
            continue
    return total


def ready_on(port: int) -> bool:
    try:
        return metric(port, "streamrec_worker_ready") == 1
    except httpx.HTTPError:
        return False


def synthetic(n: int, users: int = 5000, items: int = 2000, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    u = rng.integers(0, users, n)
    i = (rng.pareto(1.2, n) * 40).astype(int) % items
    return [{"user_id": f"u{a}", "item_id": f"i{b}", "event_type": "click"}
            for a, b in zip(u.tolist(), i.tolist())]


def settings_for(bootstrap: str, work: Path, shards: int) -> Settings:
    return fresh_settings(bootstrap, work, partitions=2 * SHARDS, shards=shards,
                          guard_enabled=False, checkpoint_interval_s=2.0,
                          **({"item_deltas_topic": f"deltas-{time.monotonic_ns()}",
                              "shard_leases_topic": f"leases-{time.monotonic_ns()}"}
                             if shards > 1 else {}))


def child_ports(base: int, shards: int) -> list[int]:
    return [base] if shards == 1 else [base + 1 + k for k in range(shards)]


def drain(bootstrap: str, work: Path, shards: int, n: int) -> dict[str, Any]:
    s = settings_for(bootstrap, work, shards)
    base = s.worker_metrics_port
    proc = spawn(["worker", "--no-progress"], child_env(s), work / f"drain-{shards}.log")
    ports = child_ports(base, shards)
    try:
        wait(lambda: all(ready_on(p) for p in ports), 120, "workers ready")
        events = synthetic(n)
        t0 = time.monotonic()
        with EventProducer(s) as p:
            for ev in events:
                p.send(ev)
        produced_s = time.monotonic() - t0
        wait(lambda: applied_on(ports) >= n, 600, "every event applied")
        elapsed = time.monotonic() - t0
        final = applied_on(ports)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    return {"shards": shards, "events": n, "produced_s": round(produced_s, 2),
            "seconds": round(elapsed, 2), "events_per_s": round(n / elapsed),
            "applied": final}


class Stream(threading.Thread):
    def __init__(self, s: Settings, events: list[dict], rate: float) -> None:
        super().__init__(daemon=True)
        self.s, self.events, self.rate, self.sent = s, events, rate, 0

    def run(self) -> None:
        with EventProducer(self.s) as p:
            t0 = time.monotonic()
            for k, ev in enumerate(self.events):
                delay = t0 + k / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                p.send(ev)
                self.sent = k + 1


def failover(bootstrap: str, work: Path, rate: float, seconds: float, rep: int
             ) -> dict[str, Any]:
    s = settings_for(bootstrap, work, SHARDS)
    bases = [free_port(), free_port()]
    procs = [spawn(["worker", "--no-progress"],
                   child_env(s.model_copy(update={"worker_metrics_port": b})),
                   work / f"failover-{rep}-{k}.log") for k, b in enumerate(bases)]
    all_ports = [p for b in bases for p in child_ports(b, SHARDS)]
    try:
        for k in range(SHARDS):
            wait(lambda k=k: any(ready_on(b + 1 + k) for b in bases), 120, f"shard {k}")
        n = int(rate * seconds)
        stream = Stream(s, synthetic(n, seed=rep), rate)
        stream.start()
        time.sleep(seconds / 3)
        victim = next(k for k, b in enumerate(bases)
                      if any(ready_on(p) for p in child_ports(b, SHARDS)))
        moved = [k for k in range(SHARDS) if ready_on(bases[victim] + 1 + k)]
        t_kill = time.monotonic()
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait(30)
        other = bases[1 - victim]
        wait(lambda: all(ready_on(other + 1 + k) for k in moved), 120, "shards moved")
        t_ready = time.monotonic() - t_kill
        wait(lambda: applied_on(all_ports) >= stream.sent - rate * 0.5, 120, "caught up")
        t_caught = time.monotonic() - t_kill
        stream.join()
        wait(lambda: applied_on(all_ports) >= n, 120, "every event applied")
        time.sleep(3)
        final = applied_on(all_ports)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(120)
    return {"rep": rep, "rate": rate, "produced": n, "applied": final,
            "lost": max(0, n - final), "doubled": max(0, final - n),
            "shards_moved": moved, "ready_after_s": round(t_ready, 2),
            "caught_up_after_s": round(t_caught, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=40_000)
    ap.add_argument("--drain-runs", type=int, default=2)
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="sharded-bench-"))
    broker = start_broker("kafka", free_port(), work / "kafka")
    try:
        drains = []
        for run in range(args.drain_runs):
            for shards in (1, SHARDS):
                drains.append({"run": run, **drain(broker.bootstrap, work, shards,
                                                   args.events)})
                print(drains[-1], flush=True)
        fails = []
        for rep in range(args.reps):
            fails.append(failover(broker.bootstrap, work, args.rate, args.seconds, rep))
            print(fails[-1], flush=True)
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    print("\ndrain (events produced at once, time until all are in the state)")
    print_table(["run", "shards", "events", "seconds", "events/s"],
                [[d["run"], d["shards"], d["events"], d["seconds"], d["events_per_s"]]
                 for d in drains])
    print("\nfailover (kill -9 of a supervisor under a steady stream)")
    print_table(["rep", "ev/s", "produced", "applied", "lost", "doubled", "ready after s",
                 "caught up after s"],
                [[f["rep"], f["rate"], f["produced"], f["applied"], f["lost"], f["doubled"],
                  f["ready_after_s"], f["caught_up_after_s"]] for f in fails])
    summary = {
        "drain_events_per_s_median": {str(k): median([d["events_per_s"] for d in drains
                                                      if d["shards"] == k])
                                      for k in (1, SHARDS)},
        "failover_ready_s_median": median([f["ready_after_s"] for f in fails]),
        "failover_caught_up_s_median": median([f["caught_up_after_s"] for f in fails]),
        "lost": sum(f["lost"] for f in fails), "doubled": sum(f["doubled"] for f in fails)}
    print("\n", summary)
    path = write_results("sharded_workers", {"args": vars(args), "drain": drains,
                                             "failover": fails, "summary": summary})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
