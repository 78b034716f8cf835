"""Synthetic scale: power-law events from many users through a real worker.

    python bench/scale.py                                   # 100 k users x 10 k items, 200 k events
    python bench/scale.py --users 20000 --items 2000 --events 100000      # a quick one
    python bench/scale.py --scan-only --scan-items 1000 10000 100000 1000000
    python bench/scale.py --users 1000000 --items 100000 --events 10000000 --force   # target

Three parts, each in the table and in bench/results/scale-<users>u-<items>i-<events>e.json
(``--scan-only``: scale_scan-<users>u-<items>i.json):

1. **Estimate**: the worker's memory at this scale from the sizes of its arrays (model with
   padding and growth, dense co-occurrence counts, a chunk of scores) plus a per-user and
   per-event allowance for Python state measured at smaller scale. A run whose estimate does
   not fit this machine's free memory is refused unless ``--force``.
2. **Exact-scan top-N**: ms per list of what the worker does per list (one BLAS product of the
   user rows with every item, ``top_n`` selection with seen items masked; the co-occurrence
   blend where its dense counts fit), for batches of 2,000, 256 and 10 users, per catalogue size.
3. **Live run** (unless ``--scan-only``): fresh topics, a real ``streamrec worker`` and
   ``streamrec serve`` (``bench/pipeline.py``'s Stack, guard off as there); ``--events``
   synthetic events (items and user activity power-law distributed, in time order) produced as
   fast as possible; events/s until the worker's state holds them all, and its curve over the
   run; then freshness (``bench/pipeline.py``'s probes of brand-new users) at ``--rates``;
   worker RSS sampled throughout, peak from VmHWM; the broker's RSS at the end.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import psutil
from confluent_kafka import Producer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import median, percentile, print_table, write_results  # noqa: E402
from bench.harness import (MB, RssSampler, applied, checkpoint_stats, scrape,  # noqa: E402
                           worker_metrics)
from bench.pipeline import Stack, freshness  # noqa: E402
from stream_app.cooccurrence import CooccurrenceIndex, blend  # noqa: E402
from stream_app.topn import top_n  # noqa: E402
from streamrec.broker import free_port, start_broker  # noqa: E402
from streamrec.kafka import producer_config  # noqa: E402
from streamrec.settings import Settings  # noqa: E402

RSS_TARGET_MB = 4096
EVENT_TYPES = np.array(["view", "click", "purchase"])
EVENT_SHARES = np.array([0.6, 0.3, 0.1])
# State per user and per event: the registry's Python entry (~130 B, tracemalloc) plus the
# user stores' row arrays (2 x 16 B); a dedup id (~150 B, up to dedup_window of them); the
# seen and positives arenas (int32 slots with doubling slack, ~16-32 B per event together;
# bench/state_scale.py). Before the numpy user stores (seen sets, histories and liked sets
# as Python objects) the allowances were 1,000 B per user and 250 B per event, checked
# against the medium run in docs/benchmarks.md (the estimate came out 20-25 % high).
PY_BYTES_PER_USER = 200
PY_BYTES_PER_DEDUP_ID = 150
STORE_BYTES_PER_EVENT = 32
IMPORTS_MB = 80


# --------------------------------------------------------------------------- generator
class PowerLaw:
    """Ids 0..n-1 drawn with P(rank r) ~ r^-skew; ranks shuffled over ids (seeded)."""

    def __init__(self, n: int, skew: float, rng: np.random.Generator) -> None:
        w = np.arange(1, n + 1, dtype=np.float64) ** -skew
        self.cdf = np.cumsum(w) / w.sum()
        self.ids = rng.permutation(n)
        self.rng = rng

    def draw(self, size: int) -> np.ndarray:
        r = np.searchsorted(self.cdf, self.rng.random(size), side="right")
        return self.ids[np.minimum(r, len(self.ids) - 1)]


def synthetic_events(users: int, items: int, events: int, seed: int = 0,
                     item_skew: float = 1.0, user_skew: float = 0.5,
                     span_s: float = 30 * 86400.0, chunk: int = 100_000
                     ) -> Iterator[list[tuple[bytes, bytes]]]:
    """Chunks of (key, JSON value) contract events in time order, ending now.

    Item popularity is Zipf-like (``item_skew`` 1.0: the top 1 % of items draw about half
    of the events at 10 k items), user activity milder (``user_skew`` 0.5). Users are
    ``w<k>``, items ``m<k>`` (the ids ``bench/pipeline.py``'s background events use), every
    event has an ``event_id``, types are view/click/purchase 60/30/10 %.
    """
    rng = np.random.default_rng(seed)
    pick_user, pick_item = PowerLaw(users, user_skew, rng), PowerLaw(items, item_skew, rng)
    t_end = time.time()
    t0 = t_end - span_s
    for start in range(0, events, chunk):
        n = min(chunk, events - start)
        u, i = pick_user.draw(n).tolist(), pick_item.draw(n).tolist()
        kinds = EVENT_TYPES[rng.choice(3, n, p=EVENT_SHARES)].tolist()
        ts = (t0 + (start + np.arange(n)) * (span_s / events)).tolist()
        yield [(b"w%d" % uu, orjson.dumps({"user_id": f"w{uu}", "item_id": f"m{ii}",
                                           "event_type": kk, "timestamp": tt,
                                           "event_id": f"s{seed}-{start + k}"}))
               for k, (uu, ii, kk, tt) in enumerate(zip(u, i, kinds, ts))]


def produce_all(s: Settings, chunks: Iterator[list[tuple[bytes, bytes]]]) -> int:
    """Produce every event as fast as the broker takes them; returns the count."""
    p = Producer(producer_config(s, **{"linger.ms": 5}))
    n = 0
    for batch in chunks:
        for key, value in batch:
            while True:
                try:
                    p.produce(s.topic_interactions, key=key, value=value)
                    break
                except BufferError:
                    p.poll(0.05)
            n += 1
        p.poll(0)
    left = p.flush(120)
    if left:
        raise RuntimeError(f"{left} synthetic events not delivered within 120 s")
    return n


# --------------------------------------------------------------------------- estimate
CSR_ENTRY_BYTES = 8
"""Memory per stored co-occurrence count in ``SparseCounts`` (int32 column + float32 count)."""


def estimate_mb(users: int, items: int, events: int, s: Settings, chunk: int | None = None) -> dict:
    """The worker's memory at this scale, from its arrays' sizes (MiB).

    Worst cases: capacity just grown by ``growth_factor``; during a growth the old and the
    new arrays both live. LightFM keeps 6 arrays per side per feature column (embeddings,
    their adagrad accumulators and momentum, and the same for biases); feature columns are
    hashed buckets plus one identity column per row.
    """
    g, k = s.growth_factor, s.no_components
    cap_u, cap_i = users * g, items * g
    if chunk is None:  # the worker's rule (Worker.publish_lists): a ~64 MB score matrix
        chunk = max(16, min(2048, (16 << 20) // int(cap_i)))
    cols_u, cols_i = s.user_feature_buckets + cap_u, s.item_feature_buckets + cap_i
    model = (cols_u + cols_i) * (3 * k + 3) * 4
    if cap_i <= s.cooc_dense_items:
        cooc = cap_i * cap_i * 4
        cooc_transient = cooc / (g * g)          # the old matrix while growing
    else:  # bounded sparse counts: base <= items x max_neighbours, pending <= half of it
        pairs = events * s.cooc_pair_window * 2
        base = min(pairs, cap_i * (s.cooc_max_neighbours or cap_i))
        cooc = 1.5 * base * CSR_ENTRY_BYTES + 3 * cap_i * 4
        cooc_transient = 2 * base * CSR_ENTRY_BYTES   # a merge: the sum, then the pruned
    scores = chunk * cap_i * 4 * 5   # scores, co-occurrence scores, 2 standardised, blend
    python = users * PY_BYTES_PER_USER + min(events, s.dedup_window) * PY_BYTES_PER_DEDUP_ID \
        + events * STORE_BYTES_PER_EVENT
    steady = IMPORTS_MB * MB + model + cooc + python
    peak = steady + max(model / g, cooc_transient, scores)
    # What it would take without the dense co-occurrence counts and with 256-user chunks:
    lean = IMPORTS_MB * MB + model + python
    lean_peak = lean + max(model / g, 256 * cap_i * 4 * 5)
    return {"model_mb": model / MB, "cooccurrence_mb": cooc / MB, "score_chunk_mb": scores / MB,
            "python_state_mb": python / MB, "steady_mb": steady / MB, "peak_mb": peak / MB,
            "peak_mb_without_dense_cooc_chunk_256": lean_peak / MB}


# --------------------------------------------------------------------------- exact scan
def scan_cost(n_items: int, batch: int, k: int = 30, n: int = 20, seen: int = 20,
              repeats: int = 3, cooc_limit_mb: float = 2048) -> dict:
    """ms per list of the worker's exact top-N (scores, mask seen, select), and with the
    co-occurrence blend when its dense counts (n_items^2 float32) fit ``cooc_limit_mb``."""
    rng = np.random.default_rng(0)
    i_emb = rng.standard_normal((n_items, k), dtype=np.float32)
    i_bias = rng.standard_normal(n_items, dtype=np.float32)
    u_emb = rng.standard_normal((batch, k), dtype=np.float32)
    exclude = [set(rng.integers(0, n_items, seen).tolist()) for _ in range(batch)]
    times, peak = [], 0
    for _ in range(repeats):
        tracemalloc.start()
        t0 = time.perf_counter()
        top_n(u_emb @ i_emb.T + i_bias, n, n_items, exclude)
        times.append(time.perf_counter() - t0)
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    out = {"items": n_items, "batch": batch, "ms_per_list": 1e3 * median(times) / batch,
           "transient_mb": peak / MB}
    if n_items * n_items * 4 / MB > cooc_limit_mb:
        out["blend_ms_per_list"] = None
        return out
    cooc = CooccurrenceIndex(capacity=n_items)
    cooc.history.add(np.repeat(np.arange(batch), seen), rng.integers(0, n_items, batch * seen))
    cooc.counts[:] = 1.0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        scores = blend(u_emb @ i_emb.T + i_bias, cooc.scores(range(batch), n_items), 0.3,
                       n_items)
        top_n(scores, n, n_items, exclude)
        times.append(time.perf_counter() - t0)
    out["blend_ms_per_list"] = 1e3 * median(times) / batch
    return out


# --------------------------------------------------------------------------- live run
def live(args: argparse.Namespace, work: Path) -> dict:
    broker = start_broker(args.engine, free_port(),
                          work / "kafka" if args.engine == "kafka" else None)
    try:
        stack = Stack(broker.bootstrap, work, guard_enabled=False)
        rss = RssSampler(stack.worker.pid, interval=0.5).start()
        curve: list[tuple[float, float, float]] = []
        try:
            chunks = synthetic_events(args.users, args.items, args.events, seed=args.seed,
                                      item_skew=args.item_skew, user_skew=args.user_skew)
            t0 = time.perf_counter()
            done = threading.Event()
            produced: dict[str, float] = {}

            def producer() -> None:
                produced["n"] = produce_all(stack.s, chunks)
                produced["s"] = time.perf_counter() - t0
                done.set()

            threading.Thread(target=producer, daemon=True).start()
            last_progress, last_n = time.perf_counter(), 0.0
            while True:
                time.sleep(1.0)
                n = applied(stack.s)
                now = time.perf_counter()
                curve.append((round(now - t0, 1), n, round(rss.now_mb(), 1)))
                if n > last_n:
                    last_progress, last_n = now, n
                if done.is_set() and n >= produced["n"]:
                    break
                if now - last_progress > 120:
                    raise RuntimeError(f"worker stuck at {n:.0f} of {args.events} events; "
                                       f"see {work}/worker-*.log")
                if args.progress and len(curve) % 10 == 0:
                    print(f"  {now - t0:.0f} s: {n:,.0f} events applied, worker "
                          f"{curve[-1][2]:.0f} MiB, "
                          f"{worker_metrics(stack.s).get('streamrec_worker_lists_pending', 0):,.0f}"
                          " lists pending", file=sys.stderr)
            elapsed = time.perf_counter() - t0
            # then until every applied event is in a published list (lists coalesce under
            # load and catch up once the input is drained)
            while worker_metrics(stack.s).get("streamrec_worker_lists_pending", 0) > 0:
                if time.perf_counter() - t0 - elapsed > 3600:
                    raise RuntimeError("lists still pending an hour after the last event")
                time.sleep(1.0)
                if args.progress and int(time.perf_counter() - t0) % 10 == 0:
                    print(f"  {time.perf_counter() - t0:.0f} s: "
                          f"{worker_metrics(stack.s).get('streamrec_worker_lists_pending', 0):,.0f}"
                          " lists pending", file=sys.stderr)
            lists_out_s = time.perf_counter() - t0
            m = worker_metrics(stack.s)
            batches = m.get("streamrec_worker_batch_seconds_count", 0) or 1
            batch_stats = {"batches": batches,
                           "mean_batch_ms": 1e3 * m.get("streamrec_worker_batch_seconds_sum", 0)
                           / batches,
                           "mean_batch_records": m.get("streamrec_worker_batch_records_sum", 0)
                           / batches,
                           "lists": m.get("streamrec_worker_lists_published_total")}
            loaded = scrape(stack.s)
            fresh = {}
            for rate in args.rates:
                lat = freshness(stack, rate, args.seconds)
                ok = [x for x in lat if x != float("inf")]
                fresh[f"{rate:g}"] = {"p50_ms": percentile(ok, 50) * 1e3,
                                      "p99_ms": percentile(ok, 99) * 1e3,
                                      "probes": len(lat), "timeouts": len(lat) - len(ok)}
            final = scrape(stack.s)
            checkpoints = {"load": checkpoint_stats(loaded),
                           "freshness": checkpoint_stats(final, loaded)}
            steady_mb = rss.now_mb()
            peak_mb = rss.peak_mb()
            broker_mb = psutil.Process(broker.proc.pid).memory_info().rss / MB
        finally:
            rss.stop()
            stack.close()
    finally:
        broker.stop()
    tail = [c for c in curve if c[0] >= 0.8 * elapsed]
    tail_rate = ((tail[-1][1] - tail[0][1]) / (tail[-1][0] - tail[0][0])
                 if len(tail) > 1 and tail[-1][0] > tail[0][0] else float("nan"))
    return {"events": args.events, "elapsed_s": elapsed, "events_per_s": args.events / elapsed,
            "lists_out_s": lists_out_s, "lists_out_events_per_s": args.events / lists_out_s,
            "last_20pct_events_per_s": tail_rate, "produce_s": produced.get("s"),
            "batches": batch_stats, "freshness": fresh, "checkpoints": checkpoints,
            "worker_peak_mb": peak_mb,
            "worker_end_mb": steady_mb, "broker_end_mb": broker_mb, "curve": curve}


# --------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--item-skew", type=float, default=1.0)
    ap.add_argument("--user-skew", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--engine", default="kafka", choices=["kafka", "tansu"],
                    help="tansu keeps every record in memory (~1 KB per event incl. its "
                    "list); kafka keeps them on disk and compacts the lists")
    ap.add_argument("--rates", type=float, nargs="*", default=[100, 1000],
                    help="freshness background rates after the load (none: skip)")
    ap.add_argument("--seconds", type=float, default=10, help="per freshness rate")
    ap.add_argument("--scan-items", type=int, nargs="*", default=[1_000, 10_000, 100_000])
    ap.add_argument("--scan-only", action="store_true", help="estimate + exact scan only")
    ap.add_argument("--force", action="store_true", help="run even if the estimate does "
                    "not fit this machine's available memory")
    ap.add_argument("--progress", action="store_true", help="progress lines on stderr")
    args = ap.parse_args()
    # A long run stopped with SIGTERM still stops its worker, lookup and broker (finally:).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    s = Settings()

    est = estimate_mb(args.users, args.items, args.events, s)
    print(f"estimate for {args.users:,} users x {args.items:,} items, {args.events:,} events:")
    print_table(["worker memory (MiB)", "estimate"], [[k, f"{v:,.0f}"] for k, v in est.items()])

    scans = [scan_cost(n, b) for n in args.scan_items for b in (2000, 256, 10)
             if b * n * 4 <= 2 * 1024 * MB]   # a score chunk over 2 GiB is not measured
    print("\nexact-scan top-20 (30 components, 20 seen items masked per user)")
    print_table(["items", "users/batch", "ms per list", "with co-occurrence blend",
                 "transient MiB"],
                [[f"{c['items']:,}", c["batch"], f"{c['ms_per_list']:.3f}",
                  "n/a (dense counts too big)" if c["blend_ms_per_list"] is None
                  else f"{c['blend_ms_per_list']:.3f}", f"{c['transient_mb']:.0f}"]
                 for c in scans])
    result: dict = {"args": vars(args), "estimate_mb": est, "scan": scans}

    if not args.scan_only:
        avail = psutil.virtual_memory().available / MB
        if est["peak_mb"] > 0.8 * avail and not args.force:
            sys.exit(f"estimated worker peak {est['peak_mb']:,.0f} MiB does not fit the "
                     f"{avail:,.0f} MiB available (80 % rule); pass --force to run anyway")
        work = Path(tempfile.mkdtemp(prefix="streamrec-scale-"))
        try:
            run = live(args, work)
        except BaseException:
            print(f"logs kept in {work}", file=sys.stderr)
            raise
        shutil.rmtree(work, ignore_errors=True)
        result["live"] = run
        rows = [["events/s (whole run)", f"{run['events_per_s']:,.0f}"],
                ["events/s until every list is out", f"{run['lists_out_events_per_s']:,.0f} "
                 f"({run['lists_out_s']:.0f} s)"],
                ["events/s (last 20 % of the run)", f"{run['last_20pct_events_per_s']:,.0f}"],
                ["run time", f"{run['elapsed_s']:.0f} s (producer done at "
                             f"{run['produce_s']:.0f} s)"],
                ["worker micro-batches: mean size / mean time",
                 f"{run['batches']['mean_batch_records']:,.0f} records / "
                 f"{run['batches']['mean_batch_ms']:,.0f} ms"]]
        for rate, f in run["freshness"].items():
            rows.append([f"freshness @ {rate} ev/s p50 / p99",
                         f"{f['p50_ms']:.0f} / {f['p99_ms']:.0f} ms ({f['timeouts']} of "
                         f"{f['probes']} probes > 10 s)"])
        for when, phases in run["checkpoints"].items():
            for phase, c in phases.items():
                if c["count"]:
                    rows.append([f"checkpoint {phase} ({when}): count / mean / slowest",
                                 f"{c['count']:.0f} / {c['mean_ms']:,.0f} ms / "
                                 f"<= {c['max_le_ms']:,.0f} ms"])
        rows += [["worker RSS peak (VmHWM)", f"{run['worker_peak_mb']:,.0f} MiB"],
                 ["worker RSS at the end", f"{run['worker_end_mb']:,.0f} MiB"],
                 [f"broker ({args.engine}) RSS at the end", f"{run['broker_end_mb']:,.0f} MiB"]]
        print(f"\nlive: {args.users:,} users x {args.items:,} items, {args.events:,} events")
        print_table(["measure", "value"], rows)
        ok = run["worker_peak_mb"] <= RSS_TARGET_MB
        print(f"\nworker RSS target <= {RSS_TARGET_MB} MiB: {'met' if ok else 'missed'}")
    # Named by scale, so a quick small run never overwrites a long one.
    name = f"scale-{args.users}u-{args.items}i-{args.events}e" if not args.scan_only \
        else f"scale_scan-{args.users}u-{args.items}i"
    print(f"wrote {write_results(name, result)}")


if __name__ == "__main__":
    main()
