"""The worker's load curve: micro-batch size, freshness and events/s against offered load.

    python bench/load_curve.py [--engine tansu|kafka] [--rates 100 300 1000 3000 10000 30000]
                               [--seconds 10] [--users 5000] [--items 2000] [--warmup 20000]
                               [--ingest batch|agent] [--reuse-stack] [--set NAME=VALUE ...]

Issue #4 asks that "micro-batch size and window adapt to load (small under light load for
freshness, larger under heavy load for throughput): show the curve". For each offered rate,
``--seconds`` of clicks by ``--users`` users over ``--items`` items (uniform, like
``bench/pipeline.py``'s generator), produced in a burst per 1 ms tick so the offered rate is
real (the rate actually produced is reported, and the records still in the producer's queue,
not yet at the broker, when the clock stopped), into a running worker after ``--warmup``
clicks of the same users and items. Every 0.1 s one of those clicks is by a brand-new
user: freshness is measured as in ``bench/pipeline.py`` (poll the lookup HTTP API until that
user's list is ``source: model``; not served within 10 s: a timeout, infinitely late).
Over the producing window, from the worker's metrics and /proc:

* events/s applied (``streamrec_worker_state_applied_events``), and the backlog left at the
  end (produced - applied), in seconds of input: more than 0.5 s and the point is beyond
  what the worker sustains (its freshness then grows with ``--seconds``);
* micro-batch size (``streamrec_worker_batch_records`` histogram deltas: mean, rough median
  interpolated in its bucket, capped at ``max_batch``), wall ms per batch, batches/s, the
  ingest hop p50 (record timestamp to the start of its batch, queueing included);
* lists published per applied event;
* CPU % (100 = one core) of the worker, the broker, the lookup, this load generator, and
  of everything else on the machine (other people's jobs: compare points run together); and
  the share of the window the worker's main thread (its event loop: train, lists, publish)
  was runnable but got no CPU (``/proc/PID/schedstat``: starved, not waiting for the broker).

Each rate point gets a **fresh Stack** by default (fresh topics, worker and lookup on the same
broker): Tansu's fetch cost grows with the number of record batches already in a partition
(``docs/latency-notes.md``, ``bench/tansu_fetch.py``), and low rates write one batch per
event, so on a shared stack later points would pay for earlier ones. ``--reuse-stack`` runs
every point on one stack (faster; waits for the backlog to drain between points).

Prints a table, writes bench/results/load_curve-<engine>.json and plots
bench/results/load_curve-<engine>.png.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, machine, print_table, wait, write_results  # noqa: E402
from bench.harness import APPLIED, LISTS_PENDING, CpuMeter, phase_stats, scrape  # noqa: E402
from bench.pipeline import (PROBE_TIMEOUT_S, Brokers, Probes, Stack, fmt_ms, latency_summary,  # noqa: E402
                            offer, warm_up)
from streamrec_eval.plots import new_figure  # noqa: E402

TARGET_EVENTS_PER_S = 20_000
TARGET_P50_MS, TARGET_P99_MS = 100, 250
KEPT_UP_S = 0.5
"""A point is sustained if the backlog left at its end is at most this much of its input."""


def settle(stack: Stack, timeout: float = 600) -> None:
    """Until the worker has applied everything produced (and its lists are out, if it says)."""
    def done() -> bool:
        m = scrape(stack.s)
        return (m.value(APPLIED, 0.0) >= stack.sent
                and m.value(LISTS_PENDING, 0.0) == 0)
    wait(done, timeout, "the worker to drain its backlog")


def point(stack: Stack, rate: float, args: argparse.Namespace, broker_pid: int) -> dict:
    """One offered rate for ``args.seconds`` on a settled stack."""
    pids = {"worker": stack.worker.pid, "broker": broker_pid, "lookup": stack.lookup.pid,
            "generator": os.getpid()}
    before = scrape(stack.s)
    cpu = CpuMeter(pids)
    probes = Probes(stack)
    t0 = time.perf_counter()
    sent, produce_s = offer(stack, rate, args.seconds, probes, users=args.users,
                            items=args.items, seed=int(rate), flush=False)
    after = scrape(stack.s)
    window = time.perf_counter() - t0
    cpu_pct = cpu.read()
    undelivered = len(stack.producer)  # still in librdkafka's queue: not at the broker yet
    stack.producer.flush(30)
    fresh = latency_summary(probes.finish())
    stats = phase_stats(before, after, stack.s.max_batch)
    backlog = sent - stats["applied"]
    behind_s = backlog / (sent / produce_s)
    return {"offered_per_s": rate, "produced": sent, "produced_per_s": sent / produce_s,
            "undelivered_at_end": undelivered, "window_s": window,
            "applied_per_s": stats["applied"] / window,
            "backlog_at_end": backlog, "behind_s": behind_s, "kept_up": behind_s <= KEPT_UP_S,
            "batches_per_s": stats.get("batches", 0) / window, **stats, **fresh,
            "cpu_pct": cpu_pct, "waited_for_cpu_pct": cpu.waited,
            "load_avg_1m": os.getloadavg()[0]}


def run_curve(args: argparse.Namespace, overrides: dict, work: Path) -> list[dict]:
    brokers = Brokers(args.engine, work)
    stack: Stack | None = None
    points = []
    try:
        for rate in args.rates:
            if stack is None:
                # guard off: the synthetic users click far faster than people (pipeline.py)
                stack = Stack(brokers.fresh(), work, ingest=args.ingest, guard_enabled=False,
                              **brokers.settings(overrides))
                warm_up(stack, n_users=args.users, n_items=args.items, n=args.warmup)
            settle(stack)
            p = point(stack, rate, args, brokers.current.proc.pid)
            points.append(p)
            if p["produced_per_s"] < 0.97 * rate:
                print(f"WARNING: offered {rate:,.0f} ev/s but produced only "
                      f"{p['produced_per_s']:,.0f} ev/s (the generator shares the 2 cores)",
                      file=sys.stderr)
            print(f"{rate:g} ev/s: applied {p['applied_per_s']:,.0f} ev/s, batch mean "
                  f"{p.get('batch_mean', float('nan')):,.1f}, p50 {fmt_ms(p['p50_ms'])}",
                  file=sys.stderr)
            if not args.reuse_stack:
                stack.close()
                stack = None
    finally:
        if stack is not None:
            stack.close()
        brokers.stop()
    return points


def table(points: list[dict]) -> None:
    def f(v: float | None, spec: str = ",.0f") -> str:
        return "n/a" if v is None or v != v else format(v, spec)

    rows = [[f(p["offered_per_s"]), f(p["produced_per_s"]), f(p["applied_per_s"]),
             "yes" if p["kept_up"] else f"no ({p['behind_s']:.1f} s behind)",
             f(p.get("batch_mean"), ",.1f"), f(p.get("batch_median"), ",.1f"),
             f(p.get("batch_ms_mean"), ",.1f"), f(p.get("batches_per_s"), ",.1f"),
             fmt_ms(p["p50_ms"]), fmt_ms(p["p99_ms"]), f"{p['probes']} / {p['timeouts']}",
             f(p["lists_per_event"], ".2f"), f(p["cpu_pct"]["worker"]),
             f(p["waited_for_cpu_pct"]["worker"]),
             f(p["cpu_pct"]["broker"]), f(p["cpu_pct"]["generator"]),
             f(p["cpu_pct"]["others"])]
            for p in points]
    print_table(["offered ev/s", "produced", "applied", "kept up", "batch mean", "~median",
                 "ms/batch", "batches/s", "fresh p50", "p99", "probes / timeouts",
                 "lists/ev", "worker CPU %", "worker no-CPU %", "broker %", "generator %",
                 "others %"], rows)


def plot(points: list[dict], args: argparse.Namespace, path: Path) -> None:
    x = [p["offered_per_s"] for p in points]
    fig = new_figure(figsize=(12, 8.5))
    ax = fig.subplots(2, 2, sharex=True)
    (a, b), (c, d) = ax

    a.plot(x, x, ":", color="grey", label="offered")
    a.plot(x, [p["produced_per_s"] for p in points], "o-", label="produced")
    a.plot(x, [p["applied_per_s"] for p in points], "s-", label="applied by the worker")
    a.axhline(TARGET_EVENTS_PER_S, ls="--", color="tab:red", lw=1, label="target 20,000/s")
    a.set(yscale="log", ylabel="events/s", title="Throughput")
    a.legend(fontsize=8)

    mean = [p.get("batch_mean", math.nan) for p in points]
    med = [p.get("batch_median", math.nan) for p in points]
    lo = [m - (p.get("batch_median_bucket") or (m, m))[0] for m, p in zip(med, points)]
    hi = [(p.get("batch_median_bucket") or (m, m))[1] - m for m, p in zip(med, points)]
    b.plot(x, mean, "o-", label="mean")
    b.errorbar(x, med, yerr=[lo, hi], fmt="s--", capsize=3,
               label="~median (bar: its histogram bucket)")
    b.set(yscale="log", ylabel="records per micro-batch",
          title="Micro-batch size and time per batch")
    b2 = b.twinx()
    b2.plot(x, [p.get("batch_ms_mean", math.nan) for p in points], "d:", color="tab:purple",
            label="wall ms per batch (right)")
    b2.set(yscale="log", ylabel="ms per micro-batch (train + lists + publish)")
    h1, l1 = b.get_legend_handles_labels()
    h2, l2 = b2.get_legend_handles_labels()
    b.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper left")

    ceiling = PROBE_TIMEOUT_S * 1e3
    for key, target, color in (("p50_ms", TARGET_P50_MS, "tab:blue"),
                               ("p99_ms", TARGET_P99_MS, "tab:orange")):
        ys = [p[key] if p[key] is not None else math.nan for p in points]
        c.plot(x, ys, "o-", color=color, label=key.replace("_ms", ""))
        late = [(xi, ceiling) for xi, p in zip(x, points) if p[key] is None]
        if late:
            c.plot(*zip(*late), "^", color=color, ms=9,
                   label=f"{key.replace('_ms', '')} > {PROBE_TIMEOUT_S:.0f} s (timed out)")
        c.axhline(target, ls="--", color=color, lw=1, label=f"target {target} ms")
    c.set(yscale="log", xscale="log", ylabel="produced -> served, ms",
          xlabel="offered events/s", title="Freshness of a brand-new user's list")
    c.legend(fontsize=8)

    d.plot(x, [p["cpu_pct"]["worker"] for p in points], "o-", label="worker CPU %")
    d.plot(x, [p["waited_for_cpu_pct"]["worker"] for p in points], "o:", color="tab:blue",
           mfc="none", label="worker main thread runnable, no CPU %")
    d.plot(x, [p["cpu_pct"]["broker"] for p in points], "^-", label="broker CPU %")
    d.plot(x, [p["cpu_pct"]["others"] for p in points], "x:", color="grey",
           label="other jobs on the box, CPU %")
    d.set(ylabel="CPU % (100 = one core)", xlabel="offered events/s",
          title="CPU and lists per event", ylim=(0, None))
    d2 = d.twinx()
    d2.plot(x, [p["lists_per_event"] for p in points], "s--", color="tab:green",
            label="lists per event (right)")
    d2.set(ylabel="lists published per event", ylim=(0, None))
    h1, l1 = d.get_legend_handles_labels()
    h2, l2 = d2.get_legend_handles_labels()
    d.legend(h1 + h2, l1 + l2, fontsize=8)
    for axis in ax.flat:
        axis.set_xscale("log")
        axis.grid(True, which="both", alpha=0.3)
    m = machine()
    stacks = "one stack" if args.reuse_stack else "fresh stack per point"
    fig.suptitle(f"streamrec worker load curve: {args.engine}, {args.ingest} ingest, "
                 f"{args.seconds:g} s per point, {stacks}\n{m['cpu']}, {m['cores']} cores "
                 f"shared by broker, worker, lookup and generator; {m['when']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", default="kafka", choices=["kafka", "tansu"])
    ap.add_argument("--rates", type=float, nargs="+",
                    default=[100, 300, 1000, 3000, 10000, 30000])
    ap.add_argument("--seconds", type=float, default=10, help="per rate point")
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=20000, help="clicks before each point")
    ap.add_argument("--ingest", default="batch", choices=["agent", "batch"])
    ap.add_argument("--reuse-stack", action="store_true",
                    help="one stack for every point (default: a fresh one per point)")
    ap.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                    help="worker settings, e.g. max_batch=5000 (STREAMREC_* of the children)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (worker logs)")
    args = ap.parse_args()
    overrides = dict(kv.split("=", 1) for kv in args.set)
    work = Path(tempfile.mkdtemp(prefix="streamrec-curve-"))
    try:
        points = run_curve(args, overrides, work)
    finally:
        if args.keep:
            print(f"work dir kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    table(points)
    path = write_results(f"load_curve-{args.engine}",
                         {"engine": args.engine, "args": vars(args), "settings": overrides,
                          "points": points})
    png = RESULTS / f"load_curve-{args.engine}.png"
    plot(points, args, png)
    print(f"wrote {path} and {png}")


if __name__ == "__main__":
    main()
