"""Resident memory (RSS) of a real ``streamrec worker`` on MovieLens 100K.

    python bench/memory.py [--runs 3] [--data PATH] [--engine tansu|kafka] [--split 0.9]

Per run, fresh topics on an embedded broker: ML-100K metadata and the first ``--split`` of its
ratings (time order) are produced; a ``streamrec worker`` process starts and bootstraps on them
(replay, full fit, every list published, checkpoint); then the remaining ratings are produced
as fast as possible and streamed through it; then it idles for ``--idle`` seconds (a
checkpoint falls in that window). Its RSS is sampled every 0.1 s with psutil; the peak is the
kernel's high-water mark (VmHWM), so nothing between samples is missed. "Steady" is the median
RSS over the last half of the idle window.

For where the memory goes it also measures a bare Python with the worker's imports, and sizes
the state of an engine built in this process on the same data (numpy arrays by nbytes).
Writes bench/results/memory.json.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import child_env, median, print_table, spawn, wait, write_results  # noqa: E402
from bench.harness import MB, RssSampler, applied, fresh_settings, ready  # noqa: E402
from producers.movielens import replay_movielens  # noqa: E402
from streamrec.broker import free_port, start_broker  # noqa: E402
from streamrec.movielens import MovieLens, find_movielens, load_movielens  # noqa: E402

TARGET_MB = 400

IMPORTS = ("import psutil, faust, lightfm, rocksdict, confluent_kafka, prometheus_client, "
           "stream_app.app, stream_app.worker, stream_app.retrain, streamrec.cli; "
           "print(psutil.Process().memory_info().rss)")


def wait_applied(s, n: int, timeout: float = 300, settle: float = 5.0) -> float:
    """Until the worker holds ``n`` events, or its count stopped moving for ``settle`` s
    (the guard may hold a few back); returns the count."""
    end = time.monotonic() + timeout
    last, since = -1.0, time.monotonic()
    while time.monotonic() < end:
        now = applied(s)
        if now >= n:
            return now
        if now != last:
            last, since = now, time.monotonic()
        elif now > 0 and time.monotonic() - since > settle:
            return now
        time.sleep(0.1)
    raise RuntimeError(f"worker applied {last:.0f} of {n} events within {timeout:.0f} s")


def one_run(ml: MovieLens, bootstrap: str, work: Path, split: float, idle: float) -> dict:
    s = fresh_settings(bootstrap, work)
    cut = ml.split_index(split)
    replay_movielens(s, ml, limit=cut, progress=False)
    worker = spawn(["worker", "--no-progress"], child_env(s), work / f"worker-{s.worker_group}.log")
    rss = RssSampler(worker.pid).start()
    try:
        t_start = rss.mark()
        wait(lambda: ready(s), 600, "worker bootstrap")
        t_ready = rss.mark()
        boot_peak = rss.peak_mb()
        ready_mb = rss.now_mb()
        replay_movielens(s, ml, skip_fraction=split, metadata=False, progress=False)
        got = wait_applied(s, len(ml))
        t_streamed = rss.mark()
        time.sleep(idle)
        t_end = rss.mark()
        steady = median(rss.between(t_end - idle / 2, t_end))
        peak = rss.peak_mb()
    finally:
        rss.stop()
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
    return {"bootstrap_s": t_ready - t_start, "bootstrap_peak_mb": boot_peak,
            "ready_mb": ready_mb, "stream_s": t_streamed - t_ready,
            "streamed_events": len(ml) - cut, "applied": got, "steady_mb": steady,
            "peak_mb": peak, "series": [(round(t, 2), round(mb, 1)) for t, mb in rss.samples]}


def empty_worker_mb(bootstrap: str, work: Path, settle: float = 3.0) -> float:
    """RSS of a worker that started on empty topics (runtime only: Faust, librdkafka,
    RocksDB, the metrics server, a fresh padded model)."""
    s = fresh_settings(bootstrap, work)
    worker = spawn(["worker", "--no-progress"], child_env(s), work / f"worker-{s.worker_group}.log")
    try:
        wait(lambda: ready(s), 120, "empty worker")
        time.sleep(settle)
        return RssSampler(worker.pid).now_mb()
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()


def imports_mb() -> float:
    """RSS of a Python that only imported what the worker imports."""
    out = subprocess.run([sys.executable, "-c", IMPORTS], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1])
    return int(out.stdout.split()[-1]) / MB


def engine_state_mb(ml: MovieLens) -> dict[str, float]:
    """Sizes (MiB) of the numpy state of an engine holding all of ML-100K (no Kafka)."""
    import numpy as np

    from stream_app.engine import Engine
    from streamrec.schema import Interaction
    from streamrec.settings import Settings

    e = Engine(Settings(guard_enabled=False))
    for uid, feats in ml.user_features.items():
        e.apply_user_features(uid, feats)
    for iid, feats in ml.item_features.items():
        e.apply_item_features(iid, feats)
    e.apply_interactions([Interaction(user_id=str(u), item_id=str(i), event_type="rating",
                                      rating=float(r), timestamp=float(t))
                          for u, i, r, t in zip(ml.users, ml.items, ml.ratings, ml.timestamps)],
                         train=False)
    lf = e.model.lightfm
    model = sum(getattr(lf, a).nbytes for a in dir(lf)
                if a.startswith(("user_", "item_")) and isinstance(getattr(lf, a), np.ndarray))
    feats = sum(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes
                for m in (e.model.users.matrix(), e.model.items.matrix()))
    return {"model_arrays_mb": model / MB, "feature_matrices_mb": feats / MB,
            "cooccurrence_mb": e.cooc.nbytes / MB, "seen_store_mb": e.seen.nbytes / MB,
            "user_capacity": e.model.user_capacity, "item_capacity": e.model.item_capacity,
            "cooc_capacity": e.cooc.capacity}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--data", type=Path, default=None, help="MovieLens 100K folder")
    ap.add_argument("--engine", default="kafka", choices=["kafka", "tansu"])
    ap.add_argument("--split", type=float, default=0.9, help="share bootstrapped; rest streamed")
    ap.add_argument("--idle", type=float, default=10.0, help="seconds idle after streaming")
    args = ap.parse_args()
    ml = load_movielens(find_movielens(args.data))
    work = Path(tempfile.mkdtemp(prefix="streamrec-memory-"))
    broker = start_broker(args.engine, free_port(),
                          work / "kafka" if args.engine == "kafka" else None)
    runs = []
    try:
        empty = empty_worker_mb(broker.bootstrap, work)
        for k in range(args.runs):
            runs.append(one_run(ml, broker.bootstrap, work, args.split, args.idle))
            print(f"run {k + 1}/{args.runs}: peak {runs[-1]['peak_mb']:.0f} MiB, steady "
                  f"{runs[-1]['steady_mb']:.0f} MiB", file=sys.stderr)
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    base = imports_mb()
    state = engine_state_mb(ml)

    def row(name: str, key: str, unit: str = "MiB") -> list:
        vals = [r[key] for r in runs]
        return [name, f"{median(vals):.0f} {unit}", " ".join(f"{v:.0f}" for v in vals)]

    print(f"\nML-100K: bootstrap on the first {args.split:.0%} "
          f"({ml.split_index(args.split):,} ratings), stream the rest; median of {args.runs} runs")
    print_table(["worker RSS", "median", "runs"], [
        row("peak (VmHWM) during bootstrap", "bootstrap_peak_mb"),
        row("when ready (bootstrapped, lists published)", "ready_mb"),
        row("peak (VmHWM) over the whole run", "peak_mb"),
        row(f"steady (idle after streaming {runs[0]['streamed_events']:,} events)", "steady_mb"),
        row("bootstrap time", "bootstrap_s", "s")])
    print()
    print_table(["where it goes", "MiB"], [
        ["Python + the worker's imports (faust, lightfm, numpy, scipy, rocksdict...)",
         f"{base:.0f}"],
        ["a worker started on empty topics (+ Faust, librdkafka, RocksDB, metrics server)",
         f"{empty:.0f}"],
        [f"model arrays ({state['user_capacity']} x {state['item_capacity']} rows incl. "
         "padding, 30 components)", f"{state['model_arrays_mb']:.1f}"],
        ["feature matrices (CSR)", f"{state['feature_matrices_mb']:.1f}"],
        [f"co-occurrence counts (dense {state['cooc_capacity']}^2 float32)",
         f"{state['cooccurrence_mb']:.1f}"]])
    peak = median([r["peak_mb"] for r in runs])
    print(f"\npeak {peak:.0f} MiB: target <= {TARGET_MB} MB "
          f"{'met' if peak * MB <= TARGET_MB * 1e6 else 'missed'}")
    path = write_results("memory", {"args": {k: str(v) for k, v in vars(args).items()},
                                    "target_mb": TARGET_MB, "imports_mb": base,
                                    "empty_worker_mb": empty,
                                    "engine_state": state, "runs": runs})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
