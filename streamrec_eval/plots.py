"""The evaluation's plots, and matplotlib figures for the benches, without pyplot.

A :class:`matplotlib.figure.Figure` made directly renders PNGs through the Agg canvas when
saved, so writing a plot never picks or switches matplotlib's global backend (a notebook or
GUI app that imports streamrec keeps its own) and leaves no figure registered in pyplot.
matplotlib is imported here, on first use only: it is in the ``eval`` extra, not a hard
dependency (the worker and the lookup never plot).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streamrec.errors import MissingExtra

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from streamrec_eval.prequential import RunResult


def new_figure(**kwargs: Any) -> Figure:
    """``matplotlib.figure.Figure(**kwargs)``; save it with ``fig.savefig(path)``."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingExtra("plots need matplotlib, which is not installed; install it with "
                           "pip install 'streamrec[eval]'") from exc
    return Figure(**kwargs)


def plot_results(results: Mapping[str, "RunResult"], batch_models: Mapping[int, str],
                 reference: Sequence[str], path_batch: Path, path_time: Path,
                 window: int = 500) -> None:
    """hit@n vs micro-batch size, and cumulative / rolling hit@n over stream time."""
    fig = new_figure(figsize=(6.5, 4))
    ax = fig.subplots()
    sizes = sorted(batch_models)
    ax.plot(sizes, [results[batch_models[b]].hit_rate() for b in sizes], "o-",
            label="streamrec, micro-batches of B")
    for name in reference:
        if name in results:
            ax.axhline(results[name].hit_rate(), ls="--", lw=1, label=name,
                       color=f"C{1 + list(reference).index(name)}")
    ax.set_xscale("log")
    ax.set_xlabel("micro-batch size B (events)")
    ax.set_ylabel(f"hit@{next(iter(results.values())).n}")
    ax.set_title("Prequential hit rate vs micro-batch size (ML-100K, last 10 %)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path_batch, dpi=120)

    fig = new_figure(figsize=(12, 4))
    axes = fig.subplots(1, 2, sharey=False)
    for name, res in results.items():
        if name not in reference and name not in batch_models.values():
            continue
        axes[0].plot(res.event_index, res.cumulative(), label=name, lw=1.2)
        axes[1].plot(res.event_index, res.rolling(window), label=name, lw=1.0)
    axes[0].set_title("cumulative hit rate")
    axes[1].set_title(f"rolling hit rate (last {window} positives)")
    for ax in axes:
        ax.set_xlabel("event index (time order)")
        ax.set_ylabel("hit@n")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path_time, dpi=120)



def plot_exploration(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """hit@10, catalogue coverage and the share of new items ever shown against
    explore_share, one line per temperature."""
    fig = new_figure(figsize=(13, 3.8))
    axes = fig.subplots(1, 3)
    base = [r for r in rows if r["explore_share"] == 0]
    panels = (("hit@10", "prequential hit@10", "price: hit@10"),
              ("coverage", "catalogue coverage", "gain: catalogue coverage"),
              ("new_items_shown", "share of new items shown",
               "gain: new items shown at all"))
    for k, t in enumerate(sorted({r["temperature"] for r in rows})):
        pts = sorted(base + [r for r in rows if r["temperature"] == t and r["explore_share"]],
                     key=lambda r: r["explore_share"])
        for ax, (key, _, _) in zip(axes, panels):
            ax.plot([r["explore_share"] for r in pts], [r[key] for r in pts], "o-",
                    color=f"C{k}", label=f"temperature {t:g}")
    for ax, (_, ylabel, title) in zip(axes, panels):
        ax.set_xlabel("explore_share")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.suptitle("Exploration on ML-100K (prequential, last 10 %, B = 1; new items: first "
                 "event in the test window)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)



def plot_seed_curves(doc: dict[str, Any], path_full: Path, path_partial: Path) -> None:
    """AUC vs full-fit epochs (validation and train), and AUC vs epochs per micro-batch
    (fold mean with one standard deviation), each with the default and the choice marked."""
    full, part, dflt = doc["full_fit"], doc["fit_partial"], doc["defaults"]
    fig = new_figure(figsize=(6.5, 4))
    ax = fig.subplots()
    ax.plot(full["epochs"], full["validation_auc"], "o-", ms=3, label="validation AUC")
    ax.plot(full["epochs"], full["train_auc"], "s--", ms=3, label="train AUC (loss proxy)")
    _marks(ax, dflt["epochs_bootstrap"], full["chosen"])
    ax.set_xlabel("full-fit epochs")
    ax.set_ylabel("ROC AUC (mean over users)")
    ax.set_title(f"Full fit on {full['train_events']:,} current events (random "
                 f"{1 - doc['config']['validation_fraction']:.0%})", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path_full, dpi=120)

    fig = new_figure(figsize=(6.5, 4))
    ax = fig.subplots()
    e = np.asarray(part["epochs_per_batch"][1:])
    m, s = np.asarray(part["mean_auc"][1:]), np.asarray(part["std_auc"][1:])
    ax.errorbar(e, m, yerr=s, fmt="o-", ms=4, capsize=3,
                label=f"held-out fold AUC, mean ± sd of {part['folds']} folds")
    ax.axhline(part["mean_auc"][0], color="grey", lw=1, ls=":",
               label="new events not trained (e = 0)")
    _marks(ax, dflt["epochs_per_batch"], part["chosen"])
    ax.set_xscale("log")
    ax.set_xticks(e, [str(x) for x in e])
    ax.set_xlabel(f"epochs per micro-batch of {part['batch_size']} events (fit_partial)")
    ax.set_ylabel("ROC AUC (mean over users)")
    ax.set_title(f"fit_partial on the new events, from a {part['full_fit_epochs']}-epoch "
                 "full fit", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path_partial, dpi=120)


def _marks(ax: Any, default: int, chosen: int) -> None:
    same = " = chosen" if chosen == default else ""
    ax.axvline(default, color="C3", lw=1, ls="--", label=f"current default ({default}){same}")
    if chosen != default:
        ax.axvline(chosen, color="C2", lw=1, ls="-.", label=f"chosen ({chosen})")
