"""The seed protocol: choose the full-fit epochs and the ``fit_partial`` epochs per
micro-batch by ROC AUC, through streamrec's own engine.

Prequential hit@10 (:mod:`stream_app.prequential`) says which *system* is best; it cannot
cheaply sweep training lengths, since every point is a full stream replay. This protocol
asks the narrower question of how long to train, the way the seed blog did:

1. **Time split** the events at ``seed_split`` (90 %): *current* before, *new* after.
2. **Full fit.** Split *current* at random into train / validation
   (``seed_validation_fraction``), fit the engine on train epoch by epoch and record the
   per-user ROC AUC on validation (and on train, as a cheap loss proxy) after each epoch.
   The full-fit epochs are the fewest whose validation AUC is within
   ``seed_auc_tolerance`` of the curve's best.
3. **Micro-batches.** Fit a model on all of *current* with those epochs. Split *new* into
   ``seed_folds`` random folds; for each fold and each ``e`` in the grid, start from that
   model, feed the other folds (time order) in micro-batches of ``seed_batch_size`` events
   through ``Engine.apply_interactions`` with ``epochs_per_batch = e``, and measure AUC on
   the held-out fold. ``e = 0`` (events registered, never trained) is the baseline. The
   epochs per micro-batch are chosen from the fold-averaged AUC by the same rule.

The engine is built as the worker builds it (metadata of every user and item, hashed
features plus identity columns, padding, WARP on signed event values), so the numbers hold
for the model that runs. AUC is LightFM's: for each user with a held-out positive (rating
at or above ``rating_threshold``, what the engine trains as positive), the share of
(positive, other item) pairs ranked correctly, items the user met in training left out;
averaged over users. Only LightFM's scores are ranked: the co-occurrence blend the engine
adds does not depend on epochs. Unlike prequential, the folds of *new* are random, so a
training fold may hold events later than the held-out ones; the protocol measures how
much each epoch setting learns from new data, not freshness.

Run alone: ``python -m stream_app.seed_protocol --out bench/results`` (about 2 min on 2
cores); ``streamrec evaluate`` runs it too (``--no-seed-protocol`` skips it).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata

from stream_app.engine import Engine
from stream_app.figures import new_figure
from stream_app.prequential import Stream, bootstrap_engine
from streamrec.errors import StreamrecError
from streamrec.schema import Interaction
from streamrec.settings import Settings

log = logging.getLogger(__name__)

FULL_FIT_PNG = "seed_full_fit.png"
FIT_PARTIAL_PNG = "seed_fit_partial.png"


# --------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class SeedConfig:
    """The protocol's knobs, read from :class:`Settings` (``seed_*``) once."""

    split: float = 0.9
    validation_fraction: float = 0.2
    max_epochs: int = 60
    folds: int = 5
    epochs_grid: tuple[int, ...] = (1, 2, 5, 10, 20)
    batch_size: int = 10
    tolerance: float = 0.001

    @classmethod
    def from_settings(cls, s: Settings) -> SeedConfig:
        return cls(split=s.seed_split, validation_fraction=s.seed_validation_fraction,
                   max_epochs=s.seed_max_epochs, folds=s.seed_folds,
                   epochs_grid=parse_grid(s.seed_epochs_per_batch_grid),
                   batch_size=s.seed_batch_size, tolerance=s.seed_auc_tolerance)


def parse_grid(text: str) -> tuple[int, ...]:
    """``"1,2,5"`` -> ``(1, 2, 5)``, sorted and deduplicated; a bad value is a user error."""
    try:
        grid = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError as exc:
        raise StreamrecError(f"seed_epochs_per_batch_grid={text!r} is not a comma-separated "
                             "list of integers; set e.g. STREAMREC_SEED_EPOCHS_PER_BATCH_GRID="
                             "1,2,5,10,20") from exc
    if not grid or grid[0] < 1:
        raise StreamrecError(f"seed_epochs_per_batch_grid={text!r} needs integers >= 1")
    return tuple(grid)


def curve_points(max_epochs: int) -> list[int]:
    """Epochs after which the full-fit curve is measured: every one up to 10 (where AUC
    moves), then every 5 (where it is flat); each point costs two AUC passes."""
    return sorted({*range(1, min(10, max_epochs) + 1), *range(15, max_epochs + 1, 5),
                   max_epochs})


def choose(values: Sequence[int], aucs: Sequence[float], tolerance: float) -> int:
    """The fewest epochs whose AUC is within ``tolerance`` of the best (fewer is cheaper,
    and differences inside the tolerance are noise at this data size)."""
    best = max(aucs)
    return min(v for v, a in zip(values, aucs) if a >= best - tolerance)


# --------------------------------------------------------------------------- the metric
def mean_user_auc(scores: np.ndarray, positives: np.ndarray, exclude: np.ndarray) -> float:
    """Mean over users of ROC AUC: (users x items) ``scores``, boolean ``positives`` and
    ``exclude`` (items left out of the ranking, e.g. met in training) of the same shape.

    Users without a positive, or without a single other item, are skipped (as LightFM's
    ``auc_score`` skips them). Ties count half, by average ranks.
    """
    pos = positives & ~exclude
    n_pos = pos.sum(axis=1)
    n_ex = exclude.sum(axis=1)
    n_neg = scores.shape[1] - n_ex - n_pos
    keep = (n_pos > 0) & (n_neg > 0)
    if not keep.any():
        return float("nan")
    s = np.where(exclude[keep], -np.inf, scores[keep].astype(np.float64))
    # Excluded items rank 1..n_ex (all below any real score); subtract them.
    ranks = rankdata(s, axis=1) - n_ex[keep][:, None]
    rank_sum = (ranks * pos[keep]).sum(axis=1)
    p, n = n_pos[keep].astype(np.float64), n_neg[keep].astype(np.float64)
    auc = (rank_sum - p * (p + 1) / 2) / (p * n)
    return float(auc.mean())


def _dense(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[rows, cols] = True
    return m


def engine_auc(engine: Engine, user_rows: np.ndarray, item_rows: np.ndarray) -> float:
    """AUC of the engine's LightFM scores on (user, item) positives, over known items,
    every item in the user's history (``engine.seen``) excluded."""
    if len(user_rows) == 0:
        return float("nan")
    n_users, n_items = len(engine.users), len(engine.items)
    users = np.unique(user_rows)
    local = np.full(n_users, -1, np.int64)
    local[users] = np.arange(len(users))
    shape = (len(users), n_items)
    pos = _dense(local[user_rows], item_rows, shape)
    seen_r, seen_c = engine.seen.cells(users)
    exclude = _dense(seen_r, seen_c, shape)
    scores = engine.model.scores(users)[:, :n_items]
    return mean_user_auc(scores, pos, exclude)


def training_auc(engine: Engine) -> float:
    """AUC on what the engine was trained on (its recorded positives, nothing excluded):
    a cheap stand-in for the training loss, whose gap to validation shows overfitting."""
    u, i, v = engine.last_batch_arrays
    keep = v > 0
    users = np.unique(u[keep])
    local = np.full(len(engine.users), -1, np.int64)
    local[users] = np.arange(len(users))
    shape = (len(users), len(engine.items))
    pos = _dense(local[u[keep]], i[keep], shape)
    scores = engine.model.scores(users)[:, :len(engine.items)]
    return mean_user_auc(scores, pos, np.zeros(shape, dtype=bool))


# --------------------------------------------------------------------------- the engine
def registered_engine(settings: Settings, stream: Stream, events: Sequence[Interaction],
                      metadata: bool = True) -> Engine:
    """An engine as the worker's bootstrap leaves it before its full fit: metadata of every
    user and item (``bootstrap_engine`` on no events), then ``events`` applied untrained
    (ids, history, fit arrays). The events need not be a contiguous slice of the stream."""
    engine = bootstrap_engine(settings, stream.events(0, 0), metadata)
    if events:
        engine.apply_interactions(list(events), train=False)
    return engine


def _rows(engine: Engine, events: Sequence[Interaction], threshold: float
          ) -> tuple[np.ndarray, np.ndarray]:
    """Engine rows of the positives among ``events``; users / items the engine does not
    know (possible only without metadata) are dropped, never created."""
    pairs = [(engine.users.get(e.user_id), engine.items.get(e.item_id)) for e in events
             if e.rating is not None and e.rating >= threshold]
    pairs = [(u, i) for u, i in pairs if u is not None and i is not None]
    if not pairs:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    u, i = zip(*pairs)
    return np.asarray(u, np.int64), np.asarray(i, np.int64)


def _bar(total: int, desc: str, progress: bool) -> Any:
    if not progress:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, leave=False, mininterval=0.5)


# --------------------------------------------------------------------------- step 2
def full_fit_curve(stream: Stream, settings: Settings, config: SeedConfig,
                   progress: bool = True) -> dict[str, Any]:
    """Train / validation AUC after each measured epoch of a full fit on a random part of
    the current events; picks the full-fit epochs."""
    cut = stream.split_index(config.split)
    rng = np.random.default_rng(settings.random_seed)
    val_mask = rng.random(cut) < config.validation_fraction
    events = stream.interactions[:cut]
    train = [e for e, v in zip(events, val_mask) if not v]
    valid = [e for e, v in zip(events, val_mask) if v]
    engine = registered_engine(settings, stream, train)
    vu, vi = _rows(engine, valid, settings.rating_threshold)
    points = set(curve_points(config.max_epochs))
    curve: dict[str, list] = {"epochs": [], "validation_auc": [], "train_auc": []}
    bar = _bar(config.max_epochs, "seed protocol: full-fit epochs", progress)

    def on_epoch(epoch: int) -> None:
        if bar is not None:
            bar.update(1)
        if epoch + 1 in points:
            curve["epochs"].append(epoch + 1)
            curve["validation_auc"].append(round(engine_auc(engine, vu, vi), 5))
            curve["train_auc"].append(round(training_auc(engine), 5))

    u, i, v = engine.last_batch_arrays
    t0 = time.perf_counter()
    engine.fit_all(config.max_epochs, u, i, v, on_epoch=on_epoch)
    if bar is not None:
        bar.close()
    chosen = choose(curve["epochs"], curve["validation_auc"], config.tolerance)
    best = curve["epochs"][int(np.argmax(curve["validation_auc"]))]
    log.info("seed protocol full fit: chosen %d epochs (best %d)", chosen, best)
    return {"train_events": len(train), "validation_events": len(valid),
            "validation_positives": len(vu), "validation_users": len(np.unique(vu)),
            **curve, "chosen": chosen, "best": best,
            "seconds": round(time.perf_counter() - t0, 1)}


# --------------------------------------------------------------------------- step 3
def fold_indices(n: int, k: int, seed: int) -> list[np.ndarray]:
    """``k`` disjoint random folds of ``range(n)``, each sorted (time order kept)."""
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(f) for f in np.array_split(perm, k)]


def feed(engine: Engine, events: Sequence[Interaction], batch_size: int, epochs: int) -> None:
    """Events through ``apply_interactions`` in micro-batches, as the worker feeds them;
    ``epochs=0`` registers them (ids, history) without training."""
    if epochs > 0:
        engine.settings = engine.settings.model_copy(update={"epochs_per_batch": epochs})
    for k in range(0, len(events), batch_size):
        engine.apply_interactions(events[k:k + batch_size], train=epochs > 0)


def fit_partial_grid(stream: Stream, settings: Settings, config: SeedConfig,
                     full_fit_epochs: int, progress: bool = True) -> dict[str, Any]:
    """Held-out-fold AUC of the new events per epochs-per-micro-batch value, averaged over
    ``config.folds`` folds, each run starting from the same model fit on all current
    events; picks the epochs per micro-batch."""
    cut = stream.split_index(config.split)
    base = registered_engine(settings, stream, stream.interactions[:cut])
    u, i, v = base.last_batch_arrays
    t0 = time.perf_counter()
    base.fit_all(full_fit_epochs, u, i, v)
    fit_s = time.perf_counter() - t0
    new = stream.interactions[cut:]
    folds = fold_indices(len(new), config.folds, settings.random_seed)
    grid = (0, *config.epochs_grid)
    aucs = np.zeros((len(grid), len(folds)))
    bar = _bar(len(grid) * len(folds), "seed protocol: epochs per micro-batch", progress)
    for f, held in enumerate(folds):
        in_fold = np.zeros(len(new), bool)
        in_fold[held] = True
        train = [e for e, h in zip(new, in_fold) if not h]
        test = [e for e, h in zip(new, in_fold) if h]
        for g, epochs in enumerate(grid):
            engine = copy.deepcopy(base)
            feed(engine, train, config.batch_size, epochs)
            aucs[g, f] = engine_auc(engine, *_rows(engine, test, settings.rating_threshold))
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    mean = aucs.mean(axis=1)
    chosen = choose(config.epochs_grid, mean[1:].tolist(), config.tolerance)
    best = config.epochs_grid[int(np.argmax(mean[1:]))]
    log.info("seed protocol fit_partial: chosen %d epochs per batch (best %d)", chosen, best)
    return {"full_fit_epochs": full_fit_epochs, "full_fit_seconds": round(fit_s, 1),
            "new_events": len(new), "folds": len(folds), "batch_size": config.batch_size,
            "epochs_per_batch": list(grid), "mean_auc": np.round(mean, 5).tolist(),
            "std_auc": np.round(aucs.std(axis=1), 5).tolist(),
            "fold_auc": np.round(aucs, 5).tolist(), "chosen": chosen, "best": best,
            "seconds": round(time.perf_counter() - t0, 1)}


# --------------------------------------------------------------------------- all of it
def run_seed_protocol(stream: Stream, out_dir: Path | None, settings: Settings,
                      config: SeedConfig | None = None, progress: bool = True,
                      base_epochs: int | None = None) -> dict[str, Any]:
    """Both steps; writes ``seed_protocol.json`` and the two training-curve PNGs to
    ``out_dir`` (if given) and returns the document, with the current defaults beside the
    chosen values so a reader sees at once whether they agree.

    Step 3 starts from a full fit of the epochs step 2 chose; ``base_epochs`` overrides
    that (e.g. the default ``epochs_bootstrap``, to ask which epochs per micro-batch suit
    the model the worker actually bootstraps).

    Full fits run on one thread (``fit_threads=1``) so the curves are reproducible; two
    Hogwild threads give a slightly different curve on every run.
    """
    config = config or SeedConfig.from_settings(settings)
    settings = settings.model_copy(update={"fit_threads": 1})
    t0 = time.perf_counter()
    full = full_fit_curve(stream, settings, config, progress)
    partial = fit_partial_grid(stream, settings, config, base_epochs or full["chosen"],
                               progress)
    doc = {"config": asdict(config), "full_fit": full, "fit_partial": partial,
           "defaults": {"epochs_bootstrap": settings.epochs_bootstrap,
                        "epochs_per_batch": settings.epochs_per_batch},
           "chosen": {"epochs_bootstrap": full["chosen"],
                      "epochs_per_batch": partial["chosen"]},
           "seconds": round(time.perf_counter() - t0, 1)}
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "seed_protocol.json").write_text(json.dumps(doc, indent=1))
        plot_curves(doc, out_dir / FULL_FIT_PNG, out_dir / FIT_PARTIAL_PNG)
    return doc


def plot_curves(doc: dict[str, Any], path_full: Path, path_partial: Path) -> None:
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


# --------------------------------------------------------------------------- report
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
        f"chosen. Took {doc['seconds']:.0f} s (`stream_app/seed_protocol.py`).", "",
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


# --------------------------------------------------------------------------- CLI
def main(argv: Iterable[str] | None = None,
         echo: Callable[[str], None] = print) -> int:
    import argparse

    from stream_app.prequential import engine_settings
    from streamrec.movielens import find_movielens, load_movielens

    p = argparse.ArgumentParser(description="The seed protocol on ML-100K")
    p.add_argument("--data", type=Path, default=None, help="ML-100K folder")
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument("--base-epochs", type=int, default=None,
                   help="full-fit epochs of the model fit_partial starts from "
                        "(default: the ones the full-fit curve chooses)")
    args = p.parse_args(None if argv is None else list(argv))
    logging.basicConfig(level=logging.WARNING)
    stream = Stream.from_movielens(load_movielens(find_movielens(args.data, download=False)))
    doc = run_seed_protocol(stream, args.out, engine_settings(), base_epochs=args.base_epochs)
    echo("\n".join(render_section(doc)))
    echo(f"wrote {args.out / 'seed_protocol.json'}, {FULL_FIT_PNG}, {FIT_PARTIAL_PNG}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
