"""Prequential hit@10 through the live pipeline: Kafka -> worker -> topic -> lookup HTTP API.

    python bench/live_prequential.py [--data PATH] [--rate 200] [--engine tansu|kafka]

The first 90 % of MovieLens 100K (time order) and its metadata go to ``interactions``; the
worker bootstraps on them; then each event of the last 10 % is published at ``--rate``
events/s, and *before* each positive (rating >= 4) is published, the user's list is read from
the lookup API: a hit if the item is in its top 10 (the worker already excludes seen items).
With ``--peers``, the same run also measures in-process the baselines (popularity, static,
periodic retrain), the peers of ``bench/peers.py`` and the same streamrec model, so the live
number stands next to all of them. Writes bench/results/live_prequential.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import child_env, print_table, spawn, wait, write_results  # noqa: E402
from bench.harness import ready  # noqa: E402
from producers.events import EventProducer, Pacer  # noqa: E402
from producers.movielens import rating_event, replay_movielens  # noqa: E402
from bench.pipeline import Brokers  # noqa: E402
from streamrec.broker import ensure_topics, free_port  # noqa: E402
from streamrec.movielens import MovieLens, find_movielens, load_movielens  # noqa: E402
from streamrec.settings import Settings  # noqa: E402

POSITIVE = 4.0



def _families(url: str) -> dict[str, list]:
    """Samples of a Prometheus endpoint by metric family (prometheus_client's parser)."""
    text = httpx.get(url, timeout=5).text
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def histogram_quantile(samples: list, q: float) -> float | None:
    """Quantile ``q`` of a histogram's samples, as the upper bound of its bucket, in ms."""
    buckets = sorted((float(x.labels["le"]), x.value) for x in samples
                     if x.name.endswith("_bucket"))
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    return next(le * 1000 for le, count in buckets if count >= q * total)


def scrape(worker_url: str, lookup_url: str) -> dict[str, float | None]:
    """The worker's batch counters and the per-hop delays of worker and lookup."""
    worker, lookup = _families(worker_url), _families(lookup_url)

    def total(family: str, suffix: str) -> float:
        return sum(x.value for x in worker.get(family, []) if x.name == family + suffix)

    batches = total("streamrec_worker_batch_records", "_count") or 1
    ingest = worker.get("streamrec_worker_ingest_delay_seconds", [])
    lists = lookup.get("streamrec_lookup_list_delay_seconds", [])
    return {"batches": batches,
            "mean_batch_events": total("streamrec_worker_batch_records", "_sum") / batches,
            "mean_batch_ms": 1000 * total("streamrec_worker_batch_seconds", "_sum") / batches,
            "ingest_delay_ms_p50": histogram_quantile(ingest, 0.5),
            "ingest_delay_ms_p90": histogram_quantile(ingest, 0.9),
            "quarantined": sum(x.value for x in worker.get("streamrec_worker_quarantined", [])
                               if x.name.endswith("_total")),
            "list_delay_ms_p50": histogram_quantile(lists, 0.5),
            "list_delay_ms_p90": histogram_quantile(lists, 0.9)}


def synthetic_movielens(seed: int) -> MovieLens:
    """The power-user history of ``streamrec_eval.synthetic`` as a MovieLens (no metadata)."""
    from streamrec_eval.synthetic import generate

    h = generate(seed=seed)
    return MovieLens(users=h.users, items=h.items, ratings=h.ratings,
                     timestamps=h.timestamps.astype(np.int64), user_features={},
                     item_features={}, titles={})


def live_run(ml: MovieLens, rate: float, bootstrap: str, work: Path, **overrides) -> dict:
    split = ml.split_index(0.9)
    s = Settings(bootstrap_servers=bootstrap, state_dir=work / "state", http_port=free_port(),
                 worker_metrics_port=free_port(), **overrides)
    ensure_topics(s)
    replay_movielens(s, ml, limit=split, progress=False)
    env = child_env(s)
    procs = [spawn(["worker", "--no-progress"], env, work / "worker.log"),
             spawn(["serve"], env, work / "serve.log")]
    api = httpx.Client(base_url=f"http://127.0.0.1:{s.http_port}", timeout=5)
    try:
        first_user = str(ml.users[0])
        wait(lambda: api.get(f"/recommendations/{first_user}").json()["source"] == "model",
             600, "bootstrap lists")
        # ... and the worker streams (its consumer joined): else the first seconds of
        # events wait for the group join and every list misses them.
        wait(lambda: ready(s), 120, "worker streaming")
        returning = set(ml.users[:split][ml.ratings[:split] >= POSITIVE].tolist())
        hits, new_flags, served, stale, ages, missing = [], [], [], [], [], []
        last_sent: dict[str, float] = {}
        sent_times: dict[str, list[float]] = {}
        t0 = time.perf_counter()
        pacer = Pacer(rate)
        from tqdm import tqdm
        with EventProducer(s, **{"linger.ms": 0}) as producer:
            for k in tqdm(range(split, len(ml)), desc="live prequential", unit="ev",
                          disable=None):
                if ml.ratings[k] >= POSITIVE:
                    user, item = str(ml.users[k]), str(ml.items[k])
                    doc = api.get(f"/recommendations/{user}", params={"n": 10}).json()
                    got = [it["item_id"] for it in doc["items"]]
                    hits.append(item in got)
                    new_flags.append(user not in returning)
                    served.extend(got)
                    # stale: the list predates this user's previous event
                    stale.append(doc["updated_at"] < last_sent.get(user, 0.0))
                    ages.append(time.time() - doc["updated_at"])
                    # the user's own events the served list has not seen yet
                    missing.append(sum(1 for t in sent_times.get(user, ())[-20:]
                                       if t > doc["updated_at"]))
                now = time.time()   # before the send: a list can never predate its event
                producer.send(rating_event(ml, k))
                last_sent[str(ml.users[k])] = now
                sent_times.setdefault(str(ml.users[k]), []).append(now)
                pacer.tick()
        wall = time.perf_counter() - t0
        worker_metrics = scrape(f"http://127.0.0.1:{s.worker_metrics_port}/metrics",
                                f"http://127.0.0.1:{s.http_port}/metrics")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
    h, n = np.array(hits), np.array(new_flags)
    return {"hit_at_10": float(h.mean()), "positives": int(len(h)),
            "hit_new_users": float(h[n].mean()) if n.any() else None,
            "hit_returning_users": float(h[~n].mean()) if (~n).any() else None,
            "coverage": len(set(served)) / len(set(ml.items.tolist())), "rate": rate,
            "wall_s": wall,
            "worker": worker_metrics,
            "stale_share": float(np.mean(stale)) if stale else None,
            "list_age_ms_p50": float(np.percentile(ages, 50) * 1000) if ages else None,
            "list_age_ms_p90": float(np.percentile(ages, 90) * 1000) if ages else None,
            "missing_own_events_mean": float(np.mean(missing)) if missing else None,
            "missing_own_events_hist": np.bincount(np.minimum(missing, 5)).tolist()
            if missing else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--synthetic", type=int, default=None, metavar="SEED",
                    help="the power-user history of streamrec_eval.synthetic (seed 7 in "
                    "docs/evaluation.md) instead of MovieLens 100K")
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--engine", default="kafka", choices=["kafka", "tansu"])
    ap.add_argument("--peers", action="store_true",
                    help="also run, in the same run, the in-process baselines and peers "
                    "(popularity, static, periodic retrain, LightFM per 1/10/50 events, ALS "
                    "fold-in, item-kNN, the same streamrec model in-process): ~10 min more")
    ap.add_argument("--quick-peers", action="store_true",
                    help="with --peers: skip the slow per-event LightFM peer")
    ap.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                    help="worker settings, e.g. epochs_per_batch=5")
    ap.add_argument("--tag", default="", help="results file suffix, e.g. guard-off-50")
    args = ap.parse_args()
    ml = synthetic_movielens(args.synthetic) if args.synthetic is not None else \
        load_movielens(find_movielens(args.data))
    work = Path(tempfile.mkdtemp(prefix="streamrec-live-"))
    brokers = Brokers(args.engine, work)        # Kafka: JIT-warmed first (bench/pipeline.py)
    try:
        bootstrap = brokers.fresh()
        overrides = brokers.settings(dict(kv.split("=", 1) for kv in args.set))
        live = live_run(ml, args.rate, bootstrap, work, **overrides)
    finally:
        brokers.stop()
    print({k: v for k, v in live.items() if k.startswith(("stale", "list_age", "missing", "worker"))})
    rows = [["streamrec live pipeline", live["hit_at_10"], live["hit_new_users"],
             live["hit_returning_users"], live["coverage"]]]
    results = {"live": live, "settings": overrides, "args": vars(args) | {"data": str(args.data)}}
    if args.peers:
        from bench.peers import run_peers
        from streamrec_eval.stream import Stream

        stream = Stream.from_movielens(ml)
        summaries = run_peers(stream, quick=args.quick_peers, periodic=True)
        for r in summaries:
            rows.append([f"{r['name']} (in-process)", r["hit@10"], r.get("hit@10_new"),
                         r.get("hit@10_returning"), r.get("coverage")])
        results["in_process"] = summaries
    print_table(["model", "hit@10", "new users", "returning", "coverage"], rows)
    name = "live_prequential" if args.synthetic is None else "live_prequential_synthetic"
    name += f"-{args.tag}" if args.tag else ""
    print(f"wrote {write_results(name, results)}")


if __name__ == "__main__":
    main()
