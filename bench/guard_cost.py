"""What the fraud/bot guard costs per event when a live micro-batch is one event.

    python bench/guard_cost.py [--events 4000] [--repeats 3]

The power-user stream's test window (``streamrec_eval.synthetic``, seed 7: new and returning
users, claimed timestamps from the data), each event checked alone as the worker's
one-event batches are (``Guard.check``: arrival 5 ms apart, as at 200 events/s), after
1,000 warm-up events. Wall time per event, median and p90 of each pass, median over
``--repeats`` passes. Issue #18: this cost sits on every event's way to its list.
Writes ``bench/results/guard_cost.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import print_table, write_results  # noqa: E402
from bench.live_prequential import synthetic_movielens  # noqa: E402
from stream_app.guard import Guard, GuardConfig  # noqa: E402
from streamrec.schema import Interaction  # noqa: E402

WARMUP = 1000


def one_pass(events: list[Interaction], known: np.ndarray) -> tuple[float, float]:
    guard = Guard(GuardConfig())
    t = time.time()
    took = []
    for k, ev in enumerate(events):
        t += 0.005
        t0 = time.perf_counter()
        guard.check([ev], np.array([t]), known[k:k + 1], np.array([False]),
                    history_sizes=np.array([50]))
        if k >= WARMUP:
            took.append(time.perf_counter() - t0)
    return 1e6 * float(np.median(took)), 1e6 * float(np.percentile(took, 90))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    ml = synthetic_movielens(7)
    lo = ml.split_index(0.9)
    rows = range(lo, min(len(ml.users), lo + WARMUP + args.events))
    events = [Interaction(user_id=str(ml.users[k]), item_id=str(ml.items[k]),
                          event_type="rating", rating=float(ml.ratings[k]),
                          timestamp=float(ml.timestamps[k])) for k in rows]
    seen = set(ml.users[:lo].tolist())
    known = np.array([ml.users[k] in seen for k in rows])
    runs = [one_pass(events, known) for _ in range(args.repeats)]
    p50 = statistics.median(r[0] for r in runs)
    p90 = statistics.median(r[1] for r in runs)
    print_table(["guard, one-event batches", "p50 us/event", "p90 us/event", "passes"],
                [["power-user stream, seed 7", p50, p90, len(runs)]])
    print(f"wrote {write_results('guard_cost', {'p50_us': p50, 'p90_us': p90, 'runs': runs, 'events': len(events) - WARMUP})}")


if __name__ == "__main__":
    main()
