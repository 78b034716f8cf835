"""``streamrec evaluate``: the prequential comparison and the ablation, as a report with plots.

Runs, on one MovieLens folder and in one process: popularity (all-time and recent), the
static bootstrap model, periodic full retrain, the engine at micro-batch sizes 1/10/50/200,
and an ablation of the engine's parts at B=1. Writes ``evaluation.md``, ``prequential.json``
and PNG plots to the output folder; includes the live-pipeline result of
``bench/live_prequential.py`` if its JSON is next to them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from stream_app import prequential as pq

log = logging.getLogger(__name__)

ABLATION: list[tuple[str, dict[str, Any]]] = [
    ("LightFM only, 5 epochs per batch", {"cooc_weight": 0.0, "trans_weight": 0.0,
                                          "epochs_per_batch": 5}),
    ("LightFM only, 10 epochs per batch", {"cooc_weight": 0.0, "trans_weight": 0.0}),
    ("+ co-occurrence blend 0.3 (before issue #18)", {"cooc_weight": 0.3, "trans_weight": 0.0}),
    ("default: + transitions (co-occurrence 0.2, transitions 0.2)", {}),
    ("default without metadata features", {"feature_weight": 0.0}),
]


def run_evaluation(data: Path, out: Path, progress: bool = True,
                   ablation: bool = True, seed_protocol: bool = True,
                   exploration: bool = True) -> dict[str, Any]:
    from streamrec.movielens import load_movielens

    out.mkdir(parents=True, exist_ok=True)
    stream = pq.Stream.from_movielens(load_movielens(data))
    doc = pq.run_all(stream, out, pq.engine_settings(), progress=progress)
    abl = []
    if ablation:
        for name, overrides in ABLATION:
            model = pq.EngineModel(pq.engine_settings(**overrides), 1, name=name)
            abl.append(pq.run_prequential(model, stream, progress=progress).summary())
    doc["ablation"] = abl
    doc["cold_start"] = cold_start(stream, progress=progress) if ablation else []
    # ~2 min: the engine at B=1 per explore_share and temperature (exploration.png, .json)
    doc["exploration"] = pq.run_exploration(stream, out, pq.engine_settings(),
                                            progress=progress) if exploration else []
    if (data / "ua.base").exists() and (data / "ua.test").exists():
        from stream_app.offline import offline_table
        doc["offline"] = offline_table(data)
    if seed_protocol:  # ~1.5 min: AUC curves that choose the training epochs
        from stream_app.seed_protocol import run_seed_protocol
        doc["seed_protocol"] = run_seed_protocol(stream, out, pq.engine_settings(),
                                                 progress=progress)
    live_path = out / "live_prequential.json"
    doc["live"] = json.loads(live_path.read_text()).get("live") if live_path.exists() else None
    (out / "evaluation.md").write_text(render(doc))
    return doc


def _rows(summaries: list[dict]) -> str:
    lines = ["| model | hit@10 | new users | returning | coverage | mean popularity rank |",
             "|---|---|---|---|---|---|"]
    for s in summaries:
        lines.append(f"| {s['name']} | {s['hit@10']:.4f} | {s['hit@10_new']:.4f} | "
                     f"{s['hit@10_returning']:.4f} | {s['coverage']:.3f} | "
                     f"{s['mean_popularity_rank']:.1f} |")
    return "\n".join(lines)


def _beyond_rows(summaries: list[dict]) -> str:
    """Beyond-accuracy columns of run summaries (stream_app/beyond_accuracy.py)."""
    lines = ["| model | hit@10 | coverage | novelty (bits) | genre diversity | popularity "
             "percentile: lists | users' history | lift | new items shown |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        if "novelty_bits" not in s:
            continue
        lines.append(f"| {s['name']} | {s['hit@10']:.4f} | {s['coverage']:.3f} | "
                     f"{s['novelty_bits']:.2f} | {s['diversity_genre']:.3f} | "
                     f"{s['rec_popularity_pct']:.3f} | {s['history_popularity_pct']:.3f} | "
                     f"{s['popularity_lift']:+.3f} | {s['new_items_shown']:.0%} |")
    return "\n".join(lines)


def _delay(x: float | None) -> str:
    return "never (< half shown)" if x is None or x == float("inf") else f"{x:,.0f}"


def _exploration_rows(points: list[dict]) -> str:
    """The exploration trade-off table (stream_app/prequential.py: run_exploration)."""
    base = next((p["hit@10"] for p in points if p["explore_share"] == 0), None)
    lines = ["| explore_share | temperature | hit@10 | price | coverage | novelty (bits) | "
             "new items shown | median events to first exposure | new-item hit@10 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in points:
        price = f"{p['hit@10'] - base:+.4f}" if base is not None else "–"
        lines.append(f"| {p['explore_share']:g} | {p['temperature']:g} | {p['hit@10']:.4f} | "
                     f"{price} | {p['coverage']:.3f} | {p['novelty_bits']:.2f} | "
                     f"{p['new_items_shown']:.0%} of {p['new_items']} | "
                     f"{_delay(p['new_item_median_delay'])} | {p['new_item_hit']:.4f} |")
    return "\n".join(lines)


def render(doc: dict[str, Any]) -> str:
    p = doc["protocol"]
    parts = [
        "# Evaluation report (`streamrec evaluate`)", "",
        f"Prequential (test, then train) on {p['events']:,} events in time order: the first "
        f"{p['split']:.0%} train the bootstrap model; each of the {p['positives']:,} positives "
        f"(rating ≥ {p['positive_rating']:g}) of the rest is checked against the user's top "
        f"{p['n']} (seen items excluded) *before* it is trained on. "
        f"{p['positives_new_users']:,} of them come from users with no positive in the "
        "first part.", "",
        "![hit@10 by micro-batch size](prequential_batch.png)", "",
        "![hit@10 over stream time](prequential_time.png)", "",
        "## All models", "", _rows(list(doc["models"].values())), ""]
    if doc.get("ablation"):
        parts += ["## Ablation (micro-batch of 1 event)", "", _rows(doc["ablation"]), ""]
    parts += ["## Beyond accuracy", "",
              "Over the same served lists: coverage of the catalogue, novelty (mean "
              "-log2 of an item's share of training positives), intra-list genre diversity "
              "(mean pairwise 1 - Jaccard), popularity percentile of recommended items "
              "against the user's own history (lift > 0: more mainstream than the user), "
              "and the share of the items new in the test window shown in any list. "
              "Definitions: `stream_app/beyond_accuracy.py`.", "",
              _beyond_rows(list(doc["models"].values()) + list(doc.get("ablation") or [])),
              ""]
    if doc.get("exploration"):
        parts += ["## Exploration: price and gain", "",
                  "The engine as deployed (B = 1) with a share of list slots given to "
                  "sampled uncertain items. Logged data: lists do not change what users do, "
                  "so the gain is exposure (coverage; events from an item's first event "
                  "until a served list first shows it), the price is hit@10. The tables "
                  "above rank without exploration, like the peers; the worker's default "
                  "explore_share pays the price shown here.", "",
                  "![exploration trade-off](exploration.png)", "",
                  _exploration_rows(doc["exploration"]), ""]
    if doc.get("cold_start"):
        parts += ["## Cold start: the first 5 events of users / items new in the test window",
                  "", "| model | new users: hit@10 (positives) | new items: hit@10 (positives) |"
                  " overall |", "|---|---|---|---|"]
        parts += [f"| {r['model']} | {r['new_users_first5']:.4f} ({r['new_users_positives']}) "
                  f"| {r['new_items_first5']:.4f} ({r['new_items_positives']}) | "
                  f"{r['overall']:.4f} |" for r in doc["cold_start"]]
        parts.append("")
    if doc.get("offline"):
        parts += ["## Offline: the LightFM-docs protocol (`ua.base` / `ua.test`)", "",
                  "Ratings ≥ 4 are positives; 30 components, 30 epochs, learning rate 0.05, "
                  "through the padded streamrec model. Plain LightFM on this split: WARP "
                  "P@10 ≈ 0.14, AUC ≈ 0.93.", "",
                  "| loss | metadata features | precision@10 | AUC | fit s |",
                  "|---|---|---|---|---|"]
        parts += [f"| {r['loss']} | {'yes' if r['features'] else 'no'} | "
                  f"{r['precision_at_10']:.4f} | {r['auc']:.4f} | {r['fit_s']:.1f} |"
                  for r in doc["offline"]]
        parts.append("")
    if doc.get("seed_protocol"):
        from stream_app.seed_protocol import render_section
        parts += render_section(doc["seed_protocol"])
    live = doc.get("live")
    if live:
        parts += ["## Through the live pipeline", "",
                  f"Events into Kafka at {live['rate']:g}/s, each user's list read from the "
                  f"lookup HTTP API before the event is published: **hit@10 "
                  f"{live['hit_at_10']:.4f}** (new users {live['hit_new_users']:.4f}, "
                  f"returning {live['hit_returning_users']:.4f}), coverage "
                  f"{live['coverage']:.3f}.", ""]
    return "\n".join(parts)


def cold_start(stream: "pq.Stream", split: float = 0.9, first: int = 5,
               progress: bool = True) -> list[dict[str, Any]]:
    """hit@10 over the first ``first`` test-window events of users (items) never seen before
    the split, with and without metadata features (demographics, genres)."""
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
        model = pq.EngineModel(pq.engine_settings(), 1, metadata=metadata, name=name)
        res = pq.run_prequential(model, stream, split=split, progress=progress)
        idx = res.event_index
        new_u = np.array([int(users[k]) not in old_users and u_rank[k] <= first for k in idx])
        new_i = np.array([int(items[k]) not in old_items and i_rank[k] <= first for k in idx])
        rows.append({"model": name, "new_users_first5": res.hit_rate(new_u),
                     "new_users_positives": int(new_u.sum()),
                     "new_items_first5": res.hit_rate(new_i),
                     "new_items_positives": int(new_i.sum()), "overall": res.hit_rate()})
    return rows
