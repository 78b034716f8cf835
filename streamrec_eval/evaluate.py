"""What ``streamrec evaluate`` runs: every model through the prequential protocol, the
ablation, cold start, the exploration curve, the offline protocol and the seed protocol.

On one MovieLens folder and in one process: popularity (all-time and recent), the static
bootstrap model, periodic full retrain, the engine at micro-batch sizes 1/10/50/200, and an
ablation of the engine's parts at B=1. :func:`run_evaluation` writes ``evaluation.md``
(:mod:`streamrec_eval.report`), ``prequential.json`` and PNG plots to the output folder and
includes the live-pipeline result of ``bench/live_prequential.py`` if its JSON is next to
them. Nothing here prints: the command line does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.settings import Settings
from streamrec_eval.adapters import (BEST, BEST_SETTINGS, BootstrapCache, EngineModel,
                                     PeriodicRetrain, Popularity, best_engine, engine_settings)
from streamrec_eval.plots import plot_exploration, plot_results
from streamrec_eval.prequential import PrequentialModel, RunResult, curves, run_prequential
from streamrec_eval.report import format_table, render
from streamrec_eval.seed_protocol import SeedConfig, run_seed_protocol
from streamrec_eval.stream import POSITIVE, Stream

log = logging.getLogger(__name__)

ABLATION: list[tuple[str, dict[str, Any]]] = [
    ("LightFM only, {epochs_per_batch} epochs per batch",
     {"cooc_weight": 0.0, "trans_weight": 0.0, "epochs_per_batch": 5}),
    ("LightFM only, {epochs_per_batch} epochs per batch",
     {"cooc_weight": 0.0, "trans_weight": 0.0}),
    ("+ co-occurrence blend {cooc_weight:g} (before issue #18)",
     {"cooc_weight": 0.3, "trans_weight": 0.0}),
    ("default: + transitions (co-occurrence {cooc_weight:g}, transitions {trans_weight:g})", {}),
    ("default without metadata features", {"feature_weight": 0.0}),
]
"""The engine's parts switched off one at a time: (name, setting overrides); the name is
filled in from the settings the run uses, so it always says what ran."""


EXPLORE_SHARES: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3)
"""Exploration shares of the trade-off curve in ``streamrec evaluate``."""

EXPLORE_TEMPERATURES: tuple[float, ...] = (0.5, 1.0, 2.0)
"""Temperatures of the curve: near the top of the ranking (0.5) to mostly novelty (2)."""

EXPLORE_KEYS = ("hit@10", "hit@10_new", "hit@10_returning", "coverage", "novelty_bits",
                "diversity_genre", "rec_popularity_pct", "new_items", "new_items_shown",
                "new_item_median_delay", "new_item_positives", "new_item_hit", "seconds")


def run_exploration(stream: Stream, out_dir: Path | None = None,
                    settings: Settings | None = None,
                    shares: Sequence[float] = EXPLORE_SHARES,
                    temperatures: Sequence[float] = EXPLORE_TEMPERATURES,
                    split: float = 0.9, n: int = 10,
                    progress: bool = True, cache: BootstrapCache | None = None
                    ) -> list[dict[str, Any]]:
    """Exploration's price and gain: the engine as the worker runs it (B = 1) with each
    ``explore_share`` (and temperature), through the same prequential protocol.

    The replay is logged data: a list cannot change what the user does next, so the gain is
    measured as exposure (coverage, how soon new items are first shown), not as the clicks
    exposure would earn; the price (hit@n) is measured exactly. Writes
    ``exploration.json`` and ``exploration.png`` to ``out_dir`` if given.
    """
    settings = settings or engine_settings()
    cache = cache or BootstrapCache()
    rows: list[dict[str, Any]] = []
    for t in temperatures:
        for share in shares:
            if share == 0 and t != temperatures[0]:
                continue                       # no slot explores: the temperature is moot
            s = settings.model_copy(update={"explore_share": share, "explore_temperature": t})
            name = f"explore {share:g}" + (f" T={t:g}" if len(temperatures) > 1 else "")
            res = run_prequential(EngineModel(s, 1, cache=cache, name=name), stream,
                                  split=split, n=n, progress=progress)
            summary = res.summary()
            rows.append({"explore_share": share, "temperature": t,
                         **{k: summary[k] for k in EXPLORE_KEYS if k in summary}})
            log.info("exploration %s: %s", name, rows[-1])
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "exploration.json").write_text(json.dumps(
            {"protocol": "prequential, ML-100K last 10 %, engine defaults, B = 1",
             "points": rows}, indent=1))
        plot_exploration(rows, out_dir / "exploration.png")
    return rows


def run_all(stream: Stream, out_dir: Path, settings: Settings | None = None,
            batch_sizes: Sequence[int] = (1, 10, 50, 200), retrain_every: int = 2000,
            split: float = 0.9, n: int = 10, progress: bool = True,
            extra: Sequence[PrequentialModel] = ()) -> dict[str, Any]:
    """Every baseline and engine mode through the protocol; writes ``prequential.json``
    and two PNG plots to ``out_dir`` and returns the results dict."""
    settings = settings or engine_settings()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = BootstrapCache()
    batch_models = {b: f"streamrec B={b}" for b in batch_sizes}
    models: list[PrequentialModel] = [
        Popularity(),
        Popularity(window=settings.popular_window),
        EngineModel(settings, None, cache=cache),
        PeriodicRetrain(settings, every=retrain_every),
        *[EngineModel(settings, b, cache=cache, name=batch_models[b]) for b in batch_sizes],
        best_engine(settings, 1, cache),
        *extra,
    ]
    results: dict[str, RunResult] = {}
    for model in models:
        res = run_prequential(model, stream, split=split, n=n, progress=progress)
        results[model.name] = res
        log.info("%s", res.summary())
    summaries = [r.summary() for r in results.values()]
    doc = {
        "protocol": {"events": len(stream), "split": split, "n": n,
                     "positive_rating": POSITIVE, "test_events": len(stream) -
                     stream.split_index(split), "positives": summaries[0]["positives"],
                     "positives_new_users": summaries[0]["positives_new"]},
        "settings": {k: getattr(settings, k) for k in (
            "no_components", "loss", "learning_rate", "epochs_bootstrap", "epochs_per_batch",
            "feature_weight", "rating_threshold", "num_threads", "random_seed")},
        "best": {"settings": BEST_SETTINGS, "engine": BEST},
        "models": {s["name"]: s for s in summaries},
        "curves": {name: curves(r) for name, r in results.items()},
    }
    (out_dir / "prequential.json").write_text(json.dumps(doc, indent=1))
    reference = ["popularity", f"recent popularity {settings.popular_window}",
                 "streamrec static", f"streamrec retrain/{retrain_every}",
                 "streamrec+ best B=1"]
    plot_results(results, batch_models, reference, out_dir / "prequential_batch.png",
                 out_dir / "prequential_time.png")
    doc["table"] = format_table(summaries, n)
    return doc


def load_stream(data: Path) -> Stream:
    """The MovieLens 100K folder ``data`` as a stream in time order."""
    from streamrec.movielens import load_movielens

    return Stream.from_movielens(load_movielens(data))


def run_ablation(stream: Stream, settings: Settings, progress: bool = True
                 ) -> list[dict[str, Any]]:
    """:data:`ABLATION` at micro-batches of 1 event: one run summary per row."""
    out = []
    for template, overrides in ABLATION:
        s = settings.model_copy(update=overrides)
        name = template.format(**s.model_dump())
        out.append(run_prequential(EngineModel(s, 1, name=name), stream,
                                   progress=progress).summary())
    return out


def run_evaluation(data: Path, out: Path, progress: bool = True,
                   ablation: bool = True, seed_protocol: bool = True,
                   exploration: bool = True, settings: Settings | None = None,
                   seed_config: SeedConfig | None = None,
                   seed_base_epochs: int | None = None) -> dict[str, Any]:
    """Everything ``streamrec evaluate`` reports, written to ``out`` (``evaluation.md``,
    JSON and plots); returns the document the report was rendered from (``doc["table"]``:
    the plain-text table of every model)."""
    settings = settings or engine_settings()
    out.mkdir(parents=True, exist_ok=True)
    stream = load_stream(data)
    doc = run_all(stream, out, settings, progress=progress)
    doc["ablation"] = run_ablation(stream, settings, progress) if ablation else []
    doc["cold_start"] = cold_start(stream, settings, progress=progress) if ablation else []
    # the engine at B=1 per explore_share and temperature (exploration.png, .json)
    doc["exploration"] = run_exploration(stream, out, settings,
                                         progress=progress) if exploration else []
    if (data / "ua.base").exists() and (data / "ua.test").exists():
        from streamrec_eval.offline import OFFLINE_PARAMS, offline_table
        doc["offline"] = offline_table(data)
        doc["offline_params"] = dict(OFFLINE_PARAMS)
    if seed_protocol:  # AUC curves that choose the training epochs (the slowest part)
        doc["seed_protocol"] = run_seed_protocol(stream, out, settings, seed_config,
                                                 progress=progress,
                                                 base_epochs=seed_base_epochs)
    live_path = out / "live_prequential.json"
    doc["live"] = json.loads(live_path.read_text()).get("live") if live_path.exists() else None
    (out / "evaluation.md").write_text(render(doc))
    return doc


def cold_start(stream: Stream, settings: Settings | None = None, split: float = 0.9,
               first: int = 5, progress: bool = True) -> list[dict[str, Any]]:
    """hit@10 over the first ``first`` test-window events of users (items) never seen before
    the split, with and without metadata features (demographics, genres)."""
    settings = settings or engine_settings()
    cut = stream.split_index(split)
    ev = stream.events(0, len(stream))
    users, items = ev.users, ev.items
    old_users, old_items = set(users[:cut].tolist()), set(items[:cut].tolist())
    u_rank = np.zeros(len(stream), np.int64)
    i_rank = np.zeros(len(stream), np.int64)
    seen_u: dict[int, int] = {}
    seen_i: dict[int, int] = {}
    for k in range(cut, len(stream)):
        u, i = int(users[k]), int(items[k])
        seen_u[u] = u_rank[k] = seen_u.get(u, 0) + 1
        seen_i[i] = i_rank[k] = seen_i.get(i, 0) + 1
    rows = []
    for metadata in (True, False):
        name = "with metadata features" if metadata else "without metadata features"
        model = EngineModel(settings, 1, metadata=metadata, name=name)
        res = run_prequential(model, stream, split=split, progress=progress)
        idx = res.event_index
        new_u = np.array([int(users[k]) not in old_users and u_rank[k] <= first for k in idx])
        new_i = np.array([int(items[k]) not in old_items and i_rank[k] <= first for k in idx])
        rows.append({"model": name, "new_users_first5": res.hit_rate(new_u),
                     "new_users_positives": int(new_u.sum()),
                     "new_items_first5": res.hit_rate(new_i),
                     "new_items_positives": int(new_i.sum()), "overall": res.hit_rate()})
    return rows
