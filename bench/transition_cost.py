"""What the transition index costs: per event in the engine, and at 100 k items.

    python bench/transition_cost.py [--positives 2000000] [--repeats 3]
    python bench/transition_cost.py --synthetic 7     # part 1 on the power-user stream

1. **Engine per event, ML-100K** (in-process, one BLAS and one LightFM thread): an engine
   bootstrapped on the first 90 %, then each of the last 10 % events applied alone
   (``apply_interactions``: history, counts, ``fit_partial``) and the user's list of 20
   built (``Engine.lists``), with the transition index off (``trans_window=0``: not counted,
   not blended) and on (the defaults). Median of ``--repeats`` passes (the two interleaved),
   CPU microseconds per event (``time.process_time``: one thread each, and the shared box's
   other jobs inflate CPU time less than wall time).
2. **Counts at 100 k items** (``bench/state_scale.py``'s power-law stream: ``--positives``
   over 200 k users x 100 k items, micro-batches of 2,000): ``CooccurrenceIndex.add`` per
   positive without and with transitions, the sparse scores per user (co-occurrence and
   transitions, the candidate path's calls, 256 users per call), and the memory of the
   counts (bytes held; RSS growth).

Writes ``transition_cost.json``.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import psutil  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import print_table, write_results  # noqa: E402
from bench.harness import MB  # noqa: E402
from bench.state_scale import stream  # noqa: E402
from stream_app.cooccurrence import CooccurrenceIndex  # noqa: E402
from streamrec.settings import Settings  # noqa: E402


def engine_costs(repeats: int, synthetic: int | None = None) -> dict:
    from streamrec_eval.adapters import bootstrap_engine, engine_settings
    from streamrec_eval.stream import Stream
    from streamrec.movielens import find_movielens, load_movielens

    if synthetic is not None:   # the power-user stream: 10 k items, sparse transitions
        from bench.live_prequential import synthetic_movielens
        ml = synthetic_movielens(synthetic)
    else:
        ml = load_movielens(find_movielens(download=False))
    st = Stream.from_movielens(ml)
    lo = st.split_index(0.9)
    events = st.events(lo, len(st)).interactions()
    configs = {"transitions off": {"trans_window": 0, "trans_weight": 0.0},
               "defaults (transitions on)": {}}
    runs = {name: {"update_us": [], "list_us": []} for name in configs}
    for _ in range(repeats):            # interleaved, so load on the box hits both alike
        for name, kw in configs.items():
            s = engine_settings(fit_threads=1, **kw)
            e = bootstrap_engine(s, st.events(0, lo))
            t_add = t_list = 0.0
            for ev in events:
                t0 = time.process_time()
                e.apply_interactions([ev])
                t1 = time.process_time()
                e.lists(np.array([e.users.get(ev.user_id)]), s.top_n)
                t_list += time.process_time() - t1
                t_add += t1 - t0
            runs[name]["update_us"].append(1e6 * t_add / len(events))
            runs[name]["list_us"].append(1e6 * t_list / len(events))
            runs[name]["counts_mb"] = e.cooc.nbytes / MB
            print(f"{name}: update {runs[name]['update_us'][-1]:.0f} us, list "
                  f"{runs[name]['list_us'][-1]:.0f} us per event", flush=True)
    out = {name: {"update_us": statistics.median(r["update_us"]),
                  "list_us": statistics.median(r["list_us"]), "counts_mb": r["counts_mb"],
                  "runs": {"update_us": r["update_us"], "list_us": r["list_us"]}}
           for name, r in runs.items()}
    return out


def counts_at_scale(positives: int, users: int, items: int, batch: int, seed: int) -> dict:
    s = Settings()
    u, i = stream(users, items, positives, seed + 1)     # state_scale.py's part 3 stream
    proc = psutil.Process()
    out = {}
    for name, trans in (("co-occurrence only", None),
                        ("co-occurrence + transitions",
                         (s.trans_window, s.trans_decay, s.trans_recent))):
        rss0 = proc.memory_info().rss
        idx = CooccurrenceIndex(alpha=s.cooc_alpha, recent=s.cooc_recent,
                                pair_window=s.cooc_pair_window, capacity=items,
                                growth=s.growth_factor, dense_max=s.cooc_dense_items,
                                max_neighbours=s.cooc_max_neighbours, transitions=trans)
        t0 = time.process_time()
        for k in range(0, len(u), batch):
            idx.add(u[k:k + batch], i[k:k + batch])
        add_us = 1e6 * (time.process_time() - t0) / len(u)
        rss = (proc.memory_info().rss - rss0) / MB
        active = np.unique(u[-200_000:])
        rng = np.random.default_rng(seed)
        score = {}
        for kind in ("cooc", "transitions") if trans else ("cooc",):
            times = []
            for _ in range(5):
                chunk = rng.choice(active, 256, replace=False)
                t0 = time.process_time()
                if kind == "cooc":
                    idx.scores_sparse(chunk, items)
                else:
                    idx.transition_scores(chunk, items, sparse=True)
                times.append((time.process_time() - t0) / len(chunk))
            score[kind] = 1e6 * statistics.median(times)
        t = idx.transitions
        out[name] = {"add_us_per_positive": add_us, "score_us_per_user": score,
                     "cooc_counts_mb": (idx.sparse_counts.nbytes + idx.counts.nbytes) / MB,
                     "transition_counts_mb": t.nbytes / MB if t else 0.0,
                     "transition_nnz": t.rows.nnz if t else 0,
                     "transition_merges": t.rows.merges if t else 0,
                     "history_mb": idx.history.nbytes / MB, "rss_growth_mb": rss}
        print(name, out[name], flush=True)
        del idx
    return {"positives": positives, "users": users, "items": items, "batch": batch,
            **out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--positives", type=int, default=2_000_000)
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=2_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-engine", action="store_true")
    ap.add_argument("--synthetic", type=int, default=None, metavar="SEED",
                    help="part 1 only, on the power-user stream of this seed (10 k items: "
                    "sparse transition counts) instead of ML-100K; writes "
                    "transition_cost-synthetic.json")
    args = ap.parse_args()
    eng = {} if args.skip_engine else engine_costs(args.repeats, args.synthetic)
    data = "ML-100K" if args.synthetic is None else "power-user stream"
    if eng:
        print_table([f"{data}, per event", "update us", "list us", "counts MB"],
                    [[k, v["update_us"], v["list_us"], v["counts_mb"]] for k, v in eng.items()])
    if args.synthetic is not None:
        print(f"wrote {write_results('transition_cost-synthetic', {'engine': eng})}")
        return
    scale = counts_at_scale(args.positives, args.users, args.items, args.batch, args.seed)
    print_table(["100 k items", "add us/positive", "cooc score us/user",
                 "transition score us/user", "cooc MB", "transitions MB", "RSS growth MB"],
                [[k, v["add_us_per_positive"], v["score_us_per_user"]["cooc"],
                  v["score_us_per_user"].get("transitions", 0.0), v["cooc_counts_mb"],
                  v["transition_counts_mb"], v["rss_growth_mb"]]
                 for k, v in scale.items() if isinstance(v, dict)])
    path = write_results("transition_cost", {"engine_ml100k": eng, "at_scale": scale})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
