"""Freshness and throughput through the live pipeline (broker, worker, lookup API).

    python bench/pipeline.py [--engine tansu|kafka] [--rates 100 1000] [--runs 3]

* freshness: background MovieLens-like events at RATE/s; every 0.1 s a probe event for a
  brand-new user; a poller asks the lookup HTTP API for each probe user until their model
  list is served. Latency = served - produced. p50/p99 over all probes, median of runs.
* throughput: N events produced as fast as possible into a running worker; events/s =
  N / (time until the worker's state holds all of them).
Writes bench/results/pipeline.json.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import orjson
from confluent_kafka import Producer

sys_path = str(Path(__file__).resolve().parents[1])
import sys  # noqa: E402

sys.path.insert(0, sys_path)

from bench.common import (child_env, fresh_settings, median, percentile, print_table, spawn,  # noqa: E402
                          wait, write_results)
from streamrec.broker import free_port, start_broker  # noqa: E402
from streamrec.kafka import producer_config  # noqa: E402
from streamrec.settings import Settings  # noqa: E402


def applied(s: Settings) -> float:
    text = httpx.get(f"http://127.0.0.1:{s.worker_metrics_port}/metrics", timeout=2).text
    for line in text.splitlines():
        if line.startswith("streamrec_worker_state_applied_events "):
            return float(line.split()[1])
    return 0.0



class Stack:
    """Fresh topics + worker + lookup on a broker; stopped with close()."""

    def __init__(self, bootstrap: str, workdir: Path, **overrides) -> None:
        self.s = fresh_settings(bootstrap, workdir, **overrides)
        tag = self.s.worker_group[2:]
        env = child_env(self.s)
        self.worker = spawn(["worker", "--no-progress"], env, workdir / f"worker-{tag}.log")
        self.lookup = spawn(["serve"], env, workdir / f"serve-{tag}.log")
        wait(lambda: httpx.get(f"http://127.0.0.1:{self.s.http_port}/healthz").status_code
             == 200, 60, "lookup")
        wait(lambda: "streamrec_worker_ready 1.0" in httpx.get(
            f"http://127.0.0.1:{self.s.worker_metrics_port}/metrics").text, 90, "worker")
        self.producer = Producer(producer_config(self.s, **{"linger.ms": 1}))

    def send(self, user: str, item: str) -> None:
        ev = {"user_id": user, "item_id": item, "event_type": "click", "timestamp": time.time()}
        self.producer.produce(self.s.topic_interactions, key=user.encode(),
                              value=orjson.dumps(ev))
        self.producer.poll(0)

    def close(self) -> None:
        for p in (self.worker, self.lookup):
            p.send_signal(signal.SIGTERM)
        for p in (self.worker, self.lookup):
            try:
                p.wait(30)
            except Exception:
                p.kill()


def warm_up(stack: Stack, n_users: int = 500, n_items: int = 1000, n: int = 20000) -> None:
    rng = random.Random(0)
    for _ in range(n):
        stack.send(f"w{rng.randrange(n_users)}", f"m{rng.randrange(n_items)}")
    stack.producer.flush(30)
    wait(lambda: applied(stack.s) >= n, 120, "warm-up applied")


def freshness(stack: Stack, rate: float, seconds: float) -> list[float]:
    """Latencies (s) of probe users' first model lists while background runs at ``rate``."""
    rng = random.Random(1)
    pending: dict[str, float] = {}
    lat: list[float] = []
    lock = threading.Lock()
    stop = threading.Event()

    def poll() -> None:
        client = httpx.Client(base_url=f"http://127.0.0.1:{stack.s.http_port}", timeout=2)
        while not stop.is_set() or pending:
            with lock:
                items = list(pending.items())
            for user, t0 in items:
                doc = client.get(f"/recommendations/{user}").json()
                if doc["source"] == "model":
                    with lock:
                        pending.pop(user, None)
                        lat.append(time.time() - t0)
                elif time.time() - t0 > 10:
                    with lock:
                        pending.pop(user, None)
                        lat.append(float("inf"))
            time.sleep(0.002)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    interval = 1.0 / rate
    start = time.perf_counter()
    k = 0
    next_probe = start
    while time.perf_counter() - start < seconds:
        k += 1
        stack.send(f"w{rng.randrange(500)}", f"m{rng.randrange(1000)}")
        now = time.perf_counter()
        if now >= next_probe:
            user = f"probe-{uuid.uuid4().hex[:8]}"
            stack.send(user, f"m{rng.randrange(1000)}")
            stack.producer.flush(1)
            with lock:
                pending[user] = time.time()
            next_probe = now + 0.1
        ahead = start + k * interval - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
    stack.producer.flush(10)
    stop.set()
    poller.join(20)
    return lat


def throughput(stack: Stack, n: int) -> float:
    base = applied(stack.s)
    rng = random.Random(2)
    t0 = time.perf_counter()
    for _ in range(n):
        stack.send(f"t{rng.randrange(5000)}", f"m{rng.randrange(2000)}")
    stack.producer.flush(60)
    wait(lambda: applied(stack.s) >= base + n, 600, "throughput events applied")
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", default="tansu", choices=["tansu", "kafka"])
    ap.add_argument("--rates", type=float, nargs="+", default=[100, 1000])
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--events", type=int, default=100_000, help="throughput events per run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ingest", default="agent", choices=["agent", "batch"])
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="streamrec-bench-"))
    broker = start_broker(args.engine, free_port(),
                          work / "kafka" if args.engine == "kafka" else None)
    fresh: dict[float, list[dict]] = {r: [] for r in args.rates}
    tput: list[float] = []
    try:
        for run in range(args.runs):
            # The synthetic users fire dozens of clicks within 0.1 s: bots by the guard's
            # rules (docs/guard-notes.md), so it is off here; it costs ~0.5 ms/100 events.
            stack = Stack(broker.bootstrap, work, ingest=args.ingest, guard_enabled=False)
            try:
                warm_up(stack)
                for rate in args.rates:
                    lat = freshness(stack, rate, args.seconds)
                    ok = [x for x in lat if x != float("inf")]
                    fresh[rate].append({"p50_ms": percentile(ok, 50) * 1e3,
                                        "p99_ms": percentile(ok, 99) * 1e3,
                                        "probes": len(lat), "timeouts": len(lat) - len(ok)})
                tput.append(throughput(stack, args.events))
            finally:
                stack.close()
            print(f"run {run + 1}/{args.runs} done", file=sys.stderr)
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    summary = {}
    for rate, runs in fresh.items():
        p50 = median([r["p50_ms"] for r in runs])
        p99 = median([r["p99_ms"] for r in runs])
        rows.append([f"freshness @ {rate:g} ev/s", f"p50 {p50:.0f} ms", f"p99 {p99:.0f} ms",
                     f"{sum(r['probes'] for r in runs)} probes"])
        summary[f"freshness_{rate:g}"] = {"p50_ms": p50, "p99_ms": p99, "runs": runs}
    rows.append(["sustained worker throughput", f"{median(tput):,.0f} ev/s",
                 f"runs {[round(t) for t in tput]}", f"{args.events} events/run"])
    summary["throughput_events_per_s"] = {"median": median(tput), "runs": tput}
    print_table(["measure", "median", "", ""], rows)
    path = write_results(f"pipeline-{args.engine}-{args.ingest}",
                         {"engine": args.engine, "args": vars(args),
                                                     **summary})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
