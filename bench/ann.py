"""Approximate top-N (``stream_app.ann.IVFIndex``) against the exact scan, on trained models.

    python bench/ann.py                                   # 10 k and 100 k items (~4-7 min)
    python bench/ann.py --items 1000000 --taste 0.95 --crossover \
        --candidates 2000 5000 10000 20000 30000          # 1 M items (~7 min, ~3 GiB)
    python bench/ann.py --items 10000 --quick             # a smoke run (~20 s)

Per catalogue size a ``PaddedLightFM`` (the worker's model, default settings: WARP,
30 components) is trained with ``fit_partial`` for ``--epochs`` epochs on ``bench/scale.py``'s
synthetic power-law events (the same draws as its ``synthetic_events``; nothing is cached).
That generator draws users and items independently, so every user gets about the same
popular list; ``--taste`` 0.95 (the second run per size by default) draws 95 % of events
from two taste groups per user instead (see ``event_arrays``), for personal lists: the
"exact lists: distinct items" column says how personal they came out.
The last 1 % of item rows are held back from that training: they are the "new items" that
appear after the index is built. Then, with ``OMP_NUM_THREADS=1``/``OPENBLAS_NUM_THREADS=1``:

1. **Recall and speed**: for a few ``n_candidates``, recall@20 of ``IVFIndex.search`` against
   exact ``top_n`` of ``PaddedLightFM.scores`` (both excluding each user's seen items) for
   ``--eval-users`` users drawn from the event stream (active users are listed more often),
   and ms per list (user representations + scoring + selection) for batches of 256 and 16
   users, medians of 3 repeats; build time; the catalogue's list diversity (how many distinct
   items the exact lists hold: a catalogue where everybody gets the same list is easy).
2. **Drift**: up to the last of ``--drift-checkpoints`` (default 60) more micro-batches of
   2,000 events with 10 epochs each (the worker's defaults), the held-back items now valid;
   after each, ``update`` of the batch's item rows on one index (what the worker knows was
   touched; WARP's sampled negatives move too and are not reported) and nothing on a twin;
   recall of both at the checkpoints, then after a rebuild.
   Update cost per touched item and the O(N) re-sort the next query pays.
3. **Crossover**: sub-catalogues of the largest trained model (its first N item rows), exact
   vs the index at its default candidates: below which N exact is as fast.

Writes bench/results/ann-<items>.json, e.g. ann-10k-100k.json (``--quick``: ann_quick.json).
Times are CPU time of this single-threaded process (medians of 3), which a busy box
disturbs less than wall time.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")   # before numpy: stable ratios on a shared 2-core box

import argparse
import copy
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import median, print_table, write_results  # noqa: E402
from bench.scale import EVENT_SHARES, EVENT_TYPES, PowerLaw  # noqa: E402
from stream_app.ann import IVFIndex, default_candidates, nearest  # noqa: E402
from stream_app.model import ModelParams, PaddedLightFM  # noqa: E402
from stream_app.topn import top_n  # noqa: E402
from streamrec.settings import EVENT_WEIGHTS_DEFAULT  # noqa: E402

N_TOP = 20
BATCH_EVENTS = 2000      # Settings.max_batch
BATCH_EPOCHS = 10        # Settings.epochs_per_batch
NEW_ITEMS = 0.01         # share of item rows that only appear after the build
EVENTS_FOR = {10_000: 1_000_000, 100_000: 2_000_000, 1_000_000: 3_000_000}


# --------------------------------------------------------------------------- data
def event_arrays(users: int, items: int, events: int, seed: int = 0, item_skew: float = 1.0,
                 user_skew: float = 0.5, taste: float = 0.0, groups: int = 64,
                 chunk: int = 100_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, item, weight) arrays of ``bench.scale.synthetic_events``' events: the same
    generator draws in the same order, without building the JSON records.

    That generator draws users and items independently, so a model trained on it learns
    popularity and every user gets about the same list: an easy case for an index. With
    ``taste`` > 0 that share of events instead picks an item from one of the user's two
    taste groups (``user % groups`` 60 %, ``user // groups % groups`` 40 %; group ``g`` holds
    the ids ``= g mod groups``, power-law popular within it), so lists are personal and the
    top items of a user sit in two regions of the embedding space.
    """
    rng = np.random.default_rng(seed)
    pick_user, pick_item = PowerLaw(users, user_skew, rng), PowerLaw(items, item_skew, rng)
    weight_of = np.array([EVENT_WEIGHTS_DEFAULT[str(t)] for t in EVENT_TYPES], np.float32)
    trng = np.random.default_rng(seed + 1_000)       # leaves the generator's draws as they are
    pick_slot = PowerLaw(items // groups, item_skew, trng) if taste > 0 else None
    us, its, ws = [], [], []
    for start in range(0, events, chunk):
        n = min(chunk, events - start)
        u, i = pick_user.draw(n), pick_item.draw(n)
        ws.append(weight_of[rng.choice(3, n, p=EVENT_SHARES)])
        if pick_slot is not None:
            own = trng.random(n) < taste
            group = np.where(trng.random(n) < 0.6, u % groups, u // groups % groups)
            i[own] = pick_slot.draw(int(own.sum())) * groups + group[own]
        us.append(u)
        its.append(i)
    return (np.concatenate(us).astype(np.int32), np.concatenate(its).astype(np.int32),
            np.concatenate(ws))


def seen_of(u: np.ndarray, i: np.ndarray, rows: np.ndarray) -> list[np.ndarray]:
    """Distinct items each of ``rows`` interacted with (what the worker excludes)."""
    keep = np.isin(u, rows)
    pos = np.searchsorted(rows, u[keep])           # rows is sorted
    key = np.unique(pos.astype(np.int64) * (int(i.max()) + 1) + i[keep])
    owner, item = key // (int(i.max()) + 1), key % (int(i.max()) + 1)
    bounds = np.searchsorted(owner, np.arange(len(rows) + 1))
    return [item[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


# --------------------------------------------------------------------------- measures
def exact_lists(model: PaddedLightFM, rows: np.ndarray, seen: list[np.ndarray],
                n_valid: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """What the worker does today (without the co-occurrence blend)."""
    return top_n(model.scores(rows), N_TOP, n_valid, seen)


def ann_lists(index: IVFIndex, model: PaddedLightFM, rows: np.ndarray,
              seen: list[np.ndarray], n_valid: int, n_candidates: int | None
              ) -> list[tuple[np.ndarray, np.ndarray]]:
    i_bias, i_emb = model.item_representations()
    _, u_emb = model.user_representations(rows)
    return index.search(u_emb, i_emb, i_bias, N_TOP, n_valid, seen, n_candidates)


def in_batches(fn: Callable, rows: np.ndarray, seen: list[np.ndarray], batch: int) -> list:
    out = []
    for s in range(0, len(rows), batch):
        out += fn(rows[s:s + batch], seen[s:s + batch])
    return out


def per_user_recall(got: list, want: list) -> np.ndarray:
    """Share of each user's exact top-20 that the index returned."""
    return np.array([len(np.intersect1d(g[0], w[0])) / max(1, len(w[0]))
                     for g, w in zip(got, want)])


def recall(got: list, want: list) -> float:
    return float(per_user_recall(got, want).mean())


def ms_per_list(fn: Callable, rows: np.ndarray, seen: list[np.ndarray], batch: int,
                lists: int, repeats: int = 3) -> float:
    """Median over ``repeats`` of the CPU time per list over ``lists`` users in batches.

    CPU time of this (single-threaded) process, not wall time: on a box shared with other
    work, wall time measures the neighbours as much as the code."""
    rows, seen = rows[:lists], seen[:lists]
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        in_batches(fn, rows, seen, batch)
        times.append(time.process_time() - t0)
    return 1e3 * median(times) / len(rows)


def misassigned(index: IVFIndex, model: PaddedLightFM) -> float:
    """Share of indexed rows whose nearest centroid, with the current vectors, is not the
    list they are in: how stale the membership is."""
    i_bias, i_emb = model.item_representations()
    n = index.n_indexed
    x = np.hstack([i_emb[:n], i_bias[:n, None]]).astype(np.float32)
    return float((nearest(x, index.centroids) != index.assign).mean())


def diversity(lists: list) -> dict:
    """How personal the exact lists are: distinct items over all list slots, and the mean
    overlap of a list with the catalogue-wide most frequent 20 of these lists."""
    items = np.concatenate([w[0] for w in lists])
    uniq, counts = np.unique(items, return_counts=True)
    top = uniq[np.argsort(-counts)[:N_TOP]]
    return {"distinct_share": len(uniq) / max(1, len(items)),
            "overlap_with_most_listed_20": float(np.mean(
                [len(np.intersect1d(w[0], top)) / N_TOP for w in lists]))}


# --------------------------------------------------------------------------- one size
def train(n_users: int, n_items: int, n_events: int, drift: int, epochs: int, seed: int,
          taste: float, groups: int) -> tuple[PaddedLightFM, tuple, tuple]:
    """A model trained on the events but those of the held-back items, and the next
    ``drift`` events of the stream as (u, i, w) arrays."""
    u, i, w = event_arrays(n_users, n_items, n_events + drift, seed, taste=taste,
                           groups=groups)
    n_old = int(n_items * (1 - NEW_ITEMS))
    head, tail = slice(0, n_events), slice(n_events, None)
    keep = i[head] < n_old
    model = PaddedLightFM(ModelParams(), n_users + 100, n_items + 100)
    t0 = time.perf_counter()
    model.fit_partial(u[head][keep], i[head][keep], w[head][keep], epochs=epochs)
    print(f"  trained {n_items:,} items (taste {taste:g}) on {keep.sum():,} events x {epochs} "
          f"epochs in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return model, (u[head][keep], i[head][keep], w[head][keep]), (u[tail], i[tail], w[tail])


def eval_users(u: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Distinct users drawn from the event stream (in a random order)."""
    rng = np.random.default_rng(seed + 1)
    rows = np.unique(rng.choice(u, 3 * count))
    return np.sort(rng.permutation(rows)[:count])


def measure(n_items: int, taste: float, args: argparse.Namespace) -> dict:
    n_events = args.events or EVENTS_FOR.get(n_items, 2 * n_items)
    model, (u, i, w), drift = train(args.users, n_items, n_events,
                                    max(args.drift_checkpoints) * BATCH_EVENTS, args.epochs,
                                    args.seed, taste, args.groups)
    n_old = int(n_items * (1 - NEW_ITEMS))
    rows = eval_users(u, args.eval_users, args.seed)
    seen = seen_of(u, i, rows)
    i_bias, i_emb = model.item_representations()

    t0 = time.process_time()
    index = IVFIndex(n_lists=args.lists, seed=args.seed).build(i_emb, i_bias, n_old)
    build_s = time.process_time() - t0

    exact = in_batches(lambda r, s: exact_lists(model, r, s, n_old), rows, seen, 256)
    timed = min(len(rows), max(256, int(args.timed_lists * min(1.0, 1e5 / n_items))))
    ex_ms = {b: ms_per_list(lambda r, s: exact_lists(model, r, s, n_old), rows, seen, b,
                            timed if b == 256 else min(timed, 256)) for b in (256, 16)}
    sweep = sorted({c for c in args.candidates if c < n_old} | {default_candidates(n_old)})
    points = []
    for c in sweep:
        def fn(r, s, c=c):
            return ann_lists(index, model, r, s, n_old, c)
        got = per_user_recall(in_batches(fn, rows, seen, 256), exact)
        ms = {b: ms_per_list(fn, rows, seen, b, timed if b == 256 else min(timed, 256))
              for b in (256, 16)}
        points.append({"n_candidates": c, "share": c / n_old, "recall_at_20": float(got.mean()),
                       "recall_p5": float(np.percentile(got, 5)),
                       "ms_per_list_256": ms[256], "ms_per_list_16": ms[16],
                       "speedup_256": ex_ms[256] / ms[256], "speedup_16": ex_ms[16] / ms[16],
                       "default": c == default_candidates(n_old)})
        print(f"  {n_items:,} items, {c:,} candidates: recall {points[-1]['recall_at_20']:.3f}, "
              f"{ms[256]:.3f} ms/list (exact {ex_ms[256]:.3f})", file=sys.stderr)
    out = {"items": n_items, "taste": taste, "valid_items_at_build": n_old, "events": int(len(u)),
           "users": args.users, "lists": index.n_lists, "list_size_max": int(
               index.list_sizes().max()), "build_s": build_s, "eval_users": len(rows),
           "timed_lists": timed, "exact_ms_per_list_256": ex_ms[256],
           "exact_ms_per_list_16": ex_ms[16], "diversity": diversity(exact), "sweep": points}
    out["drift"] = drift_run(model, index, drift, (u, i), rows, n_items, args)
    if args.crossover and n_items == max(args.items) and taste == max(args.taste):
        out["crossover"] = crossover(model, rows, seen, args)
    return out


# --------------------------------------------------------------------------- drift
def drift_run(model: PaddedLightFM, index: IVFIndex, drift: tuple, history: tuple,
              rows: np.ndarray, n_items: int, args: argparse.Namespace) -> dict:
    """Keep training in micro-batches; ``update`` one index, leave its twin alone."""
    du, di, dw = drift
    stale = copy.deepcopy(index)
    levels = (("", default_candidates(n_items)), ("_quarter", default_candidates(n_items) // 4))
    checkpoints = set(args.drift_checkpoints)
    upd_s, resort_s, touched = [], [], 0
    points = []
    all_u, all_i = history
    for b in range(1, max(checkpoints) + 1):
        sl = slice((b - 1) * BATCH_EVENTS, b * BATCH_EVENTS)
        model.fit_partial(du[sl], di[sl], dw[sl], epochs=BATCH_EPOCHS)
        i_bias, i_emb = model.item_representations()
        item_rows = np.unique(di[sl])
        t0 = time.process_time()
        index.update(item_rows, i_emb, i_bias)
        t1 = time.process_time()
        index.refresh()
        upd_s.append(t1 - t0)
        resort_s.append(time.process_time() - t1)
        touched += len(item_rows)
        if b in checkpoints:
            hu, hi = np.concatenate([all_u, du[:b * BATCH_EVENTS]]), \
                np.concatenate([all_i, di[:b * BATCH_EVENTS]])
            seen = seen_of(hu, hi, rows)
            exact = in_batches(lambda r, s: exact_lists(model, r, s, n_items), rows, seen, 256)
            p = {"micro_batches": b, "events_since_build": b * BATCH_EVENTS,
                 "stale_fraction": index.stale_fraction,
                 "misassigned_updated": misassigned(index, model),
                 "misassigned_not_updated": misassigned(stale, model),
                 "needs_rebuild": index.needs_rebuild(i_emb, i_bias)}
            for tag, c in levels:
                for name, ix in (("updated", index), ("not_updated", stale)):
                    got = in_batches(lambda r, s, ix=ix, c=c: ann_lists(ix, model, r, s,
                                                                        n_items, c),
                                     rows, seen, 256)
                    p[f"recall_{name}{tag}"] = recall(got, exact)
            new = np.arange(int(n_items * (1 - NEW_ITEMS)), n_items)
            p["new_items_in_exact_lists"] = int(sum(np.isin(w[0], new).sum() for w in exact))
            points.append(p)
            print(f"  drift {b} batches: recall updated {p['recall_updated']:.3f}, "
                  f"not updated {p['recall_not_updated']:.3f}", file=sys.stderr)
    i_bias, i_emb = model.item_representations()
    t0 = time.process_time()
    index.rebuild(i_emb, i_bias, n_items)
    rebuild_s = time.process_time() - t0
    after = {}
    for tag, c in levels:
        got = in_batches(lambda r, s, c=c: ann_lists(index, model, r, s, n_items, c), rows,
                         seen, 256)
        after[f"recall_after_rebuild{tag}"] = recall(got, exact)
    return {"points": points, **after, "rebuild_s": rebuild_s,
            "update_ms_per_batch": 1e3 * median(upd_s),
            "update_us_per_touched_item": 1e6 * sum(upd_s) / touched,
            "resort_ms_per_update": 1e3 * median(resort_s),
            "touched_items_per_batch": touched / len(upd_s)}


# --------------------------------------------------------------------------- crossover
def crossover(model: PaddedLightFM, rows: np.ndarray, seen_full: list[np.ndarray],
              args: argparse.Namespace) -> list[dict]:
    """Exact vs the index on the first N item rows of the trained model."""
    i_bias, i_emb = model.item_representations()
    out = []
    for n in args.crossover:
        if n > len(i_emb):
            continue
        seen = [s[s < n] for s in seen_full]
        ix = IVFIndex(n_lists=args.lists, seed=args.seed).build(i_emb, i_bias, n)
        c = default_candidates(n)

        def ex(r, s, n=n):   # the exact scan of an n-item catalogue
            _, u_emb = model.user_representations(r)
            return top_n(u_emb @ i_emb[:n].T + i_bias[:n], N_TOP, n, s)

        def an(r, s, n=n, ix=ix, c=c):
            _, u_emb = model.user_representations(r)
            return ix.search(u_emb, i_emb, i_bias, N_TOP, n, s, c)
        rec = recall(in_batches(an, rows, seen, 256), in_batches(ex, rows, seen, 256))
        p = {"items": n, "n_candidates": c, "recall_at_20": rec}
        for b in (256, 16):
            k = 1024 if b == 256 else 256
            p[f"exact_ms_{b}"] = ms_per_list(ex, rows, seen, b, k)
            p[f"ann_ms_{b}"] = ms_per_list(an, rows, seen, b, k)
        out.append(p)
    return out


# --------------------------------------------------------------------------- main
def report(results: list[dict]) -> None:
    print("\nrecall@20 and CPU ms per list: IVF index vs exact scan (trained PaddedLightFM, "
          "seen items excluded)")
    rows = []
    for r in results:
        for p in r["sweep"]:
            rows.append([f"{r['items']:,}", f"{r['taste']:g}",
                         f"{p['n_candidates']:,} ({100 * p['share']:.1f} %)"
                         + (" *" if p["default"] else ""),
                         f"{p['recall_at_20']:.3f} / {p['recall_p5']:.2f}",
                         f"{p['ms_per_list_256']:.3f} / {r['exact_ms_per_list_256']:.3f}",
                         f"{p['speedup_256']:.1f}x",
                         f"{p['ms_per_list_16']:.3f} / {r['exact_ms_per_list_16']:.3f}",
                         f"{p['speedup_16']:.1f}x"])
    print_table(["items", "taste", "candidates (* default)", "recall@20 mean / p5",
                 "256 users: ann / exact ms", "speedup", "16 users: ann / exact ms", "speedup"],
                rows)
    print("\nbuild and update (CPU time)")
    print_table(["items", "taste", "lists (max size)", "build s", "rebuild s after drift",
                 "update us per touched item", "re-sort ms per update",
                 "exact lists: distinct items / overlap with top-20"],
                [[f"{r['items']:,}", f"{r['taste']:g}",
                  f"{r['lists']:,} ({r['list_size_max']:,})",
                  f"{r['build_s']:.2f}", f"{r['drift']['rebuild_s']:.2f}",
                  f"{r['drift']['update_us_per_touched_item']:.1f}",
                  f"{r['drift']['resort_ms_per_update']:.2f}",
                  f"{100 * r['diversity']['distinct_share']:.1f} % / "
                  f"{100 * r['diversity']['overlap_with_most_listed_20']:.0f} %"]
                 for r in results])
    print(f"\ndrift: micro-batches of {BATCH_EVENTS:,} events x {BATCH_EPOCHS} epochs after the "
          "build; recall@20 at the default candidates and at a quarter of them")
    rows = []
    for r in results:
        d = r["drift"]
        for p in d["points"]:
            rows.append([f"{r['items']:,}", f"{r['taste']:g}",
                         f"{p['micro_batches']} ({p['events_since_build']:,})",
                         f"{100 * p['stale_fraction']:.1f} %",
                         f"{100 * p['misassigned_updated']:.1f} / "
                         f"{100 * p['misassigned_not_updated']:.1f} %",
                         f"{p['recall_updated']:.3f} / {p['recall_not_updated']:.3f}",
                         f"{p['recall_updated_quarter']:.3f} / "
                         f"{p['recall_not_updated_quarter']:.3f}"])
        rows.append([f"{r['items']:,}", f"{r['taste']:g}", "rebuilt", "0 %", "0 %",
                     f"{d['recall_after_rebuild']:.3f}",
                     f"{d['recall_after_rebuild_quarter']:.3f}"])
    print_table(["items", "taste", "batches (events)", "rows updated",
                 "misassigned: updated / not", "recall: updated / not",
                 "recall, 1/4 candidates: updated / not"], rows)
    for r in results:
        if "crossover" in r:
            print(f"\ncrossover: first N item rows of the {r['items']:,}-item model (taste "
                  f"{r['taste']:g}), default candidates, CPU ms per list")
            print_table(["items", "candidates", "recall@20", "256 users: ann / exact ms",
                         "16 users: ann / exact ms"],
                        [[f"{p['items']:,}", f"{p['n_candidates']:,}",
                          f"{p['recall_at_20']:.3f}",
                          f"{p['ann_ms_256']:.3f} / {p['exact_ms_256']:.3f}",
                          f"{p['ann_ms_16']:.3f} / {p['exact_ms_16']:.3f}"]
                         for p in r["crossover"]])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--events", type=int, default=None,
                    help="training events (default 1 M at 10 k items, 2 M at 100 k, 3 M at 1 M)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--taste", type=float, nargs="+", default=[0.0, 0.95],
                    help="share of events from the user's taste groups (0: bench/scale.py's "
                    "generator as is); one run per value")
    ap.add_argument("--groups", type=int, default=256, help="taste groups")
    ap.add_argument("--lists", type=int, default=None, help="IVF lists (default 4 sqrt(N))")
    ap.add_argument("--candidates", type=int, nargs="+",
                    default=[500, 1000, 2000, 5000, 10_000, 20_000, 50_000])
    ap.add_argument("--eval-users", type=int, default=2048)
    ap.add_argument("--timed-lists", type=int, default=2048,
                    help="lists timed per repeat in batches of 256 up to 100 k items (fewer "
                    "beyond, at least 256; batches of 16 time 256 lists)")
    ap.add_argument("--drift-checkpoints", type=int, nargs="+", default=[5, 20, 60])
    ap.add_argument("--crossover", type=int, nargs="*",
                    default=[1000, 2000, 5000, 10_000, 20_000, 50_000])
    ap.add_argument("--quick", action="store_true", help="small everything (a smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.users, args.eval_users, args.epochs = 20_000, 512, 2
        args.events = args.events or 200_000
        args.drift_checkpoints = [2, 5]
        args.timed_lists = 512
    results = [measure(n, t, args) for n in args.items for t in args.taste]
    report(results)
    name = "ann_quick" if args.quick else "ann-" + "-".join(f"{n // 1000}k" for n in args.items)
    print(f"wrote {write_results(name, {'args': vars(args), 'sizes': results})}")


if __name__ == "__main__":
    main()
