"""What ``list_before_fit`` costs in-process: lists built before the batch's LightFM step.

    python bench/fit_lag.py [--synthetic SEED]

The prequential protocol of ``docs/evaluation.md`` (engine bootstrapped on the first 90 %
in time order, one event per micro-batch, exploration off, every positive of the last 10 %
checked against its user's top 10 before it is applied), twice from the same bootstrap
settings: the LightFM step of each event before the next list (the default), and after it
(each list built after the event's counts, transitions and seen items but before its
``fit_partial``: what the worker publishes with ``list_before_fit``). Prints hit@10 of both
and writes ``fit_lag[-synthetic<SEED>].json``.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import print_table, write_results  # noqa: E402

POSITIVE = 4.0


def hit_rate(ml, fit_after_list: bool) -> float:
    """Prequential hit@10 with the LightFM step before the next list, or after it."""
    from streamrec_eval.adapters import bootstrap_engine, engine_settings
    from streamrec_eval.stream import Stream

    st = Stream.from_movielens(ml)
    lo = st.split_index(0.9)
    events = st.events(lo, len(st)).interactions()
    ratings = ml.ratings[lo:]
    s = engine_settings(fit_threads=1)
    e = bootstrap_engine(s, st.events(0, lo))
    hits, due = [], False
    for k, ev in enumerate(events):
        if ratings[k] >= POSITIVE:
            row, col = e.users.get(ev.user_id), e.items.get(ev.item_id)
            top = e.lists(np.array([row]), 10)[0][0] if row is not None else []
            hits.append(col is not None and col in set(np.asarray(top).tolist()))
        if due:                       # the previous event's step, after its list
            e.fit_batch(*e.last_batch_arrays)
        e.apply_interactions([ev], train=not fit_after_list)
        due = fit_after_list
    return float(np.mean(hits))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--synthetic", type=int, default=None, metavar="SEED",
                    help="the power-user stream of bench/live_prequential.py")
    args = ap.parse_args()
    from bench.live_prequential import synthetic_movielens
    from streamrec.movielens import find_movielens, load_movielens

    ml = synthetic_movielens(args.synthetic) if args.synthetic is not None else \
        load_movielens(find_movielens(download=False))
    rows, out = [], {}
    for name, after in (("LightFM step before the list (default)", False),
                        ("after it (list_before_fit)", True)):
        t0 = time.perf_counter()
        out[name] = hit_rate(ml, after)
        rows.append([name, out[name], time.perf_counter() - t0])
    print_table(["order", "hit@10", "seconds"], rows)
    name = "fit_lag" + (f"-synthetic{args.synthetic}" if args.synthetic is not None else "")
    print(f"wrote {write_results(name, {'hit_at_10': out, 'args': vars(args)})}")


if __name__ == "__main__":
    main()
