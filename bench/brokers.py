"""Start times of each broker engine, and the demo's wall time.

    python bench/brokers.py [--runs 3] [--demo]

Tansu start; Apache Kafka warm start (cached jars, fresh data dir), restart on its data dir;
with --demo, ``streamrec demo --exit-after`` wall time on the embedded broker (full ML-100K).
Writes bench/results/brokers.json.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import median, print_table, write_results  # noqa: E402
from streamrec.broker import free_port, start_broker  # noqa: E402


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--demo", action="store_true", help="also time the demo")
    args = ap.parse_args()
    res: dict[str, list[float]] = {"tansu_start_s": [], "kafka_warm_start_s": [],
                                   "kafka_restart_s": [], "demo_wall_s": [], "demo_ready_s": []}
    for _ in range(args.runs):
        dt, b = timed(lambda: start_broker("tansu", free_port()))
        res["tansu_start_s"].append(dt)
        b.stop()
        data = Path(tempfile.mkdtemp(prefix="kbench-"))
        port = free_port()
        dt, b = timed(lambda: start_broker("kafka", port, data))
        res["kafka_warm_start_s"].append(dt)
        b.stop()
        dt, b = timed(lambda: start_broker("kafka", port, data))
        res["kafka_restart_s"].append(dt)
        b.stop()
        shutil.rmtree(data, ignore_errors=True)
    if args.demo:
        from streamrec.demo import run_demo
        for _ in range(args.runs):
            out = run_demo(rate=500, http_port=free_port(), serve_forever=False)
            res["demo_wall_s"].append(out["wall_s"])
            res["demo_ready_s"].append(out["ready_s"])
    rows = [[k, median(v), min(v) if v else float("nan"), max(v) if v else float("nan")]
            for k, v in res.items() if v]
    print_table(["measure", "median s", "min s", "max s"], rows)
    print(f"wrote {write_results('brokers', {'runs': res})}")


if __name__ == "__main__":
    main()
