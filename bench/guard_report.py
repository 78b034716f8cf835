"""Guard decisions on backfilled real histories, and on bots beside them (issue #18, part 1).

    python bench/guard_report.py [--data PATH] [--out bench/results]

1. False positives: MovieLens 100K (all of it, and the last 10 %) and the synthetic
   power-user history (``streamrec_eval/synthetic.py``) replayed through the guard as a
   backfill: at 2,000 / 20,000 / 1,000,000 events/s a day after the newest event, with
   record timestamps = event time (time order, and user after user as an app's export),
   every user brand-new (the strictest case). The same replays through the guard as it was
   before issue #18 (``history_after_s`` = inf: every event judged on arrival) show what
   was wrong.
2. Bots beside a backfill: the synthetic history at 10,000 events/s with live humans at
   200 events/s, and one attack at a time starting 1 s in; events of the attack held,
   real users held (must be none).

Prints tables and writes ``guard_report.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine  # noqa: E402
from stream_app.guard import GuardConfig  # noqa: E402
from streamrec.schema import Interaction  # noqa: E402
from streamrec_eval.guard_report import guard_report  # noqa: E402
from streamrec_eval.synthetic import generate  # noqa: E402

T0 = 1_800_000_000.0      # "now" of the attack scenarios (2027)
OLD = GuardConfig(history_after_s=float("inf"))
"""The guard before issue #18: every event judged on its arrival."""


def ev(user: str, item: str, ts: float | None, kind: str = "click",
       rating: float | None = None) -> Interaction:
    return Interaction.model_construct(user_id=user, item_id=item, event_type=kind,
                                       timestamp=ts, weight=None, rating=rating,
                                       event_id=None, user_features=None, item_features=None)


def movielens(path: Path | None) -> list[Interaction] | None:
    from streamrec.errors import DataNotFound
    from streamrec.movielens import find_movielens, load_movielens

    try:
        ml = load_movielens(find_movielens(path, download=False))
    except DataNotFound:
        return None
    return [ev(str(u), str(i), float(t), "rating", float(r)) for u, i, r, t in
            zip(ml.users.tolist(), ml.items.tolist(), ml.ratings.tolist(),
                ml.timestamps.tolist())]


def false_positives(name: str, events: list[Interaction]) -> list[dict]:
    rows = []
    by_user = sorted(range(len(events)), key=lambda k: events[k].user_id)   # stable
    export = [events[k] for k in by_user]
    modes = [("2,000 ev/s", events, 2000.0), ("20,000 ev/s", events, 20000.0),
             ("1,000,000 ev/s", events, 1e6), ("event time", events, None),
             ("event time, user after user", export, None)]
    for mode, evs, rate in modes:
        for guard_name, cfg in (("issue #18", None), ("before", OLD)):
            t0 = time.perf_counter()
            rep = guard_report(evs, cfg, rate=rate)
            took = time.perf_counter() - t0
            users = len({e.user_id for e in evs})
            rows.append({"data": name, "replay": mode, "guard": guard_name, "users": users,
                         "events": len(evs), "users_held": len(rep.held_users),
                         "events_held": rep.events - rep.kept,
                         "by_rule": {r["rule"]: r["users"] for r in rep.rows()
                                     if r["users"] and r["rule"] != "total"},
                         "us_per_event": round(took / len(evs) * 1e6, 1)})
            print(f"{name:<22} {mode:<30} {guard_name:<10} users held "
                  f"{len(rep.held_users):>4}  events held {rep.events - rep.kept:>6}  "
                  f"{rows[-1]['by_rule']}", flush=True)
    return rows


# --------------------------------------------------------------------------- attacks
def humans(n_users: int, rate: float, seconds: float, start: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    t = start + np.arange(int(rate * seconds)) / rate
    users = rng.integers(n_users, size=len(t))
    items = rng.integers(500, size=len(t))
    return [ev(f"h{u}", f"i{i}", float(x)) for u, i, x in zip(users, items, t)], t


def bot(kind: str, start: float, seed: int = 1):
    """(events, arrivals) of one attack."""
    rng = np.random.default_rng(seed)
    if kind in ("bot 1,000/s stamped now", "bot 1,000/s unstamped", "bot, recent past forged",
                "bot, one past second"):
        n = 1000
        t = start + np.sort(rng.uniform(0, 1.0, n))
        ts = {"bot 1,000/s stamped now": t, "bot 1,000/s unstamped": [None] * n,
              "bot, recent past forged": t - 240.0 + 240.0 * np.arange(n) / n,
              "bot, one past second": np.full(n, 1_500_000_000.0)}[kind]
        items = rng.integers(1000, size=n)
        return [ev("bot", f"i{i}", None if s is None else float(s))
                for i, s in zip(items, ts)], t
    if kind == "bot, spread-out past forged (12,000 in 6 s)":
        n = 12_000
        t = start + np.sort(rng.uniform(0, 6.0, n))
        ts = 1_500_000_000.0 + 60.0 * np.arange(n)
        return [ev("bot", f"b{k}", float(s)) for k, s in enumerate(ts)], t
    if kind == "bot, spread-out past forged, 100/min for 2 h":
        n = 12_000
        t = start + np.arange(n) * 0.6
        ts = 1_500_000_000.0 + 60.0 * np.arange(n)
        return [ev("bot", f"b{k}", float(s)) for k, s in enumerate(ts)], t
    if kind == "50 new users, 5,000 clicks on one item in 10 s":
        t = start + np.sort(rng.uniform(0, 10.0, 5000))
        return [ev(f"fake{k % 50}", "target", float(s)) for k, s in enumerate(t)], t
    if kind == "5,000 new users, one click each on one item in 10 s":
        t = start + np.sort(rng.uniform(0, 10.0, 5000))
        return [ev(f"fake{k}", "target", float(s)) for k, s in enumerate(t)], t
    raise ValueError(kind)


ATTACKS = ("bot 1,000/s stamped now", "bot 1,000/s unstamped", "bot, one past second",
           "bot, recent past forged", "bot, spread-out past forged (12,000 in 6 s)",
           "bot, spread-out past forged, 100/min for 2 h",
           "50 new users, 5,000 clicks on one item in 10 s",
           "5,000 new users, one click each on one item in 10 s")


def attacks(history: list[Interaction]) -> list[dict]:
    rows = []
    t_hist = T0 + np.arange(len(history)) / 10_000.0
    for kind in ATTACKS:
        a_ev, a_t = bot(kind, T0 + 1.0)
        span = max(float(a_t[-1] - T0), float(t_hist[-1] - T0)) + 1.0
        h_ev, h_t = humans(400, 200, span, T0)
        events = history + h_ev + a_ev
        t = np.concatenate([t_hist, h_t, a_t])
        source = np.concatenate([np.zeros(len(history), int), np.ones(len(h_ev), int),
                                 np.full(len(a_ev), 2)])
        order = np.argsort(t, kind="stable")
        events = [events[k] for k in order]
        t, source = t[order], source[order]
        rep = guard_report(events, None, arrivals=t)
        keep = rep.keep
        attackers = {e.user_id for e, s in zip(events, source.tolist()) if s == 2}
        real_held = sorted(set(rep.held_users) - attackers)
        n_bot = int((source == 2).sum())
        held = int((~keep[source == 2]).sum())
        rows.append({"attack": kind, "attack_events": n_bot, "held": held,
                     "held_share": round(held / n_bot, 4), "let_through": n_bot - held,
                     "real_users_held": len(real_held),
                     "real_events_held": int((~keep[source != 2]).sum()),
                     "rules": sorted({r for u, r in rep.held_users.items() if u in attackers}
                                     | {r for r in rep.held_items.values()})})
        print(f"{kind:<52} held {held:>6}/{n_bot:<6} ({held / n_bot:6.1%})  real users held "
              f"{len(real_held)}  rules {rows[-1]['rules']}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=None, help="ML-100K folder")
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument("--seed", type=int, default=7, help="synthetic history seed")
    args = p.parse_args(argv)
    synthetic = generate(args.seed)
    syn = synthetic.interactions()
    data = [("synthetic power users", syn)]
    ml = movielens(args.data)
    if ml is not None:
        data = [("ML-100K", ml), ("ML-100K last 10 %", ml[int(len(ml) * 0.9):]), *data]
    fp = [row for name, evs in data for row in false_positives(name, evs)]
    att = attacks(syn)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "guard_report.json").write_text(json.dumps(
        {"machine": machine(), "synthetic": synthetic.stats(), "thresholds": {
            k: v for k, v in GuardConfig().__dict__.items()},
         "false_positives": fp, "attacks": att}, indent=1, default=float))
    print(f"wrote {args.out / 'guard_report.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
