"""Lookup HTTP API latency and throughput (one `streamrec serve` process).

    apt-get install -y hey          # the load generator (Debian package)
    python bench/lookup_http.py [--runs 3] [--rate 2000] [--seconds 10]

Fills the list store with 943 users' top-20 lists through the real topic, then, with `hey`:
latency at a fixed ``--rate`` requests/s (p50/p99), and the maximum requests/s with 50
concurrent connections. Writes bench/results/lookup_http.json.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import orjson
from confluent_kafka import Producer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import child_env, median, print_table, spawn, wait, write_results  # noqa: E402
from streamrec.broker import ensure_topics, free_port, start_broker  # noqa: E402
from streamrec.kafka import producer_config  # noqa: E402
from streamrec.settings import Settings  # noqa: E402


def hey(url: str, seconds: float, conns: int, qps_per_conn: float | None) -> dict[str, float]:
    cmd = ["hey", "-z", f"{seconds}s", "-c", str(conns)]
    if qps_per_conn:
        cmd += ["-q", str(qps_per_conn)]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = {int(p): float(v) * 1e3 for p, v in re.findall(r"(\d+)%+ in ([\d.]+) secs", out)}
    codes = re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)
    return {"rps": rps, "p50_ms": pct.get(50, float("nan")), "p99_ms": pct.get(99, float("nan")),
            "non_200": sum(int(n) for c, n in codes if c != "200")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=float, default=2000)
    ap.add_argument("--seconds", type=float, default=10)
    args = ap.parse_args()
    if not shutil.which("hey"):
        sys.exit("bench/lookup_http.py needs the load generator 'hey': apt-get install -y hey")
    work = Path(tempfile.mkdtemp(prefix="streamrec-http-"))
    broker = start_broker("tansu", free_port())
    s = Settings(bootstrap_servers=broker.bootstrap, state_dir=work, http_port=free_port())
    ensure_topics(s)
    p = Producer(producer_config(s))
    for u in range(1, 944):
        doc = {"user_id": f"u{u}", "items": [{"item_id": f"m{(u * 7 + k) % 1682 + 1}",
                                              "score": 1.0 - k / 20} for k in range(20)],
               "model_version": "bench", "updated_at": 0.0, "source": "model"}
        p.produce(s.topic_recommendations, key=f"u{u}".encode(), value=orjson.dumps(doc))
    p.flush(10)
    serve = spawn(["serve"], child_env(s), work / "serve.log")
    base = f"http://127.0.0.1:{s.http_port}"
    try:
        wait(lambda: httpx.get(f"{base}/recommendations/u943").json()["source"] == "model",
             60, "lists stored")
        url = f"{base}/recommendations/u42?n=10"
        hey(url, 2, 10, None)  # warm-up
        fixed, peak = [], []
        for _ in range(args.runs):
            conns = 20
            fixed.append(hey(url, args.seconds, conns, args.rate / conns))
            peak.append(hey(url, args.seconds, 50, None))
    finally:
        serve.terminate()
        serve.wait(20)
        broker.stop()
    rows = [[f"at {args.rate:g} req/s", median([r["rps"] for r in fixed]),
             median([r["p50_ms"] for r in fixed]), median([r["p99_ms"] for r in fixed]),
             sum(r["non_200"] for r in fixed)],
            ["max (50 connections)", median([r["rps"] for r in peak]),
             median([r["p50_ms"] for r in peak]), median([r["p99_ms"] for r in peak]),
             sum(r["non_200"] for r in peak)]]
    print_table(["load", "req/s", "p50 ms", "p99 ms", "non-200"], rows)
    path = write_results("lookup_http", {"fixed_rate": fixed, "max": peak, "args": vars(args)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
