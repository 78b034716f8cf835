"""Lookup HTTP API latency and throughput (one `streamrec serve` process).

    apt-get install -y hey wrk      # the load generators (Debian packages)
    python bench/lookup_http.py [--runs 3] [--rate 2000] [--seconds 8]

Fills the list store with 943 users' top-20 lists through the real topic, then measures
``GET /recommendations/u42?n=10`` with two generators:

- ``hey`` (Go, many threads; the figure of earlier commits): ``--rate`` requests/s as 20
  connections x rate/20 each, which arrive in bursts of 20 every 20/rate s; and the maximum
  with 50 connections;
- ``wrk`` (C, one thread, light): ~``--rate`` requests/s as 20 connections that each wait a
  random 0..~2x(20/rate) s between requests (arrivals close to random), and the maximum with
  50 connections.

First with the server and the generator sharing both cores (as a co-located client would),
then pinned: every thread of the server on the CPU that was idlest over the last second, the
generator on another (the server alone on a core, as far as other work on the machine
allows). The load average before each run is recorded: other work on the machine shows in
the tail latencies. Writes bench/results/lookup_http.json.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson
from confluent_kafka import Producer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import child_env, median, print_table, spawn, wait, write_results  # noqa: E402
from streamrec.broker import ensure_topics, free_port, start_broker  # noqa: E402
from streamrec.kafka import producer_config  # noqa: E402
from streamrec.settings import Settings  # noqa: E402

PACED_CONNS = 20
_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def hey(url: str, seconds: float, conns: int, qps_per_conn: float | None,
        cpu: int | None = None) -> dict[str, float]:
    cmd = ["hey", "-z", f"{seconds}s", "-c", str(conns)]
    if qps_per_conn:
        cmd += ["-q", str(qps_per_conn)]
    out = subprocess.run(_pin(cpu) + cmd + [url], capture_output=True, text=True,
                         check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = {int(p): float(v) * 1e3 for p, v in re.findall(r"(\d+)%+ in ([\d.]+) secs", out)}
    codes = re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)
    return {"rps": rps, "p50_ms": pct.get(50, float("nan")), "p99_ms": pct.get(99, float("nan")),
            "non_200": sum(int(n) for c, n in codes if c != "200")}


def wrk(url: str, seconds: float, conns: int, script: Path | None = None,
        cpu: int | None = None) -> dict[str, float]:
    cmd = ["wrk", "-t1", "-c", str(conns), "-d", f"{seconds:g}s", "--latency"]
    if script is not None:
        cmd += ["-s", str(script)]
    out = subprocess.run(_pin(cpu) + cmd + [url], capture_output=True, text=True,
                         check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = {int(p): float(v) * _UNIT_MS[u]
           for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out)
    return {"rps": rps, "p50_ms": pct.get(50, float("nan")), "p99_ms": pct.get(99, float("nan")),
            "non_200": (int(bad.group(1)) if bad else 0)
            + (sum(int(x) for x in errors.groups()) if errors else 0)}


def _pin(cpu: int | None) -> list[str]:
    return [] if cpu is None else ["taskset", "-c", str(cpu)]


def pin_process(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` (event loop, lookup consumer, librdkafka) onto ``cpus``."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except (ProcessLookupError, PermissionError):
            pass


def idlest_cpus(seconds: float = 1.0) -> list[int]:
    """CPU numbers, the idlest over the last ``seconds`` first (from /proc/stat)."""
    def idle() -> dict[int, int]:
        out = {}
        for line in Path("/proc/stat").read_text().splitlines():
            name, *ticks = line.split()
            if name.startswith("cpu") and name != "cpu":
                out[int(name[3:])] = int(ticks[3]) + int(ticks[4])  # idle + iowait
        return out
    before = idle()
    time.sleep(seconds)
    after = idle()
    return sorted(after, key=lambda c: before.get(c, 0) - after[c])


def paced_script(work: Path, rate: float) -> Path:
    """A wrk script: each of PACED_CONNS connections waits a random 0..max ms between
    requests, so together they send ~``rate`` requests/s at close to random times (the mean
    wait is ~0.5 ms short of conns/rate, for the request itself and wrk's ms timer)."""
    max_ms = max(1, round(2 * (PACED_CONNS * 1000 / rate - 0.5)))
    path = work / "paced.lua"
    path.write_text(f"math.randomseed(os.time())\n"
                    f"function delay() return math.random(0, {max_ms}) end\n")
    return path


def fill(s: Settings) -> None:
    p = Producer(producer_config(s))
    for u in range(1, 944):
        doc = {"user_id": f"u{u}", "items": [{"item_id": f"m{(u * 7 + k) % 1682 + 1}",
                                              "score": 1.0 - k / 20} for k in range(20)],
               "model_version": "bench", "updated_at": 0.0, "source": "model"}
        p.produce(s.topic_recommendations, key=f"u{u}".encode(), value=orjson.dumps(doc))
    p.flush(10)


def one_run(url: str, pid: int, args: argparse.Namespace, paced: Path) -> dict[str, dict]:
    rate, secs, all_cpus = args.rate, args.seconds, set(range(os.cpu_count() or 1))
    out: dict[str, dict] = {}
    pin_process(pid, all_cpus)
    out["hey_fixed"] = hey(url, secs, 20, rate / 20)
    out["hey_max"] = hey(url, secs, 50, None)
    out["wrk_paced"] = wrk(url, secs, PACED_CONNS, paced)
    out["wrk_max"] = wrk(url, secs, 50)
    if len(all_cpus) >= 2:
        server_cpu, gen_cpu = idlest_cpus()[:2]
        out["pinned_cpus"] = {"server": server_cpu, "generator": gen_cpu}
        pin_process(pid, {server_cpu})
        out["pinned_hey_fixed"] = hey(url, secs, 20, rate / 20, cpu=gen_cpu)
        out["pinned_wrk_paced"] = wrk(url, secs, PACED_CONNS, paced, cpu=gen_cpu)
        out["pinned_wrk_max"] = wrk(url, secs, 50, cpu=gen_cpu)
        pin_process(pid, all_cpus)
    return out


LABELS = {
    "hey_fixed": "hey, {rate} req/s (20 conns, bursts)",
    "hey_max": "hey, max (50 conns)",
    "wrk_paced": "wrk, ~{rate} req/s (20 conns, random gaps)",
    "wrk_max": "wrk, max (50 conns)",
    "pinned_hey_fixed": "pinned: hey, {rate} req/s",
    "pinned_wrk_paced": "pinned: wrk, ~{rate} req/s",
    "pinned_wrk_max": "pinned: wrk, max (50 conns)",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=float, default=2000)
    ap.add_argument("--seconds", type=float, default=8)
    args = ap.parse_args()
    for tool in ("hey", "wrk", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"bench/lookup_http.py needs '{tool}': apt-get install -y hey wrk")
    work = Path(tempfile.mkdtemp(prefix="streamrec-http-"))
    broker = start_broker("tansu", free_port())
    s = Settings(bootstrap_servers=broker.bootstrap, state_dir=work, http_port=free_port())
    ensure_topics(s)
    fill(s)
    serve = spawn(["serve"], child_env(s), work / "serve.log")
    base = f"http://127.0.0.1:{s.http_port}"
    runs: list[dict] = []
    try:
        wait(lambda: httpx.get(f"{base}/recommendations/u943").json()["source"] == "model",
             60, "lists stored")
        url = f"{base}/recommendations/u42?n=10"
        hey(url, 2, 10, None)  # warm-up
        paced = paced_script(work, args.rate)
        for _ in range(args.runs):
            load = os.getloadavg()[0]
            runs.append({"loadavg_1min_before": load, **one_run(url, serve.pid, args, paced)})
    finally:
        serve.terminate()
        serve.wait(20)
        broker.stop()
    medians = {}
    for key in LABELS:
        got = [r[key] for r in runs if key in r]
        if got:
            medians[key] = {"rps": median([g["rps"] for g in got]),
                            "p50_ms": median([g["p50_ms"] for g in got]),
                            "p99_ms": median([g["p99_ms"] for g in got]),
                            "non_200": sum(g["non_200"] for g in got)}
    print_table(["load", "req/s", "p50 ms", "p99 ms", "non-200"],
                [[LABELS[k].format(rate=f"{args.rate:g}"), round(m["rps"]), m["p50_ms"],
                  m["p99_ms"], m["non_200"]] for k, m in medians.items()])
    print("load average (1 min) before each run:",
          ", ".join(f"{r['loadavg_1min_before']:.2f}" for r in runs))
    path = write_results("lookup_http", {"medians": medians, "runs": runs, "args": vars(args)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
