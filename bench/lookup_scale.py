"""Lookup replicas, both read modes, measured: req/s, p99, CPU per request, restore time.

    apt-get install -y wrk          # the load generator (Debian package)
    python bench/lookup_scale.py [--users 100000] [--partitions 12] [--replicas 1 2 4]
                                 [--modes replica partitioned] [--runs 3] [--seconds 8]

A real Apache Kafka 3.9 broker; ``recommendations`` with ``--partitions`` partitions holding
``--users`` top-20 lists (``u1`` .. ``uN``) and the fallback. For each mode and replica
count, that many ``streamrec serve`` processes, each with its own state dir and port:

- ``replica`` (Mode A, the default): each reads every partition (a full copy);
- ``partitioned`` (Mode B): one consumer group, each stores its partitions, forwards the
  rest (``consumers/partitioned.py``).

Load: one ``wrk`` process (one thread) per replica, as a load balancer would spread clients,
each asking for uniformly random users (so in Mode B (R-1)/R of requests are forwarded):

- *paced*: ~``--rate`` req/s in all from 20 connections waiting a random 0..2x gap (as
  ``bench/lookup_http.py``), p50 / p99 at a fixed load;
- *max*: 48 connections in all, closed loop, as fast as it goes.

p99 over several generators is the largest of their p99s (an upper bound of the p99 of all
requests together). Everything shares the machine's 2 cores: the CPU time of every server
and of the generators is read per run (``/proc/PID/stat``, ``wait4`` rusage), so server
CPU per request, the number that carries to a bigger machine, is printed beside req/s.

Restore (``--kill``): Mode B, under paced load on the survivors, ``kill -9`` of one replica:
a probe asks a survivor for users of the victim's partitions every 5 ms; time until the
group gave the partitions to survivors, until they were restored, until every answer is
the user's list again, and how many requests failed (must be 0). Mode A: the killed
replica restarted on its state dir (serves its stored lists at once; time to ready) and a
new replica on an empty state dir (time to copy every list). Writes
``bench/results/lookup_scale.json``.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
from confluent_kafka import Producer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import child_env, median, print_table, spawn, wait, write_results  # noqa: E402
from consumers.partitioner import user_partition  # noqa: E402
from streamrec.broker import ensure_topics, free_port, start_broker  # noqa: E402
from streamrec.kafka import producer_config  # noqa: E402
from streamrec.schema import FALLBACK_KEY  # noqa: E402
from streamrec.settings import Settings  # noqa: E402

_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
PACED_CONNS = 20
MAX_CONNS = 48
TICK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- data
def fill(s: Settings, users: int) -> None:
    """``users`` top-20 lists and the fallback, through the real topic."""
    p = Producer(producer_config(s, **{"linger.ms": 20}))
    for u in range(1, users + 1):
        doc = {"user_id": f"u{u}", "items": [{"item_id": f"m{(u * 7 + k) % 1682 + 1}",
                                              "score": round(1.0 - k / 20, 3)}
                                             for k in range(20)],
               "model_version": "bench", "updated_at": 1.0, "source": "model"}
        p.produce(s.topic_recommendations, key=f"u{u}".encode(), value=orjson.dumps(doc))
        if u % 20_000 == 0:
            p.flush(30)
    fb = {"user_id": FALLBACK_KEY, "items": [{"item_id": f"m{k}", "score": 1.0}
                                             for k in range(1, 21)],
          "model_version": "bench", "updated_at": 1.0, "source": "fallback"}
    p.produce(s.topic_recommendations, key=FALLBACK_KEY.encode(), value=orjson.dumps(fb))
    p.flush(30)


# --------------------------------------------------------------------------- processes
class Replica:
    def __init__(self, s: Settings, work: Path, name: str) -> None:
        self.settings, self.name, self.work = s, name, work
        self.url = f"http://127.0.0.1:{s.http_port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Replica":
        env = child_env(self.settings)
        env["STREAMREC_LOG_LEVEL"] = "INFO"
        self.proc = spawn(["serve"], env, self.work / f"{self.name}.log")
        return self

    def cpu_s(self) -> float:
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / TICK
        except (OSError, IndexError, ValueError):
            return 0.0

    def ready(self) -> bool:
        return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def start_replicas(base: Settings, work: Path, mode: str, count: int) -> list[Replica]:
    tag = uuid.uuid4().hex[:6]
    reps = []
    for r in range(count):
        s = base.model_copy(update={
            "state_dir": work / f"{mode}-{count}-{tag}-{r}", "http_port": free_port(),
            "lookup_mode": mode, "lookup_group": f"lookup-{tag}",
            "lookup_members_topic": f"lookup-members-{tag}"})
        reps.append(Replica(s, work, f"serve-{mode}-{count}-{r}").start())
    return reps


def partitioned_ready(reps: list[Replica], partitions: int) -> bool:
    """Every replica knows an owner for every partition and serves its own."""
    for rep in reps:
        d = httpx.get(f"{rep.url}/lookup/partitions", timeout=2).json()
        if len(d["owners"]) < partitions or any(v != "ready" for v in d["owned"].values()):
            return False
    owned = sum(len(httpx.get(f"{r.url}/lookup/partitions", timeout=2).json()["owned"])
                for r in reps)
    return owned == partitions


def wait_serving(reps: list[Replica], mode: str, partitions: int, users: int,
                 timeout: float = 180) -> float:
    t0 = time.monotonic()
    for rep in reps:
        wait(rep.ready, timeout, f"{rep.name} ready")
    if mode == "partitioned":
        wait(lambda: partitioned_ready(reps, partitions), timeout, "partitions owned")
    sample = [f"u{u}" for u in random.Random(1).sample(range(1, users + 1), 200)]
    for rep in reps:
        wait(lambda rep=rep: all(httpx.get(f"{rep.url}/recommendations/{u}", timeout=2)
                                 .json()["source"] == "model" for u in sample[:40]),
             timeout, f"{rep.name} serves lists")
    return time.monotonic() - t0


# --------------------------------------------------------------------------- load
def wrk_script(work: Path, users: int, rate_per_conn: float | None, seed: int) -> Path:
    lines = [f"math.randomseed({seed})",
             "request = function() return wrk.format('GET', '/recommendations/u' .. "
             f"math.random(1, {users}) .. '?n=10') end"]
    if rate_per_conn:
        max_ms = max(1, round(2 * (1000 / rate_per_conn - 0.5)))
        lines.append(f"function delay() return math.random(0, {max_ms}) end")
    path = work / f"load-{seed}-{rate_per_conn or 'max'}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


def parse_wrk(out: str) -> dict[str, float]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    pct = {int(p): float(v) * _UNIT_MS[u]
           for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out)
    return {"rps": rps, "requests": total, "p50_ms": pct.get(50, float("nan")),
            "p99_ms": pct.get(99, float("nan")),
            "failed": (int(bad.group(1)) if bad else 0)
            + (sum(int(x) for x in errors.groups()) if errors else 0)}


def run_load(reps: list[Replica], targets: list[Replica], work: Path, users: int,
             seconds: float, paced_rate: float | None, seed: int) -> dict[str, Any]:
    """One wrk per target replica at once; CPU of every server and of the generators."""
    k = len(targets)
    conns = max(1, (PACED_CONNS if paced_rate else MAX_CONNS) // k)
    per_conn = paced_rate / (conns * k) if paced_rate else None
    cpu0 = [r.cpu_s() for r in reps]
    t0 = time.monotonic()
    procs = []
    for i, rep in enumerate(targets):
        script = wrk_script(work, users, per_conn, seed * 100 + i)
        procs.append(subprocess.Popen(
            ["wrk", "-t1", "-c", str(conns), "-d", f"{seconds:g}s", "--latency", "-s",
             str(script), rep.url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True))
    outs, gen_cpu = [], 0.0
    for p in procs:
        out = p.stdout.read()
        _, _, usage = os.wait4(p.pid, 0)
        p.returncode = 0
        gen_cpu += usage.ru_utime + usage.ru_stime
        outs.append(parse_wrk(out))
    wall = time.monotonic() - t0
    server_cpu = sum(r.cpu_s() for r in reps) - sum(cpu0)
    total = sum(o["requests"] for o in outs)
    return {"rps": sum(o["rps"] for o in outs), "requests": total,
            "p50_ms": median([o["p50_ms"] for o in outs]),
            "p99_ms": max(o["p99_ms"] for o in outs),
            "failed": sum(o["failed"] for o in outs),
            "server_cores": server_cpu / wall, "generator_cores": gen_cpu / wall,
            "server_cpu_us_per_req": 1e6 * server_cpu / max(1, total)}


# --------------------------------------------------------------------------- restore
class Probe(threading.Thread):
    """Asks one replica for users of some partitions every ``every`` s (keep-alive)."""

    def __init__(self, url: str, users: list[str], every: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.host, self.port = url.removeprefix("http://").split(":")
        self.users, self.every = users, every
        self.answers: list[tuple[float, int, str]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection(self.host, int(self.port), timeout=5)
        rng = random.Random(5)
        while not self.halt.is_set():
            user = rng.choice(self.users)
            try:
                conn.request("GET", f"/recommendations/{user}?n=10")
                r = conn.getresponse()
                body = r.read()
                src = orjson.loads(body).get("source", "?") if r.status == 200 else "error"
                self.answers.append((time.monotonic(), r.status, src))
            except (OSError, http.client.HTTPException) as exc:
                self.answers.append((time.monotonic(), 0, type(exc).__name__))
                conn = http.client.HTTPConnection(self.host, int(self.port), timeout=5)
            self.halt.wait(self.every)


def owned_by(rep: Replica) -> list[int]:
    return sorted(int(p) for p in httpx.get(f"{rep.url}/lookup/partitions",
                                            timeout=2).json()["owned"])


def kill_partitioned(reps: list[Replica], work: Path, users: int, partitions: int,
                     rate: float, seed: int) -> dict[str, Any]:
    """kill -9 the last replica under paced load on the others; see the module."""
    victim, survivors = reps[-1], reps[:-1]
    lost = owned_by(victim)
    theirs = [f"u{u}" for u in range(1, users + 1)
              if user_partition(f"u{u}", partitions) in set(lost)][:5000]
    probe = Probe(survivors[0].url, theirs)
    probe.start()
    load: dict[str, Any] = {}
    loader = threading.Thread(target=lambda: load.update(run_load(
        survivors, survivors, work, users, 25, rate, seed)), daemon=True)
    loader.start()
    time.sleep(3)
    t_kill = time.monotonic()
    victim.kill()
    taken = restored = None
    deadline = t_kill + 60
    while time.monotonic() < deadline and restored is None:
        states: dict[str, str] = {}
        for rep in survivors:
            try:
                states.update(httpx.get(f"{rep.url}/lookup/partitions", timeout=2)
                              .json()["owned"])
            except httpx.HTTPError:
                pass
        now = time.monotonic()
        if taken is None and all(str(p) in states for p in lost):
            taken = now
        if all(states.get(str(p)) == "ready" for p in lost):
            restored = now
        time.sleep(0.02)
    time.sleep(2)
    probe.halt.set()
    probe.join(10)
    loader.join(60)
    after = [a for a in probe.answers if a[0] >= t_kill]
    last_fallback = max((a[0] for a in after if a[2] != "model"), default=t_kill)
    return {"replicas": len(reps), "victim_partitions": lost,
            "group_reassigned_s": None if taken is None else round(taken - t_kill, 2),
            "restored_s": None if restored is None else round(restored - t_kill, 2),
            "lists_served_again_s": round(last_fallback - t_kill, 2),
            "probe_requests": len(after),
            "probe_fallback_answers": sum(1 for a in after if a[2] == "fallback"),
            "probe_failed": sum(1 for a in after if a[1] != 200),
            "load_failed": load.get("failed"), "load_rps": load.get("rps"),
            "load_p99_ms": load.get("p99_ms")}


def restart_replica(rep: Replica, users: int, fresh: bool) -> dict[str, Any]:
    """Mode A: kill -9 and start again on the same (or an empty) state dir."""
    rep.kill()
    if fresh:
        shutil.rmtree(rep.settings.state_dir, ignore_errors=True)
    t0 = time.monotonic()
    rep.start()
    wait(lambda: httpx.get(f"{rep.url}/healthz", timeout=2).status_code == 200, 120, "up")
    up = time.monotonic() - t0
    wait(rep.ready, 600, "ready")
    ready = time.monotonic() - t0
    return {"fresh_state_dir": fresh, "answers_after_s": round(up, 2),
            "ready_after_s": round(ready, 2), "lists": users}


def store_bytes(state_dir: Path) -> int:
    """Bytes of a lookup's RocksDB on disk (lists, offsets, its log and WAL)."""
    return sum(f.stat().st_size for f in (Path(state_dir) / "lookup").rglob("*") if f.is_file())


# --------------------------------------------------------------------------- main
def measure(base: Settings, work: Path, mode: str, count: int, args: argparse.Namespace
            ) -> dict[str, Any]:
    reps = start_replicas(base, work, mode, count)
    out: dict[str, Any] = {"mode": mode, "replicas": count}
    try:
        out["start_to_serving_s"] = round(wait_serving(reps, mode, args.partitions,
                                                       args.users), 2)
        out["store_bytes"] = [store_bytes(r.settings.state_dir) for r in reps]
        run_load(reps, reps, work, args.users, 2, None, 99)       # warm-up
        runs = []
        for r in range(args.runs):
            load = os.getloadavg()[0]
            paced = run_load(reps, reps, work, args.users, args.seconds, args.rate, r)
            top = run_load(reps, reps, work, args.users, args.seconds, None, r)
            runs.append({"loadavg_before": load, "paced": paced, "max": top})
            print(f"  {mode} x{count} run {r}: paced {paced['rps']:.0f} req/s p99 "
                  f"{paced['p99_ms']:.2f} ms; max {top['rps']:.0f} req/s p99 "
                  f"{top['p99_ms']:.2f} ms, server {top['server_cpu_us_per_req']:.0f} "
                  f"µs/req, generators {top['generator_cores']:.2f} cores "
                  f"(failed {paced['failed'] + top['failed']})", file=sys.stderr,
                  flush=True)
        out["runs"] = runs
        for kind in ("paced", "max"):
            out[kind] = {k: median([r[kind][k] for r in runs]) for k in runs[0][kind]}
            out[kind]["failed"] = sum(r[kind]["failed"] for r in runs)
        if args.kill and count >= 2 and mode == "partitioned":
            out["kill"] = kill_partitioned(reps, work, args.users, args.partitions,
                                           args.rate, 7)
            print(f"  kill -9: {out['kill']}", file=sys.stderr, flush=True)
        if args.kill and count == 2 and mode == "replica":
            out["restart"] = restart_replica(reps[-1], args.users, fresh=False)
            out["new_replica"] = restart_replica(reps[-1], args.users, fresh=True)
            print(f"  restart: {out['restart']}; new: {out['new_replica']}",
                  file=sys.stderr, flush=True)
    finally:
        for rep in reps:
            rep.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--modes", nargs="+", default=["replica", "partitioned"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--rate", type=float, default=2000)
    ap.add_argument("--no-kill", dest="kill", action="store_false")
    ap.add_argument("--name", default="lookup_scale",
                    help="results file bench/results/NAME.json (a partial re-run: another name)")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("bench/lookup_scale.py needs 'wrk': apt-get install -y wrk")
    work = Path(tempfile.mkdtemp(prefix="streamrec-scale-"))
    broker = start_broker("kafka", free_port(), work / "kafka")
    results = []
    try:
        base = Settings(bootstrap_servers=broker.bootstrap, state_dir=work / "base",
                        partitions=args.partitions, topic_recommendations="recs-bench",
                        topic_interactions="events-bench",
                        **broker.client_settings)
        ensure_topics(base)
        t0 = time.monotonic()
        fill(base, args.users)
        print(f"filled {args.users} lists in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        for count in args.replicas:    # the modes of a replica count back to back: the
            for mode in args.modes:    # box's other load changes less between them
                results.append(measure(base, work, mode, count, args))
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for r in results:
        rows.append([r["mode"], r["replicas"], round(r["paced"]["rps"]),
                     round(r["paced"]["p50_ms"], 2), round(r["paced"]["p99_ms"], 2),
                     round(r["max"]["rps"]), round(r["max"]["p99_ms"], 2),
                     round(r["max"]["server_cpu_us_per_req"]),
                     round(r["max"]["server_cores"], 2), round(r["max"]["generator_cores"], 2),
                     r["paced"]["failed"] + r["max"]["failed"]])
    print_table(["mode", "replicas", f"paced req/s", "p50 ms", "p99 ms", "max req/s",
                 "max p99 ms", "server µs/req", "server cores", "wrk cores", "failed"], rows)
    for r in results:
        if "kill" in r:
            print(f"partitioned x{r['replicas']}, kill -9: {r['kill']}")
        if "restart" in r:
            print(f"replica x{r['replicas']}: restart {r['restart']}; new {r['new_replica']}")
    path = write_results(args.name, {"args": vars(args), "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
