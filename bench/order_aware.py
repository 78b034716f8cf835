"""Order-aware lists (issue #18, part 3): sequential-rules peers against the engine with its
transition index, weights chosen on held-out time, ablation on the test window.

    python bench/order_aware.py [--data PATH] [--out bench/results] [--seed 7] [--quick]

For ML-100K and the synthetic power-user stream (``streamrec_eval/synthetic.py``), in-process,
prequential (test, then train, every event; hit@10 on ratings >= 4):

1. **choose on held-out time** (train on the first 80 %, test-then-train 80-90 %): the
   engine's blend weights ``cooc_weight`` x ``trans_weight`` (then ``trans_decay``), and the
   peers' SR + item-kNN blend weight; the default is the engine configuration with the best
   mean held-out hit@10 over both data sets;
2. **report on the test window** (train on 90 %, test-then-train the last 10 %): item-kNN,
   sequential rules (W = 5 / decay 0.6 and W = 10 / decay 0.8), SR + 0.5 item-kNN (issue
   #18), the best held-out SR + kNN blend, and the engine's ablation: LightFM alone, +
   co-occurrence, + transitions (the chosen weights), transitions without co-occurrence.

Engines bootstrap with one LightFM thread (``fit_threads=1``), so every number reproduces;
variants that differ only in blend weights share one bootstrap (paired). Writes
``order_aware.json`` and ``order_aware.png`` to ``--out``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine  # noqa: E402
from bench.peers import ItemKNNPeer, SequentialRulesPeer, sr_knn  # noqa: E402
from streamrec_eval.adapters import BootstrapCache, EngineModel, engine_settings  # noqa: E402
from streamrec_eval.prequential import run_prequential  # noqa: E402
from streamrec_eval.stream import Stream  # noqa: E402
from streamrec_eval.synthetic import generate  # noqa: E402

COOC = (0.1, 0.2, 0.3, 0.4)
TRANS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
DECAYS = (0.6, 0.8)
KNN_WEIGHTS = (0.25, 0.5, 1.0)
SR_VARIANTS = ((5, 0.6), (10, 0.8))


def base_settings(**kw):
    return engine_settings(fit_threads=1, **kw)


def hit(model, stream: Stream, split: float, end: float) -> dict:
    t0 = time.perf_counter()
    s = run_prequential(model, stream, split=split, end=end, progress=False).summary()
    s["seconds"] = round(time.perf_counter() - t0, 1)
    return s


def tune(name: str, stream: Stream, quick: bool) -> dict:
    """Held-out window (80-90 %): engine weights and the peers' blend weight."""
    cache = BootstrapCache()
    grid = []
    pairs = [(c, t) for c in COOC for t in TRANS if c + t <= 0.8]
    if quick:
        pairs = [(0.3, 0.0), (0.3, 0.2), (0.2, 0.3)]
    for c, t in pairs:
        s = base_settings(cooc_weight=c, trans_weight=t)
        r = hit(EngineModel(s, 1, cache=cache, name=f"c{c} t{t}"), stream, 0.8, 0.9)
        grid.append({"cooc_weight": c, "trans_weight": t, "trans_decay": 0.6,
                     "hit@10": r["hit@10"]})
        print(f"[{name} held-out] cooc {c:g} trans {t:g}: {r['hit@10']:.4f}", flush=True)
    best = max(grid, key=lambda g: g["hit@10"])
    for d in DECAYS[1:]:
        s = base_settings(cooc_weight=best["cooc_weight"], trans_weight=best["trans_weight"],
                          trans_decay=d)
        r = hit(EngineModel(s, 1, cache=cache), stream, 0.8, 0.9)
        grid.append({**{k: best[k] for k in ("cooc_weight", "trans_weight")},
                     "trans_decay": d, "hit@10": r["hit@10"]})
        print(f"[{name} held-out] best weights, decay {d:g}: {r['hit@10']:.4f}", flush=True)
    peers = []
    for w, d in SR_VARIANTS:
        for kw in KNN_WEIGHTS if not quick else (0.5,):
            r = hit(sr_knn(kw, w, d), stream, 0.8, 0.9)
            peers.append({"window": w, "decay": d, "knn_weight": kw, "hit@10": r["hit@10"]})
            print(f"[{name} held-out] SR W={w} decay {d:g} + {kw:g} kNN: {r['hit@10']:.4f}",
                  flush=True)
    return {"engine": grid, "peers": peers}


def choose(tuned: dict[str, dict]) -> dict:
    """The engine weights with the best mean held-out hit@10 over the data sets."""
    keys = ("cooc_weight", "trans_weight", "trans_decay")
    scores: dict[tuple, list[float]] = {}
    for t in tuned.values():
        for g in t["engine"]:
            scores.setdefault(tuple(g[k] for k in keys), []).append(g["hit@10"])
    full = {k: v for k, v in scores.items() if len(v) == len(tuned)}
    best = max(full, key=lambda k: np.mean(full[k]))
    cooc_only = max((k for k in full if k[1] == 0), key=lambda k: np.mean(full[k]))
    return {"engine": dict(zip(keys, best)), "cooc_only": dict(zip(keys, cooc_only)),
            "mean_held_out": round(float(np.mean(full[best])), 4)}


def best_peer(tuned: dict) -> tuple[int, float, float]:
    p = max(tuned["peers"], key=lambda g: g["hit@10"])
    return p["window"], p["decay"], p["knn_weight"]


def test(name: str, stream: Stream, chosen: dict, peer: tuple[int, float, float]) -> list[dict]:
    """Test window (last 10 %): peers and the engine's ablation, one shared bootstrap."""
    cache = BootstrapCache()
    e, c_only = chosen["engine"], chosen["cooc_only"]
    w, d, kw = peer
    models = [
        ("peer", ItemKNNPeer()),
        ("peer", SequentialRulesPeer(5, 0.6)),
        ("peer", SequentialRulesPeer(10, 0.8)),
        ("peer", sr_knn(0.5, 5, 0.6)),
        ("peer", _named(sr_knn(kw, w, d), f"SR W={w} decay {d:g} + {kw:g} item-kNN "
                                          "(best held-out)")),
        ("engine", EngineModel(base_settings(cooc_weight=0.0, trans_weight=0.0), 1,
                               cache=cache, name="engine: LightFM alone")),
        ("engine", EngineModel(base_settings(cooc_weight=0.3, trans_weight=0.0), 1,
                               cache=cache, name="engine: + co-occurrence 0.3 (before #18)")),
        ("engine", EngineModel(base_settings(cooc_weight=c_only["cooc_weight"],
                                             trans_weight=0.0), 1, cache=cache,
                               name=f"engine: + co-occurrence {c_only['cooc_weight']:g} "
                                    "(best without transitions)")),
        ("engine", EngineModel(base_settings(**e), 1, cache=cache,
                               name=f"engine: + transitions (cooc {e['cooc_weight']:g}, "
                                    f"trans {e['trans_weight']:g}, decay "
                                    f"{e['trans_decay']:g}) = default")),
        ("engine", EngineModel(base_settings(cooc_weight=0.0, trans_weight=e["trans_weight"],
                                             trans_decay=e["trans_decay"]), 1, cache=cache,
                               name=f"engine: LightFM + transitions "
                                    f"{e['trans_weight']:g}, no co-occurrence")),
    ]
    rows, done = [], set()
    for kind, m in models:
        if m.name in done:
            continue
        done.add(m.name)
        r = hit(m, stream, 0.9, 1.0)
        rows.append({"data": name, "kind": kind, "name": m.name,
                     **{k: r[k] for k in ("hit@10", "hit@10_new", "hit@10_returning",
                                          "coverage", "positives", "seconds")}})
        print(f"[{name} test] {m.name:<62} {r['hit@10']:.4f}  ({r['seconds']:.0f} s)",
              flush=True)
    return rows


def _named(model, name: str):
    model.name = name
    return model


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["data"] for r in rows))
    fig, axes = plt.subplots(1, len(names), figsize=(7 * len(names), 4.8))
    axes = np.atleast_1d(axes)
    for ax, data in zip(axes, names):
        sub = [r for r in rows if r["data"] == data]
        y = np.arange(len(sub))
        ax.barh(y, [r["hit@10"] for r in sub],
                color=["C0" if r["kind"] == "peer" else "C1" for r in sub])
        for k, r in enumerate(sub):
            ax.text(r["hit@10"], k, f" {r['hit@10']:.3f}", va="center", fontsize=7)
        ax.set_yticks(y, [r["name"] for r in sub], fontsize=7)
        ax.invert_yaxis()
        ax.set_title(f"{data}: prequential hit@10, last 10 % (blue: peers)", fontsize=9)
        ax.set_xlim(0, max(r["hit@10"] for r in sub) * 1.2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from streamrec.movielens import find_movielens, load_movielens

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=None, help="ML-100K folder")
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument("--seed", type=int, default=7, help="synthetic history seed")
    p.add_argument("--quick", action="store_true", help="three engine points, one blend weight")
    args = p.parse_args(argv)
    synthetic = generate(args.seed)
    streams = {"ML-100K": Stream.from_movielens(load_movielens(find_movielens(
        args.data, download=False))), "power-user stream": synthetic.stream()}
    t0 = time.time()
    tuned = {name: tune(name, s, args.quick) for name, s in streams.items()}
    chosen = choose(tuned)
    print(f"chosen: {chosen}", flush=True)
    rows = [row for name, s in streams.items()
            for row in test(name, s, chosen, best_peer(tuned[name]))]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "order_aware.json").write_text(json.dumps(
        {"machine": machine(), "synthetic": synthetic.stats(), "held_out": tuned,
         "chosen": chosen, "test": rows, "minutes": round((time.time() - t0) / 60, 1)},
        indent=1))
    plot(rows, args.out / "order_aware.png")
    print(f"wrote {args.out / 'order_aware.json'} and order_aware.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
