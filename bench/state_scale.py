"""Per-user state and co-occurrence counts at scale, in-process (no Kafka, ~1-2 min).

    python bench/state_scale.py                          # the defaults below
    python bench/state_scale.py --baseline 534ea1a       # also time the code at a revision
    python bench/state_scale.py --positives 500000 --users 50000      # a quick one

Three parts, printed as tables and written to ``bench/results/state_scale.json``:

1. **add per positive**: ``CooccurrenceIndex.add`` on a power-law stream of ``--small-users``
   x ``--small-items`` in batches of ``--batch`` (dense counts, and forced sparse), and the
   seen store (``UserItems.add``) against the dict-of-sets loop it replaced.
2. **scores per user**: ``CooccurrenceIndex.scores`` in calls of ``--score-users`` users, at
   the small catalogue (dense) and at ``--items`` (sparse, after part 3's stream).
3. **memory**: ``--positives`` positives over ``--users`` x ``--items`` (items and user activity
   power-law distributed, as ``bench/scale.py`` generates them) through the sparse index and
   a seen store; bytes per structure, RSS growth, merges and pruned entries; extrapolated to
   ``--target-events`` / ``--target-users`` (the counts are bounded by items x
   ``cooc_max_neighbours``, the user stores grow with users and distinct positives).

``--baseline REV`` loads ``stream_app/cooccurrence.py`` of that git revision and times its
``add`` and ``scores`` on the same streams (sparse: on the first 10 % of part 3's stream, as
the old sparse rows take ~30 us per positive); the old per-user Python state (seen sets,
histories, liked sets) is measured with tracemalloc on a sample and extrapolated.

Times are CPU time of this process (``time.process_time``), so a busy shared box inflates
them less than wall time. BLAS runs single-threaded here (``OPENBLAS_NUM_THREADS=1`` unless
set): the code timed is single-threaded numpy/scipy, and idle BLAS threads spinning after a
call would otherwise count as this process's CPU time.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")   # before numpy loads BLAS (see the docstring)

import argparse  # noqa: E402
import ctypes  # noqa: E402
import importlib.util  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import psutil  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import median, print_table, write_results  # noqa: E402
from bench.harness import MB  # noqa: E402
from bench.scale import PowerLaw  # noqa: E402
from stream_app.cooccurrence import CooccurrenceIndex  # noqa: E402
from stream_app.useritems import UserItems  # noqa: E402
from streamrec.settings import Settings  # noqa: E402


def stream(users: int, items: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pick_u, pick_i = PowerLaw(users, 0.5, rng), PowerLaw(items, 1.0, rng)
    return pick_u.draw(n), pick_i.draw(n)


def load_baseline(rev: str) -> Any:
    """``stream_app/cooccurrence.py`` at git revision ``rev``, as a module."""
    src = subprocess.run(["git", "show", f"{rev}:stream_app/cooccurrence.py"], cwd=ROOT,
                         capture_output=True, text=True)
    if src.returncode:
        sys.exit(f"git show {rev}:stream_app/cooccurrence.py failed: {src.stderr.strip()}; "
                 "pass a revision of this repository (e.g. a commit hash)")
    path = Path(tempfile.mkdtemp(prefix="streamrec-baseline-")) / "cooccurrence_baseline.py"
    path.write_text(src.stdout)
    spec = importlib.util.spec_from_file_location("cooccurrence_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def feed(index: Any, u: np.ndarray, i: np.ndarray, batch: int) -> float:
    """Seconds to add the stream batch by batch."""
    t0 = time.process_time()
    for k in range(0, len(u), batch):
        index.add(u[k:k + batch], i[k:k + batch])
    return time.process_time() - t0


def seen_dict_add(seen: dict[int, set[int]], u: np.ndarray, i: np.ndarray) -> None:
    """The engine's per-event seen-set update before ``UserItems`` (for the comparison)."""
    for ur, ir in zip(u.tolist(), i.tolist()):
        s = seen.get(ur)
        if s is None:
            seen[ur] = {ir}
        else:
            s.add(ir)


def score_cost(index: Any, users: np.ndarray, n_items: int, per_call: int,
               repeats: int = 5) -> float:
    """Median us per user of ``scores`` over calls of ``per_call`` users."""
    times = []
    for r in range(repeats):
        chunk = users[(r * per_call) % max(1, len(users) - per_call):][:per_call]
        t0 = time.process_time()
        index.scores(chunk.tolist() if not isinstance(index, CooccurrenceIndex) else chunk,
                     n_items)
        times.append((time.process_time() - t0) / len(chunk))
    return 1e6 * median(times)


def part_add(args: argparse.Namespace, s: Settings, base: Any) -> tuple[list, dict]:
    u, i = stream(args.small_users, args.small_items, args.small_positives, args.seed)
    kw = {"alpha": s.cooc_alpha, "recent": s.cooc_recent, "pair_window": s.cooc_pair_window,
          "capacity": args.small_items}
    rows, out = [], {}
    variants = [("dense", {}), ("sparse", {"dense_max": 0})]
    for mode, extra in variants:
        new = CooccurrenceIndex(**kw, **extra, max_neighbours=s.cooc_max_neighbours)
        t_new = feed(new, u, i, args.batch)
        t_old = feed(base.CooccurrenceIndex(**kw, **extra), u, i, args.batch) \
            if base is not None else None
        out[mode] = {"new_us": 1e6 * t_new / len(u),
                     "old_us": None if t_old is None else 1e6 * t_old / len(u)}
        rows.append([f"cooc add, {mode}", out[mode]["old_us"], out[mode]["new_us"]])
        if mode == "dense":
            out["dense_index"] = new
    store, t0 = UserItems(), time.process_time()
    for k in range(0, len(u), args.batch):
        store.add(u[k:k + args.batch], i[k:k + args.batch])
    t_store = time.process_time() - t0
    seen: dict[int, set[int]] = {}
    t0 = time.process_time()
    for k in range(0, len(u), args.batch):
        seen_dict_add(seen, u[k:k + args.batch], i[k:k + args.batch])
    t_dict = time.process_time() - t0
    out["seen"] = {"new_us": 1e6 * t_store / len(u), "old_us": 1e6 * t_dict / len(u)}
    rows.append(["seen store add (dict of sets before)", out["seen"]["old_us"],
                 out["seen"]["new_us"]])
    out["users"] = np.unique(u)
    return rows, out


def part_memory(args: argparse.Namespace, s: Settings
                ) -> tuple[dict, CooccurrenceIndex, np.ndarray]:
    u, i = stream(args.users, args.items, args.positives, args.seed + 1)
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    index = CooccurrenceIndex(alpha=s.cooc_alpha, recent=s.cooc_recent,
                              pair_window=s.cooc_pair_window, capacity=args.items,
                              growth=s.growth_factor, dense_max=s.cooc_dense_items,
                              max_neighbours=s.cooc_max_neighbours)
    seen = UserItems()
    t_cooc = t_seen = 0.0
    for k in range(0, len(u), args.batch):
        bu, bi = u[k:k + args.batch], i[k:k + args.batch]
        t0 = time.process_time()
        seen.add(bu, bi)
        t1 = time.process_time()
        index.add(bu, bi)
        t_seen += t1 - t0
        t_cooc += time.process_time() - t1
    rss1 = proc.memory_info().rss
    trimmed = _malloc_trim()
    rss2 = proc.memory_info().rss if trimmed else None
    sc = index.sparse_counts
    n_users = int(seen.nonempty_rows().size)
    res = {"positives": len(u), "users_with_positives": n_users, "items": args.items,
           "distinct_positives": index.history.n_items,
           "add_us_per_positive": 1e6 * t_cooc / len(u),
           "seen_add_us_per_positive": 1e6 * t_seen / len(u),
           "merges": sc.merges, "merge_s": sc.merge_seconds, "pruned_entries": sc.pruned,
           "base_nnz": sc.base.nnz, "pending_nnz": sc.pending_nnz,
           "rows_full": int((np.diff(sc.base.indptr) >= s.cooc_max_neighbours).sum()),
           "counts_mb": (sc.nbytes + index.counts.nbytes) / MB,
           "history_mb": index.history.nbytes / MB, "seen_mb": seen.nbytes / MB,
           "early_merges": sc.early_merges, "rss_growth_mb": (rss1 - rss0) / MB,
           "rss_growth_after_trim_mb": None if rss2 is None else (rss2 - rss0) / MB}
    res["total_mb"] = res["counts_mb"] + res["history_mb"] + res["seen_mb"]
    return res, index, u


def extrapolate(m: dict, args: argparse.Namespace, s: Settings) -> dict:
    """Memory at ``--target-events`` / ``--target-users``: counts at their bound, user stores
    scaled by rows (16 B each) and stored items (arena bytes per item as measured)."""
    f_ev, f_users = args.target_events / m["positives"], args.target_users / args.users
    cap_items = args.target_items * s.growth_factor
    bound = cap_items * s.cooc_max_neighbours
    counts = (bound * 8 + 0.5 * bound * 8 + cap_items * 4 * 3) / MB   # base + pending + indptrs
    per_row = 16 / MB

    def store(mb: float, rows: int) -> float:
        arena = mb - rows * per_row
        return arena * f_ev + args.target_users * per_row

    hist = store(m["history_mb"], args.users)
    seen = store(m["seen_mb"], args.users)
    return {"events": args.target_events, "users": args.target_users, "items": args.target_items,
            "counts_bound_mb": counts, "history_mb": hist, "seen_mb": seen,
            "total_mb": counts + hist + seen, "merge_transient_mb": 2 * bound * 8 / MB,
            "scale_events": f_ev, "scale_users": f_users}


def _malloc_trim() -> bool:
    """Hand glibc's free lists back to the OS, so RSS shows what is live (Linux only)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def old_python_state(u: np.ndarray, i: np.ndarray, n: int) -> tuple[int, int, float]:
    """(users, positives, tracemalloc bytes) of the old per-user state (seen sets, trained
    set, histories, liked sets) for the first ``n`` positives."""
    tracemalloc.start()
    seen: dict[int, set[int]] = {}
    trained: set[int] = set()
    hist: dict[int, list[int]] = {}
    liked: dict[int, set[int]] = {}
    for ur, ir in zip(u[:n].tolist(), i[:n].tolist()):
        seen.setdefault(ur, set()).add(ir)
        trained.add(ur)
        lk = liked.setdefault(ur, set())
        if ir not in lk:
            lk.add(ir)
            hist.setdefault(ur, []).append(ir)
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return len(seen), n, float(size)


def old_state_extrapolated_mb(u: np.ndarray, i: np.ndarray, sample: int, users: int,
                              events: int) -> dict:
    """The old state's bytes per user and per positive, fitted on two samples, at scale."""
    (u1, n1, b1), (u2, n2, b2) = old_python_state(u, i, sample // 2), \
        old_python_state(u, i, sample)
    per_user, per_pos = np.linalg.solve(np.array([[u1, n1], [u2, n2]], float),
                                        np.array([b1, b2]))
    return {"sample_positives": n2, "sample_mb": b2 / MB, "bytes_per_user": per_user,
            "bytes_per_positive": per_pos,
            "at_target_mb": (per_user * users + per_pos * events) / MB}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--positives", type=int, default=2_000_000)
    ap.add_argument("--small-users", type=int, default=5_000)
    ap.add_argument("--small-items", type=int, default=2_000)
    ap.add_argument("--small-positives", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=2_000)
    ap.add_argument("--score-users", type=int, default=256, help="users per scores() call")
    ap.add_argument("--target-events", type=int, default=10_000_000)
    ap.add_argument("--target-users", type=int, default=1_000_000)
    ap.add_argument("--target-items", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline", default=None, help="git revision to compare with")
    args = ap.parse_args()
    s = Settings()
    base = load_baseline(args.baseline) if args.baseline else None

    mem, big, big_u = part_memory(args, s)          # first: RSS growth is cleanest here
    add_rows, small = part_add(args, s, base)
    print(f"\nadd, us per positive ({args.small_users:,} users x {args.small_items:,} items, "
          f"{args.small_positives:,} positives, batches of {args.batch:,}; pair window "
          f"{s.cooc_pair_window})")
    print_table(["operation", f"before ({args.baseline})" if base else "before", "now"],
                [[r[0], "-" if r[1] is None else f"{r[1]:.2f}", f"{r[2]:.2f}"]
                 for r in add_rows])

    users_small = small["users"]
    users_big = np.unique(big_u)
    rng = np.random.default_rng(args.seed)
    rng.shuffle(users_big)
    score = {"dense": {"new_us": score_cost(small["dense_index"], users_small,
                                            args.small_items, args.score_users)},
             "sparse": {"new_us": score_cost(big, users_big, args.items, args.score_users)}}
    if base is not None:
        kw = {"alpha": s.cooc_alpha, "recent": s.cooc_recent, "pair_window": s.cooc_pair_window}
        u, i = stream(args.small_users, args.small_items, args.small_positives, args.seed)
        old = base.CooccurrenceIndex(**kw, capacity=args.small_items)
        feed(old, u, i, args.batch)
        score["dense"]["old_us"] = score_cost(old, users_small, args.small_items,
                                              args.score_users)
        u, i = stream(args.users, args.items, args.positives, args.seed + 1)
        sample = len(u) // 10
        old = base.CooccurrenceIndex(**kw, capacity=args.items)
        new = CooccurrenceIndex(**kw, capacity=args.items, max_neighbours=s.cooc_max_neighbours)
        feed(old, u[:sample], i[:sample], args.batch)
        feed(new, u[:sample], i[:sample], args.batch)
        sample_users = np.unique(u[:sample])
        score["sparse_sample"] = {"positives": sample,
                                  "old_us": score_cost(old, sample_users, args.items,
                                                       args.score_users),
                                  "new_us": score_cost(new, sample_users, args.items,
                                                       args.score_users)}
        mem["old_python_state"] = old_state_extrapolated_mb(u, i, sample, args.target_users,
                                                            args.target_events)
    rows = [[f"{args.small_items:,} items (dense)", score["dense"].get("old_us"),
             score["dense"]["new_us"]],
            [f"{args.items:,} items (sparse, {args.positives:,} positives)", None,
             score["sparse"]["new_us"]]]
    if "sparse_sample" in score:
        ss = score["sparse_sample"]
        rows.append([f"{args.items:,} items (sparse, {ss['positives']:,} positives)",
                     ss["old_us"], ss["new_us"]])
    print(f"\nscores, us per user ({args.score_users} users per call, median of 5 calls)")
    print_table(["catalogue", "before", "now"],
                [[r[0], "-" if r[1] is None else f"{r[1]:.1f}", f"{r[2]:.1f}"] for r in rows])

    ext = extrapolate(mem, args, s)
    print(f"\nmemory: {args.positives:,} positives over {args.users:,} users x {args.items:,} "
          f"items (max_neighbours {s.cooc_max_neighbours}), and extrapolated")
    print_table(["structure (MiB)", "measured", f"{ext['events']:,} ev / {ext['users']:,} u"],
                [["co-occurrence counts (base + pending + per-item)", f"{mem['counts_mb']:.0f}",
                  f"<= {ext['counts_bound_mb']:.0f} (bound)"],
                 ["positives per user (cooc history)", f"{mem['history_mb']:.0f}",
                  f"{ext['history_mb']:.0f}"],
                 ["seen items per user", f"{mem['seen_mb']:.0f}", f"{ext['seen_mb']:.0f}"],
                 ["total", f"{mem['total_mb']:.0f}", f"{ext['total_mb']:.0f}"],
                 ["RSS growth while feeding", f"{mem['rss_growth_mb']:.0f}", "-"],
                 ["RSS growth after malloc_trim", "-" if mem["rss_growth_after_trim_mb"] is None
                  else f"{mem['rss_growth_after_trim_mb']:.0f}", "-"],
                 ["merge transient (base + sum)", "-", f"~{ext['merge_transient_mb']:.0f}"]])
    if "old_python_state" in mem:
        o = mem["old_python_state"]
        print(f"before: seen sets, trained set, histories and liked sets as Python objects: "
              f"{o['sample_mb']:.0f} MiB for {o['sample_positives']:,} positives "
              f"({o['bytes_per_user']:.0f} B per user + {o['bytes_per_positive']:.0f} B per "
              f"positive) -> ~{o['at_target_mb']:,.0f} MiB at {args.target_events:,} events / "
              f"{args.target_users:,} users")
    print(f"add at scale: {mem['add_us_per_positive']:.2f} us per positive (seen store "
          f"{mem['seen_add_us_per_positive']:.2f}); {mem['merges']} merges in "
          f"{mem['merge_s']:.1f} s wall ({mem['early_merges']} early merges of hot rows "
          f"included); base nnz {mem['base_nnz']:,} ({mem['rows_full']:,} rows "
          f"full), pending {mem['pending_nnz']:,}, {mem['pruned_entries']:,} entries pruned")
    small.pop("dense_index")
    small.pop("users")
    path = write_results("state_scale", {"args": vars(args), "add": small, "scores": score,
                                         "memory": mem, "extrapolated": ext})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
