"""The markdown report of ``streamrec evaluate`` (``evaluation.md``), rendered from the
results document alone.

Every number in the report comes from that document (what the runs measured and the
parameters they ran with); prose that quotes measurements made elsewhere belongs in
``docs/evaluation.md``. :func:`format_table` is the plain-text table the command line
prints.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from streamrec_eval.seed_protocol import FIT_PARTIAL_PNG, FULL_FIT_PNG


def _rows(summaries: list[dict]) -> str:
    lines = ["| model | hit@10 | new users | returning | coverage | mean popularity rank |",
             "|---|---|---|---|---|---|"]
    for s in summaries:
        lines.append(f"| {s['name']} | {s['hit@10']:.4f} | {s['hit@10_new']:.4f} | "
                     f"{s['hit@10_returning']:.4f} | {s['coverage']:.3f} | "
                     f"{s['mean_popularity_rank']:.1f} |")
    return "\n".join(lines)


def _beyond_rows(summaries: list[dict]) -> str:
    """Beyond-accuracy columns of run summaries (streamrec_eval/beyond_accuracy.py)."""
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
    """The exploration trade-off table (streamrec_eval/evaluate.py: run_exploration)."""
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
              "Definitions: `streamrec_eval/beyond_accuracy.py`.", "",
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
        parts += _offline_section(doc["offline"], doc.get("offline_params") or {})
    if doc.get("seed_protocol"):
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


def _offline_section(rows: list[dict], params: dict[str, Any]) -> list[str]:
    """The offline table, its protocol quoted from the parameters it ran with (what plain
    LightFM scores on the same split is in docs/evaluation.md, not here)."""
    how = ""
    if params:
        how = (f"Ratings ≥ {params['positive_rating']:g} are positives; "
               f"{params['components']} components, {params['epochs']} epochs, learning rate "
               f"{params['learning_rate']:g}, ")
    lines = ["## Offline: the LightFM-docs protocol (`ua.base` / `ua.test`)", "",
             f"{how}through the padded streamrec model (plain LightFM on this split: "
             "docs/evaluation.md).", "",
             "| loss | metadata features | precision@10 | AUC | fit s |", "|---|---|---|---|---|"]
    lines += [f"| {r['loss']} | {'yes' if r['features'] else 'no'} | "
              f"{r['precision_at_10']:.4f} | {r['auc']:.4f} | {r['fit_s']:.1f} |" for r in rows]
    return lines + [""]


def format_table(summaries: Iterable[Mapping[str, Any]], n: int = 10) -> str:
    """A plain-text table of run summaries, one line per model."""
    head = f"{'model':<42} {'hit@'+str(n):>7} {'new':>7} {'return':>7} {'cover':>6} " \
           f"{'poprank':>8} {'secs':>7}"
    lines = [head, "-" * len(head)]
    for s in summaries:
        lines.append(f"{s['name']:<42} {s[f'hit@{n}']:>7.4f} {s[f'hit@{n}_new']:>7.4f} "
                     f"{s[f'hit@{n}_returning']:>7.4f} {s['coverage']:>6.3f} "
                     f"{s['mean_popularity_rank']:>8.1f} {s['seconds']:>7.1f}")
    return "\n".join(lines)


def render_section(doc: dict[str, Any], image_prefix: str = "") -> list[str]:
    """Markdown lines of the report section: both tables, the plots, chosen vs defaults."""
    full, part, cfg = doc["full_fit"], doc["fit_partial"], doc["config"]
    dflt, chosen = doc["defaults"], doc["chosen"]
    lines = [
        "## Seed protocol and training curves", "",
        f"Time split at {cfg['split']:.0%} (current / new); a random "
        f"{cfg['validation_fraction']:.0%} of current ({full['validation_events']:,} events, "
        f"{full['validation_positives']:,} positives of {full['validation_users']} users) "
        "validates the full fit; the new events are split into "
        f"{part['folds']} random folds, each held out once while the others are fed to "
        f"`fit_partial` in micro-batches of {part['batch_size']} events, starting from a "
        f"{part['full_fit_epochs']}-epoch fit on all current events. ROC AUC per user "
        "(LightFM scores of the streamrec engine, items met in training excluded), "
        f"averaged; the fewest epochs within {cfg['tolerance']:g} AUC of the best are "
        f"chosen. Took {doc['seconds']:.0f} s (`streamrec_eval/seed_protocol.py`).", "",
        f"![AUC vs full-fit epochs]({image_prefix}{FULL_FIT_PNG})", "",
        f"![AUC vs epochs per micro-batch]({image_prefix}{FIT_PARTIAL_PNG})", "",
        "| full-fit epochs | validation AUC | train AUC |", "|---|---|---|"]
    for e, va, tr in zip(full["epochs"], full["validation_auc"], full["train_auc"]):
        mark = " (chosen)" if e == full["chosen"] else ""
        mark += " (default)" if e == dflt["epochs_bootstrap"] else ""
        lines.append(f"| {e}{mark} | {va:.4f} | {tr:.4f} |")
    grid, folds = part["epochs_per_batch"], np.asarray(part["fold_auc"])
    ref = folds[grid.index(dflt["epochs_per_batch"])] if dflt["epochs_per_batch"] in grid \
        else None
    lines += ["", "| epochs per micro-batch | held-out AUC (mean) | sd over folds | "
              "folds above the default |", "|---|---|---|---|"]
    for g, (e, m, s) in enumerate(zip(grid, part["mean_auc"], part["std_auc"])):
        mark = " (not trained)" if e == 0 else ""
        mark += " (chosen)" if e == part["chosen"] else ""
        mark += " (default)" if e == dflt["epochs_per_batch"] else ""
        above = "–" if ref is None or e == dflt["epochs_per_batch"] else \
            f"{int((folds[g] > ref).sum())} of {len(ref)}"
        lines.append(f"| {e}{mark} | {m:.4f} | {s:.4f} | {above} |")
    lines += ["", _verdict(dflt, chosen), ""]
    return lines


def _verdict(dflt: dict[str, int], chosen: dict[str, int]) -> str:
    parts = []
    for key, label in (("epochs_bootstrap", "full-fit epochs"),
                       ("epochs_per_batch", "epochs per micro-batch")):
        same = dflt[key] == chosen[key]
        parts.append(f"{label}: chosen {chosen[key]}, default {dflt[key]}"
                     + (" (agree)" if same else " (**differ**)"))
    return "Chosen against the defaults in `streamrec/settings.py`: " + "; ".join(parts) + "."
