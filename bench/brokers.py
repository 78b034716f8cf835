"""Start times of each broker engine, the demo's wall time, and the idle cost of its stack.

    python bench/brokers.py [--runs 3] [--demo] [--idle 60]

Tansu start; Apache Kafka start (cached jars, fresh data dir) and restart on its data dir.
With --demo: ``streamrec demo --exit-after`` wall time on the default broker (Apache Kafka),
the first run with an empty jar cache (the download included), the others warm; and with
``--idle S`` the CPU the whole demo stack (broker, worker, lookup, the demo itself) burns in
S seconds of idling after the demo, read from /proc through psutil. Writes
bench/results/brokers.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
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


def broker_starts(runs: int) -> dict[str, list[float]]:
    res: dict[str, list[float]] = {"tansu_start_s": [], "kafka_start_s": [],
                                   "kafka_restart_s": []}
    for _ in range(runs):
        dt, b = timed(lambda: start_broker("tansu", free_port()))
        res["tansu_start_s"].append(dt)
        b.stop()
        data = Path(tempfile.mkdtemp(prefix="kbench-"))
        port = free_port()
        dt, b = timed(lambda: start_broker("kafka", port, data))
        res["kafka_start_s"].append(dt)
        b.stop()
        dt, b = timed(lambda: start_broker("kafka", port, data))
        res["kafka_restart_s"].append(dt)
        b.stop()
        shutil.rmtree(data, ignore_errors=True)
    return res


def demo_runs(runs: int, engine: str) -> dict[str, list[float]]:
    """Wall time of the whole demo; on kafka the first run starts with an empty jar cache."""
    from streamrec.cli.demo import run_demo

    res: dict[str, list[float]] = {f"demo_{engine}_cold_wall_s": [],
                                   f"demo_{engine}_wall_s": [], f"demo_{engine}_ready_s": [],
                                   f"demo_{engine}_broker_s": []}
    for k in range(runs):
        cold = engine == "kafka" and k == 0
        cache = Path(tempfile.mkdtemp(prefix="jar-cache-")) if cold else None
        if cache is not None:
            os.environ["STREAMREC_CACHE_DIR"] = str(cache)
        try:
            out = run_demo(rate=500, http_port=free_port(), engine=engine, serve_forever=False)
        finally:
            if cache is not None:
                del os.environ["STREAMREC_CACHE_DIR"]
                shutil.rmtree(cache, ignore_errors=True)
        res[f"demo_{engine}_cold_wall_s" if cold else f"demo_{engine}_wall_s"].append(
            out["wall_s"])
        res[f"demo_{engine}_ready_s"].append(out["ready_s"])
        res[f"demo_{engine}_broker_s"].append(out["broker_s"])
    return res


def idle_cpu(seconds: float, engine: str) -> dict[str, float]:
    """CPU seconds per process of a demo stack idling for ``seconds`` after its replay."""
    import psutil

    state = Path(tempfile.mkdtemp(prefix="demo-idle-"))
    p = subprocess.Popen([sys.executable, "-m", "streamrec.cli", "demo", "--engine", engine,
                          "--port", str(free_port()), "--state-dir", str(state)],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         start_new_session=True)
    try:
        for line in p.stdout:
            if "serving until Ctrl-C" in line:
                break
        else:
            raise RuntimeError("the demo ended before serving")
        time.sleep(5)   # let the last lists and checkpoints settle
        procs = [psutil.Process(p.pid), *psutil.Process(p.pid).children(recursive=True)]

        def cpu() -> dict[str, float]:
            out = {}
            for proc in procs:
                t = proc.cpu_times()
                name = " ".join(proc.cmdline()[3:5]) if "streamrec.cli" in proc.cmdline() \
                    else ("java (broker)" if "java" in proc.name() else proc.name())
                out[f"{name} [{proc.pid}]"] = t.user + t.system + t.children_user + \
                    t.children_system
            return out

        before = cpu()
        time.sleep(seconds)
        after = cpu()
        return {k: (after[k] - before[k]) / seconds * 100 for k in before}
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
        shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--demo", action="store_true", help="also time the demo")
    ap.add_argument("--engine", default="kafka", choices=["kafka", "tansu"],
                    help="the demo's broker")
    ap.add_argument("--idle", type=float, default=0, help="seconds of idle CPU to measure")
    ap.add_argument("--no-starts", action="store_true", help="skip the broker start times")
    args = ap.parse_args()
    res = {} if args.no_starts else broker_starts(args.runs)
    if args.demo:
        res.update(demo_runs(args.runs, args.engine))
    rows = [[k, median(v), min(v), max(v)] for k, v in res.items() if v]
    print_table(["measure", "median s", "min s", "max s"], rows)
    out: dict = {"runs": res}
    if args.idle:
        cpu = idle_cpu(args.idle, args.engine)
        print_table(["process", "% of one core"], [[k, v] for k, v in cpu.items()])
        print(f"whole stack: {sum(cpu.values()):.2f} % of one core over {args.idle:g} s idle")
        out["idle_cpu_percent"] = cpu
        out["idle_cpu_total_percent"] = sum(cpu.values())
    name = "brokers" if args.engine == "kafka" else f"brokers-{args.engine}"
    print(f"wrote {write_results(name, out)}")


if __name__ == "__main__":
    main()
