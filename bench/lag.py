"""What a late list costs: prequential hit@10 when served lists lag the stream by d events,
with and without the lookup's seen filter; and the worker's CPU time per event.

    python bench/lag.py [--data PATH] [--lags 0 1 2 3 4 8]

In-process, ML-100K, the engine's defaults without exploration, one event per micro-batch.
After each event the user's top 30 is "published"; a read before event k sees what was
published up to event k-1-d (users with nothing published yet get the fallback list of
that time). The seen filter drops the items of the user's own events before k (as
consumers/seen.py does with its one-hop view of interactions). Prints two tables and writes
bench/results/lag.json. Docs: docs/latency-notes.md.
"""

from __future__ import annotations

import argparse
import bisect
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import print_table, write_results  # noqa: E402
from streamrec_eval.adapters import EngineModel  # noqa: E402
from streamrec_eval.stream import POSITIVE, Stream  # noqa: E402
from streamrec.movielens import find_movielens, load_movielens  # noqa: E402


def event_cost(st: Stream, lo: int, n: int = 800) -> dict:
    """CPU ms per event of apply_interactions (10 epochs; and, on the next
    ``n`` events, through LightFM's own ``fit_partial`` per epoch, the path before the kernel
    change) and of the user's list."""
    m = EngineModel(batch_size=1)
    m.fit_initial(st.events(0, lo))
    e = m.engine
    evs = [st.events(k, k + 1).interactions() for k in range(lo, lo + 2 * n + 200)]
    for ev in evs[:200]:
        e.lists_for_rows(e.apply_interactions(ev).users, 20)
    t = time.process_time()
    for ev in evs[200:200 + n]:
        e.apply_interactions(ev)
    apply_ms = (time.process_time() - t) / n * 1000
    import stream_app.model as model_module  # the same update through LightFM.fit_partial
    kernels = dict(model_module._KERNELS)
    model_module._KERNELS.clear()
    try:
        t = time.process_time()
        for ev in evs[200 + n:]:
            e.apply_interactions(ev)
        reference_ms = (time.process_time() - t) / n * 1000
    finally:
        model_module._KERNELS.update(kernels)
    t = time.process_time()
    for ev in evs[200:200 + n]:
        e.lists_for_rows(np.array([e.users.get(ev[0].user_id)]), 20)
    lists_ms = (time.process_time() - t) / n * 1000
    return {"apply_ms": apply_ms, "apply_ms_via_lightfm_fit_partial": reference_ms,
            "list_ms": lists_ms, "event_ms": apply_ms + lists_ms}


def lag_table(st: Stream, lo: int, lags: list[int]) -> list[dict]:
    m = EngineModel(batch_size=1)
    m.fit_initial(st.events(0, lo))
    e = m.engine
    users, items, ratings = st.users.tolist(), st.items.tolist(), st.ratings.tolist()
    uid, iid = st.user_ids, st.item_ids
    published: dict[int, list[tuple[int, list[str]]]] = {}
    fallback = [(lo - 1, [x for x, *_ in e.fallback(40)])]
    queries, own = [], {}
    from tqdm import tqdm
    for k in tqdm(range(lo, len(st)), desc="replay", unit="ev", mininterval=2):
        u = users[k]
        if ratings[k] >= POSITIVE:
            queries.append((k, u, iid[items[k]]))
        own.setdefault(u, []).append(k)
        m.update(st.events(k, k + 1))
        published.setdefault(u, []).append((k, [x for x, *_ in e.recommend(uid[u], 30)[0]]))
        if k % 20 == 0:
            fallback.append((k, [x for x, *_ in e.fallback(40)]))
    before = {}
    for u, i in zip(users[:lo], items[:lo]):
        before.setdefault(u, set()).add(iid[i])
    out = []
    for d in lags:
        for filt in (False, True):
            hits = []
            for k, u, item in queries:
                cut = k - 1 - d
                pl = published.get(u, [])
                idx = bisect.bisect_right([p[0] for p in pl], cut) - 1
                if idx >= 0:
                    lst = pl[idx][1]
                else:
                    f = bisect.bisect_right([x[0] for x in fallback], cut) - 1
                    lst = fallback[max(f, 0)][1]
                if filt:
                    seen = before.get(u, set()) | {iid[items[j]] for j in own[u] if j < k}
                    lst = [x for x in lst if x not in seen]
                hits.append(item in lst[:10])
            out.append({"lag_events": d, "seen_filter": filt, "hit_at_10": float(np.mean(hits))})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--lags", type=int, nargs="+", default=[0, 1, 2, 3, 4, 8])
    args = ap.parse_args()
    st = Stream.from_movielens(load_movielens(find_movielens(args.data)))
    lo = st.split_index(0.9)
    cost = event_cost(st, lo)
    print_table(["CPU per event", "ms"], [[k, v] for k, v in cost.items()])
    table = lag_table(st, lo, args.lags)
    rows = {}
    for r in table:
        rows.setdefault(r["lag_events"], [r["lag_events"]]).append(r["hit_at_10"])
    print_table(["lists late by (events)", "hit@10", "hit@10 with seen filter"],
                list(rows.values()))
    print(f"wrote {write_results('lag', {'event_cost': cost, 'lag': table})}")


if __name__ == "__main__":
    main()
