"""What exploration slots cost per list in the worker's list path.

    python bench/explore_cost.py [--data PATH] [--rounds 15]

Bootstraps the engine on the first 90 % of MovieLens 100K, then times
``Engine.lists_for_rows`` (lists of ``top_n`` = 20, as the worker publishes them) for
batches of 1, 10, 100 and all users, with ``explore_share`` 0, 0.05 and 0.1, interleaved
round by round so load on a shared machine hits every variant alike; reports the best and
the median round per list. Prints a table and writes ``explore_cost.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # the worker scores on one BLAS thread

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import print_table, write_results  # noqa: E402
from streamrec_eval.adapters import bootstrap_engine, engine_settings  # noqa: E402
from streamrec_eval.stream import Stream  # noqa: E402
from streamrec.movielens import find_movielens, load_movielens  # noqa: E402

SHARES = (0.0, 0.05, 0.1)
BATCHES = (1, 10, 100, None)      # None: every user


def measure(data: Path | None, rounds: int, n: int = 20) -> list[dict]:
    """Per-list seconds of lists_for_rows per (batch size, explore_share)."""
    stream = Stream.from_movielens(load_movielens(find_movielens(data, download=False)))
    base = engine_settings(epochs_bootstrap=3, explore_share=0.0)   # cost, not quality
    engine = bootstrap_engine(base, stream.events(0, stream.split_index(0.9)))
    variants = {s: base.model_copy(update={"explore_share": s}) for s in SHARES}
    all_rows = np.arange(len(engine.users))
    rng = np.random.default_rng(0)
    out = []
    for b in BATCHES:
        size = len(all_rows) if b is None else b
        reps = max(3, 600 // size)
        per_list: dict[float, list[float]] = {s: [] for s in SHARES}
        for _ in range(rounds):
            batches = [rng.choice(all_rows, size, replace=False) for _ in range(reps)]
            for share, settings in variants.items():
                engine.settings = settings
                t0 = time.perf_counter()
                for rows in batches:
                    engine.lists_for_rows(rows, n)
                per_list[share].append((time.perf_counter() - t0) / (reps * size))
        for share, times in per_list.items():
            out.append({"batch_users": size, "explore_share": share,
                        "us_per_list_best": round(min(times) * 1e6, 1),
                        "us_per_list_median": round(float(np.median(times)) * 1e6, 1)})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=None, help="ML-100K folder")
    p.add_argument("--rounds", type=int, default=15)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rows = measure(args.data, args.rounds)
    print_table(["users per batch", "explore_share", "µs per list (best)", "median"],
                [[r["batch_users"], r["explore_share"], r["us_per_list_best"],
                  r["us_per_list_median"]] for r in rows])
    path = write_results("explore_cost", {"list_length": 20, "rows": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
