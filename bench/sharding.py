"""What sharding the worker by user costs, simulated in-process before building it (issue #21).

    python bench/sharding.py [--data PATH] [--shards 1 2 4 8] [--sync 0.1 1 10 inf]
                             [--rate 1000] [--seeds 0 1 2] [--out bench/results]
                             [--synthetic SEED]   # the power-user stream instead of ML-100K

The model of a user-sharded write side: N engines (``stream_app.engine.Engine``, the
worker's whole state), user ``u`` owned by shard ``murmur2(u) % N`` (the partition of its
events when ``interactions`` has N partitions, or a multiple of N spread evenly). A shard
applies and trains only its users' events and serves only their lists, so user-side state
(user embeddings and biases, seen items, positives history) is exact. Item-side state is
trained locally by every shard and merged every ``sync`` seconds of simulated time:

- merged state: LightFM's six item arrays (embeddings, biases and their adagrad
  accumulators, for every item feature: identity and hashed metadata columns), the
  co-occurrence counts (per-item positives and pair counts) and the transition counts;
- merge rule ``sum`` (default): ``global = base + sum over shards (shard - base)``, where
  ``base`` is the merged state of the previous sync, then every shard takes ``global``.
  For counts and adagrad's sums of squared gradients this is exact; for embeddings it is
  the sum of every shard's SGD steps since the last sync, as if applied one after the other
  to the same start (a single engine's order, minus the interleaving). Syncing after every
  event makes N shards the single engine. ``mean`` averages the shards' parameters instead
  (federated averaging), measured for comparison;
- the fallback (recent popular items) is the last ``popular_window`` positives of all
  shards, in event order, at each sync; between syncs a shard adds its own positives.

Every shard starts from the same bootstrapped engine (the first 90 % of ML-100K in time
order, trained once, as ``streamrec retrain`` or a single worker would hand over), item ids
are registered in the same order in every shard (what a global item registry, e.g. the
compacted ``items`` topic read by every shard, would give), and each shard has its own
random stream. Each seed (``--seeds``) bootstraps anew (the 2-thread full fit is not
deterministic) and seeds the shards' streams; N = 1 and N > 1 of a seed share the bootstrap,
so their difference is the sharding's. Then the prequential protocol of
``streamrec_eval/prequential.py`` over the last 10 %: every positive is checked against its
user's top 10 from the owning shard, then the event goes to that shard (one event per
micro-batch, as ``peers.py``'s ``streamrec B=1``).

Simulated time: event ``k`` of the test window arrives at ``k / rate`` seconds (``--rate``,
default 1,000 ev/s in all: the same events per item per second as a 100 M-user service with
100 k items at ~60 k ev/s, docs/scaling.md), so a sync period ``T`` means ``rate x T``
events between syncs (``inf``: never within the test window). ``--clock event`` uses the
dataset's own timestamps instead (ML-100K: 0.005 events/s, half of the gaps 0 s: users
rate in bursts). Loss = hit@10 of one engine minus hit@10 of N shards, same seed; its 95 %
interval from a paired bootstrap over the 5,629 positives. Events/s per shard: events a
shard applied (apply + fit_partial, B=1) per second of its own CPU, and with the lists it
served; merge time per sync.

Writes ``sharding.json`` and ``sharding.png`` to ``--out``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import copy
import json
import logging
import math
import sys
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from consumers.partitioner import user_partition  # noqa: E402
from stream_app.engine import Engine  # noqa: E402
from stream_app.model import ARRAYS  # noqa: E402
from streamrec_eval.adapters import (BootstrapCache, EngineModel,  # noqa: E402
                                     bootstrap_engine, engine_settings)
from streamrec_eval.prequential import run_prequential  # noqa: E402
from streamrec_eval.stream import Events, Stream  # noqa: E402
from streamrec.settings import Settings  # noqa: E402

log = logging.getLogger("bench.sharding")

# ``--boot F``: the bootstrap covers only the first F of the events and the rest up to the
# split streams through the shards first (synced, not evaluated): a long sharded run, where
# the item side the test window starts from was itself trained in shards.

DECISION = {"shards": 4, "sync_s": 1.0, "max_loss": 0.01}
"""The issue's rule: build sharded workers only if the loss at N = 4, 1 s is under 0.01."""


# --------------------------------------------------------------------------- item state
def item_state(engine: Engine) -> dict[str, np.ndarray]:
    """The item-side arrays of an engine that shards share (views, written in place)."""
    m = engine.model.lightfm
    state = {f"item_{a}": getattr(m, f"item_{a}") for a in ARRAYS}
    cooc = engine.cooc
    if cooc.pairs is None:
        raise SystemExit("the simulation merges dense co-occurrence counts only (ML-100K "
                         "scale); sparse bounded counts would need a merge of pruned rows")
    state["cooc_counts"] = cooc.counts
    state["cooc_pairs"] = cooc.pairs
    if cooc.transitions is not None:
        state["trans"] = cooc.transitions.dense
    return state


def merge_item_state(shards: list[Engine], base: dict[str, np.ndarray], rule: str = "sum",
                     keys: set[str] | None = None
                     ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Merge the shards' item sides into every shard; returns the new base and, per array,
    how many entries the shards changed since ``base`` (summed over shards: what they would
    send, as (index, value) pairs, if deltas went through a topic).

    ``sum``: base + the sum of every shard's change since ``base``; ``mean``: the mean of
    the shards' arrays. ``keys``: only these arrays (the others keep their base). Every
    shard's item representations are recomputed afterwards."""
    states = [item_state(e) for e in shards]
    merged: dict[str, np.ndarray] = dict(base)
    changed: dict[str, int] = {}
    for key, old in base.items():
        if keys is not None and key not in keys:
            continue
        arrays = [s[key] for s in states]
        if any(a.shape != old.shape for a in arrays):
            raise SystemExit(f"{key}: a shard grew its item capacity; the simulation "
                             "registers every item up front so that shapes stay equal")
        delta = np.empty_like(old)
        total = old.copy()
        for a in arrays:
            np.subtract(a, old, out=delta)
            changed[key] = changed.get(key, 0) + int(np.count_nonzero(delta))
            if rule == "sum":
                total += delta
        if rule == "mean":
            total = np.mean(np.stack(arrays), axis=0, dtype=np.float64).astype(old.dtype)
        merged[key] = total
        for a in arrays:
            np.copyto(a, total)
    for e in shards:
        e.model._item_reps = None          # recomputed from the merged arrays on next use
    return merged, changed


# --------------------------------------------------------------------------- the model
class ShardedEngines:
    """N engines over user shards in the prequential protocol (see the module docstring)."""

    def __init__(self, shards: int, sync_s: float, rate: float = 1000.0, rule: str = "sum",
                 clock: str = "rate", seed: int = 0, stream_seed: int | None = None,
                 boot: float | None = None, model_sync_s: float | None = None,
                 settings: Settings | None = None,
                 cache: BootstrapCache | None = None, name: str | None = None,
                 own_boot: bool = False) -> None:
        self.n = shards
        self.own_boot = own_boot
        self.sync_s = sync_s
        self.model_sync_s = sync_s if model_sync_s is None else model_sync_s
        self.rate = rate
        self.rule = rule
        self.clock = clock
        self.seed = seed
        self.stream_seed = seed if stream_seed is None else stream_seed
        self.boot = boot
        self.settings = settings or engine_settings()
        self.cache = cache or BootstrapCache()
        self.name = name or f"N={shards} sync {sync_s:g} s"
        self.models: list[EngineModel] = []
        self.owner = np.zeros(0, np.int64)
        self.base: dict[str, np.ndarray] = {}
        self.stream: Stream | None = None
        self.start = 0
        self.next_sync = self.next_model_sync = math.inf
        self.recent: deque[int] = deque()
        self.pending: list[int] = []
        self.syncs = 0
        self.merge_s = 0.0
        self.changed: dict[str, int] = {}
        self.apply_s = np.zeros(0)
        self.list_s = np.zeros(0)
        self.events = np.zeros(0, np.int64)

    def fit_initial(self, events: Events) -> None:
        """Shards from one bootstrapped engine (or, with ``own_boot``, each from its own
        users' share); with ``boot`` the bootstrap covers only that fraction of the stream,
        and the events from there to the split are streamed through the shards (synced, not
        evaluated) before the test window."""
        stream = self.stream = events.stream
        warm_from = events.stop if self.boot is None else stream.split_index(self.boot)
        self.owner = np.array([user_partition(u, self.n) for u in stream.user_ids], np.int64)
        own = self.own_boot and self.n > 1
        engines = (self._own_boot_engines if own else self._shared_boot_engines)(
            stream, warm_from)
        self.models = []
        for s, engine in enumerate(engines):
            m = EngineModel(self.settings, 1, name=f"shard {s}")
            m.stream, m.engine = stream, engine
            m.engine.model.lightfm.random_state = np.random.RandomState(
                1_000 * self.stream_seed + s)
            self.models.append(m)
        self.start = warm_from
        self.apply_s, self.list_s = np.zeros(self.n), np.zeros(self.n)
        self.events = np.zeros(self.n, np.int64)
        if own:
            self.sync(counts=True, model=False)   # every shard's bootstrap counts, shared
            self.syncs = 0
        self.next_sync = self._time(warm_from) + self.sync_s
        self.next_model_sync = self._time(warm_from) + self.model_sync_s
        for k in range(warm_from, events.stop):
            self.update(stream.events(k, k + 1))

    def _shared_boot_engines(self, stream: Stream, warm_from: int) -> list[Engine]:
        """Copies of one engine bootstrapped on every user (``shard_bootstrap="all"``)."""
        boot = self.cache.get(self.settings, stream.events(0, warm_from))
        # counts sized for every registered item up front (they grow lazily with the items
        # positives reach, differently per shard): equal shapes to merge, same scores
        boot.cooc._ensure(boot.model.item_capacity)
        if self.n > 1:
            self.base = {k: v.copy() for k, v in item_state(boot).items()}
        self.recent = deque(boot.recent_positives, maxlen=boot.recent_positives.maxlen)
        return [boot] + [copy.deepcopy(boot) for _ in range(1, self.n)]

    def _own_boot_engines(self, stream: Stream, warm_from: int) -> list[Engine]:
        """Sharded workers with ``shard_bootstrap="own"`` (``stream_app/shards.py``): each
        shard bootstraps on its own users' share of the history (its own LightFM model, so
        the shards' latent spaces differ and LightFM's item arrays are never merged), and only
        the counts and the fallback are merged: the bootstraps' counts at once, then every
        sync."""
        boot_owner = self.owner[stream.users[:warm_from]]
        engines = [bootstrap_engine(self.settings, stream.events(0, warm_from),
                                    keep=boot_owner == s) for s in range(self.n)]
        caps = {e.model.item_capacity for e in engines}
        if len(caps) > 1:
            raise SystemExit(f"shards bootstrapped to different item capacities {caps}")
        counts_cap = max(e.cooc.capacity for e in engines)
        for e in engines:   # the counts grow by their own steps: equal shapes to merge
            e.cooc._ensure(max(counts_cap, e.model.item_capacity))   # noqa: SLF001
        self.base = {k: np.zeros_like(v) for k, v in item_state(engines[0]).items()
                     if not k.startswith("item_")}
        self.model_sync_s = math.inf
        recent = [r for e in engines for r in e.recent_positives]
        maxlen = engines[0].recent_positives.maxlen
        self.recent = deque(recent[-maxlen:], maxlen=maxlen)
        return engines

    def _time(self, k: int) -> float:
        if self.clock == "event":
            return float(self.stream.timestamps[k])
        return (k - self.start) / self.rate

    def recommend(self, user: int, n: int, exclude: set[int]) -> np.ndarray:
        s = self.owner[user]
        t0 = time.process_time()
        out = self.models[s].recommend(user, n, exclude)
        self.list_s[s] += time.process_time() - t0
        return out

    def update(self, events: Events) -> None:
        k = events.start
        t = self._time(k)
        if self.n > 1 and (t >= self.next_sync or t >= self.next_model_sync):
            counts, model = t >= self.next_sync, t >= self.next_model_sync
            self.sync(counts, model)
            if counts:
                self.next_sync = _next(self.next_sync, self.sync_s, t)
            if model:
                self.next_model_sync = _next(self.next_model_sync, self.model_sync_s, t)
        s = int(self.owner[self.stream.users[k]])
        m = self.models[s]
        t0 = time.process_time()
        m.update(events)
        self.apply_s[s] += time.process_time() - t0
        self.events[s] += len(events)
        _, items, values = m.engine.last_batch_arrays
        if m.engine.batch_seq and len(values) and values[-1] > 0:
            self.pending.append(int(items[-1]))

    def sync(self, counts: bool = True, model: bool = True) -> None:
        """Merge the item sides (counts, LightFM's item arrays or both), and with the
        counts make the fallback every shard's recent positives."""
        t0 = time.process_time()
        engines = [m.engine for m in self.models]
        keys = {k for k in self.base if (k.startswith("item_") and model)
                or (not k.startswith("item_") and counts)}
        self.base, changed = merge_item_state(engines, self.base, self.rule, keys)
        for key, count in changed.items():
            self.changed[key] = self.changed.get(key, 0) + count
        if not counts:
            self.syncs += 1
            self.merge_s += time.process_time() - t0
            return
        self.recent.extend(self.pending)
        self.pending = []
        for e in engines:
            e.recent_positives = deque(self.recent, maxlen=self.recent.maxlen)
            e.popularity = Counter(self.recent)
        self.syncs += 1
        self.merge_s += time.process_time() - t0

    def finish(self) -> None:
        for m in self.models:
            m.finish()

    def costs(self) -> dict[str, Any]:
        ev = np.maximum(self.events, 1)
        return {"events_per_shard": self.events.tolist(),
                "apply_ev_per_s_per_shard": round(float(np.median(ev / np.maximum(
                    self.apply_s, 1e-9))), 1),
                "ev_per_s_per_shard_with_lists": round(float(np.median(ev / np.maximum(
                    self.apply_s + self.list_s, 1e-9))), 1),
                "syncs": self.syncs,
                "merge_ms_per_sync": round(1e3 * self.merge_s / max(1, self.syncs), 2),
                "changed_entries_per_shard_per_sync": round(
                    sum(self.changed.values()) / max(1, self.syncs * self.n)),
                "changed_per_shard_per_sync_by_array": {
                    k: round(v / max(1, self.syncs * self.n)) for k, v in self.changed.items()},
                "merge_share_of_cpu": round(self.merge_s / max(1e-9, self.merge_s +
                                                                self.apply_s.sum() +
                                                                self.list_s.sum()), 4)}


def _next(due: float, period: float, now: float) -> float:
    """The first multiple of ``period`` after ``due`` that is later than ``now``."""
    return due + period * max(1, math.floor((now - due) / period) + 1)


# --------------------------------------------------------------------------- running
def paired_loss(base: np.ndarray, other: np.ndarray, draws: int = 2000,
                seed: int = 0) -> tuple[float, float, float]:
    """hit(base) - hit(other) and its 95 % paired-bootstrap interval over positives."""
    rng = np.random.default_rng(seed)
    diff = base.astype(np.float64) - other.astype(np.float64)
    idx = rng.integers(0, len(diff), size=(draws, len(diff)))
    means = diff[idx].mean(axis=1)
    return float(diff.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means,
                                                                                     97.5))


def run_grid(stream: Stream, shards: list[int], syncs: list[float], seeds: list[int],
             rate: float, rule: str, clock: str, cache: BootstrapCache,
             progress: bool, noise: bool = True, boot: float | None = None,
             model_sync: float | None = None, own_boot: bool = False
             ) -> list[dict[str, Any]]:
    """One row per (seed, N, sync); N = 1 once per seed (it never syncs), and with
    ``noise`` N = 1 again with other random streams on the same bootstrap: the loss that
    training noise alone shows (row ``shards`` 0)."""
    rows = []
    for seed in seeds:
        cache = cache if len(seeds) == 1 else BootstrapCache()  # bootstrap noise per seed
        base_hits = None
        configs = [(1, math.inf, seed)] + ([(0, math.inf, seed + 100)] if noise else []) + \
            [(n, sync_s, seed) for n in shards if n > 1 for sync_s in syncs]
        for n, sync_s, stream_seed in configs:
            model = ShardedEngines(max(1, n), sync_s, rate, rule, clock, seed, stream_seed,
                                   boot, model_sync, cache=cache, own_boot=own_boot)
            t0 = time.perf_counter()
            res = run_prequential(model, stream, progress=progress)
            label = rule if model_sync is None else f"{rule}, model every {model_sync:g} s"
            if own_boot:
                label = "own bootstraps, counts only"
            row = {"seed": seed, "shards": n, "sync_s": sync_s, "rule": label,
                   "clock": clock if boot is None else f"{clock}, boot {boot:g}",
                   "rate": rate,
                   "events_between_syncs": (rate * sync_s if clock == "rate" else None),
                   "hit@10": round(res.hit_rate(), 4),
                   "hit@10_new": round(res.hit_rate(res.new_user), 4),
                   "hit@10_returning": round(res.hit_rate(~res.new_user), 4),
                   "seconds": round(time.perf_counter() - t0, 1), **model.costs()}
            if n == 1:
                base_hits = res.hits
                row.update(loss=0.0, loss_lo=0.0, loss_hi=0.0)
            else:
                loss, lo, hi = paired_loss(base_hits, res.hits, seed=seed)
                row.update(loss=round(loss, 4), loss_lo=round(lo, 4), loss_hi=round(hi, 4))
            rows.append(row)
            what = "N=1, other random streams" if n == 0 else f"N={n} sync {sync_s:g} s"
            print(f"seed {seed} {what} ({rule}, {clock}): hit@10 {row['hit@10']:.4f} loss "
                  f"{row['loss']:+.4f} [{row['loss_lo']:+.4f}, {row['loss_hi']:+.4f}] "
                  f"{row['apply_ev_per_s_per_shard']:.0f} ev/s/shard, "
                  f"{row['syncs']} syncs x {row['merge_ms_per_sync']} ms "
                  f"({row['seconds']:.0f} s)", file=sys.stderr, flush=True)
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians over seeds per (rule, clock, N, sync)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["rule"], r["clock"], r["shards"], r["sync_s"]), []).append(r)
    out = []
    for (rule, clock, n, sync_s), rs in sorted(groups.items(), key=lambda kv: (
            kv[0][0], kv[0][1], kv[0][2], kv[0][3])):
        med = {k: float(np.median([r[k] for r in rs])) for k in
               ("hit@10", "loss", "loss_lo", "loss_hi", "apply_ev_per_s_per_shard",
                "ev_per_s_per_shard_with_lists", "merge_ms_per_sync", "merge_share_of_cpu",
               "changed_entries_per_shard_per_sync")}
        out.append({"rule": rule, "clock": clock, "shards": n, "sync_s": sync_s,
                    "seeds": len(rs), "losses": [r["loss"] for r in rs],
                    "syncs": rs[0]["syncs"], **med})
    return out


def print_summary(summary: list[dict[str, Any]]) -> None:
    head = ["rule", "clock", "N", "sync s", "syncs", "hit@10", "loss (median)",
            "loss per seed", "95 % CI (median)", "ev/s/shard", "with lists", "merge ms"]
    cells = [head]
    for s in summary:
        n = "1'" if s["shards"] == 0 else str(s["shards"])
        cells.append([s["rule"], s["clock"], n, f"{s['sync_s']:g}",
                      str(s["syncs"]), f"{s['hit@10']:.4f}", f"{s['loss']:+.4f}",
                      " ".join(f"{x:+.4f}" for x in s["losses"]),
                      f"[{s['loss_lo']:+.4f}, {s['loss_hi']:+.4f}]",
                      f"{s['apply_ev_per_s_per_shard']:.0f}",
                      f"{s['ev_per_s_per_shard_with_lists']:.0f}",
                      f"{s['merge_ms_per_sync']:.1f}"])
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    for k, r in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
        if k == 0:
            print("  ".join("-" * w for w in widths))


def decide(summary: list[dict[str, Any]], clock: str = "rate", rule: str = "sum"
           ) -> dict[str, Any]:
    key = [s for s in summary if s["rule"] == rule and s["clock"] == clock
           and s["shards"] == DECISION["shards"] and s["sync_s"] == DECISION["sync_s"]]
    if not key:
        return {"decided": False}
    s = key[0]
    noise = [r for r in summary if r["rule"] == rule and r["clock"] == clock
             and r["shards"] == 0]
    return {"decided": True, **DECISION, "loss": s["loss"], "losses": s["losses"],
            "ci": [s["loss_lo"], s["loss_hi"]], "build": s["loss"] < DECISION["max_loss"],
            "noise_losses": noise[0]["losses"] if noise else None}


def plot(summary: list[dict[str, Any]], path: Path, rate: float, clock: str = "rate",
         rule: str = "sum") -> None:
    from streamrec_eval.plots import new_figure

    fig = new_figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    rate_rows = [s for s in summary if s["clock"] == clock and s["rule"] == rule]
    one = [s for s in rate_rows if s["shards"] == 1]
    finite = sorted({s["sync_s"] for s in rate_rows if math.isfinite(s["sync_s"])})
    never_x = (max(finite) * 10) if finite else 100.0
    for n in sorted({s["shards"] for s in rate_rows if s["shards"] > 1}):
        pts = sorted((s["sync_s"] if math.isfinite(s["sync_s"]) else never_x, s["hit@10"])
                     for s in rate_rows if s["shards"] == n)
        ax.plot([x * rate for x, _ in pts], [h for _, h in pts], marker="o",
                label=f"N = {n}")
    if one:
        ax.axhline(one[0]["hit@10"], color="black", lw=1, ls="--", label="one engine")
        ax.axhspan(one[0]["hit@10"] - DECISION["max_loss"], one[0]["hit@10"], color="grey",
                   alpha=0.15, label="within 0.01 of one engine")
    ax.set_xscale("log")
    ax.set_xlabel(f"events between item syncs (sync period x {rate:g} ev/s; right: never)")
    ax.set_ylabel("prequential hit@10 (ML-100K, last 10 %)")
    ax.set_title("User-sharded engines, item side merged (sum of deltas)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _finite(doc: Any) -> Any:
    """JSON without Infinity: a sync period of inf is written "never"."""
    if isinstance(doc, float) and not math.isfinite(doc):
        return "never"
    if isinstance(doc, dict):
        return {k: _finite(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_finite(v) for v in doc]
    return doc


def main(argv: list[str] | None = None) -> int:
    from streamrec.movielens import find_movielens, load_movielens

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=None, help="ML-100K folder")
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--sync", type=float, nargs="+", default=[0.1, 1.0, 10.0, math.inf],
                   help="item-sync periods, seconds of simulated time (inf: never)")
    p.add_argument("--rate", type=float, default=1000.0, help="simulated events/s in all")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--key-seeds", type=int, nargs="*", default=[3, 4],
                   help="more seeds for the decision's cell only (N = 1 and N = 4, 1 s)")
    p.add_argument("--mean-check", action="store_true",
                   help="also the mean merge rule at N = 4 (seed 0)")
    p.add_argument("--event-clock", action="store_true",
                   help="also N = 4 on the dataset's own timestamps (seed 0)")
    p.add_argument("--boot", type=float, default=None,
                   help="bootstrap on this fraction only and stream the rest up to the "
                        "split through the shards first (a long sharded run)")
    p.add_argument("--model-sync", type=float, default=None,
                   help="LightFM's item arrays merged at this period instead of --sync "
                        "(counts and the fallback keep --sync)")
    p.add_argument("--own-bootstrap", action="store_true",
                   help="sharded workers with shard_bootstrap=own: each shard bootstraps on "
                        "its own users, only counts and the fallback are merged (never "
                        "LightFM). shard_bootstrap=all (the default) is --model-sync inf: "
                        "every shard starts from the full bootstrap, LightFM never merged")
    p.add_argument("--synthetic", type=int, default=None, metavar="SEED",
                   help="the power-user stream of bench/live_prequential.py (MovieLens-like "
                   "users with 2,000-5,000 ratings, 10 k items) instead of ML-100K")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.synthetic is not None:
        from bench.live_prequential import synthetic_movielens
        stream = Stream.from_movielens(synthetic_movielens(args.synthetic))
    else:
        stream = Stream.from_movielens(load_movielens(find_movielens(args.data, download=False)))
    cache = BootstrapCache()
    t0 = time.perf_counter()
    rows = run_grid(stream, args.shards, args.sync, args.seeds, args.rate, "sum", "rate",
                    cache, not args.no_progress, boot=args.boot, model_sync=args.model_sync,
                    own_boot=args.own_bootstrap)
    if args.key_seeds and args.boot is None and args.model_sync is None:
        rows += run_grid(stream, [DECISION["shards"]], [DECISION["sync_s"]], args.key_seeds,
                         args.rate, "sum", "rate", cache, not args.no_progress,
                         own_boot=args.own_bootstrap)
    if args.mean_check:
        rows += run_grid(stream, [4], [s for s in args.sync if s in (0.1, 1.0, 10.0)],
                         [args.seeds[0]], args.rate, "mean", "rate", BootstrapCache(),
                         not args.no_progress, noise=False)
    if args.event_clock:
        rows += run_grid(stream, [4], [s for s in args.sync if s in (0.1, 1.0, 10.0)],
                         [args.seeds[0]], args.rate, "sum", "event", BootstrapCache(),
                         not args.no_progress, noise=False)
    summary = summarise(rows)
    print_summary(summary)
    clock = "rate" if args.boot is None else f"rate, boot {args.boot:g}"
    name = "sharding" if args.boot is None else f"sharding-boot{args.boot:g}"
    if args.model_sync is not None:
        name += f"-model{args.model_sync:g}"
    rule = "sum" if args.model_sync is None else f"sum, model every {args.model_sync:g} s"
    if args.own_bootstrap:
        name += "-ownboot"
        rule = "own bootstraps, counts only"
    if args.synthetic is not None:
        name += f"-synthetic{args.synthetic}"
    decision = decide(summary, clock, rule)
    if decision.get("decided"):
        print(f"\ndecision: loss at N = 4, sync 1 s = {decision['loss']:+.4f} hit@10 "
              f"(seeds {decision['losses']}; 95 % CI {decision['ci']}; one engine with "
              f"other random streams: {decision['noise_losses']}) -> "
              f"{'build sharded workers' if decision['build'] else 'do not build'} "
              f"(rule: under {DECISION['max_loss']})")
    args.out.mkdir(parents=True, exist_ok=True)
    data = "MovieLens 100K" if args.synthetic is None else \
        f"power-user stream (bench/live_prequential.py --synthetic {args.synthetic})"
    doc = {"protocol": {"data": data, "split": 0.9, "n": 10, "positive_rating": 4,
                        "partitioner": "murmur2(user id) % N", "rate": args.rate,
                        "bootstrap_fraction": args.boot or 0.9,
                        "settings": "engine defaults, exploration off, B=1",
                        "seconds": round(time.perf_counter() - t0)},
           "decision": decision, "summary": summary, "runs": rows}
    (args.out / f"{name}.json").write_text(json.dumps(_finite(doc), indent=1, default=str))
    plot(summary, args.out / f"{name}.png", args.rate, clock, rule)
    print(f"wrote {args.out / (name + '.json')} and {args.out / (name + '.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
