"""The seed protocol: choose the full-fit epochs and the ``fit_partial`` epochs per
micro-batch by ROC AUC, through streamrec's own engine.

Prequential hit@10 (:mod:`streamrec_eval.prequential`) says which *system* is best; it cannot
cheaply sweep training lengths, since every point is a full stream replay. This protocol
asks the narrower question of how long to train, the way the seed blog did:

1. **Time split** the events at ``split`` (90 %): *current* before, *new* after.
2. **Full fit.** Split *current* at random into train / validation
   (``validation_fraction``), fit the engine on train epoch by epoch and record the
   per-user ROC AUC on validation (and on train, as a cheap loss proxy) after each epoch.
   The full-fit epochs are the fewest whose validation AUC is within ``tolerance`` of the
   curve's best.
3. **Micro-batches.** Fit a model on all of *current* with those epochs. Split *new* into
   ``folds`` random folds; for each fold and each ``e`` in the grid, start from that
   model, feed the other folds (time order) in micro-batches of ``batch_size`` events
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

The knobs are :class:`SeedConfig` (evaluation parameters, not runtime settings):
``streamrec evaluate --seed-*`` sets them; ``streamrec evaluate --only seed-protocol`` runs
this protocol alone, ``--no-seed-protocol`` skips it.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata

from stream_app.engine import Engine
from streamrec.errors import StreamrecError
from streamrec.schema import Interaction
from streamrec.settings import Settings
from streamrec_eval.adapters import bootstrap_engine
from streamrec_eval.plots import plot_seed_curves
from streamrec_eval.stream import Stream

log = logging.getLogger(__name__)

FULL_FIT_PNG = "seed_full_fit.png"
FIT_PARTIAL_PNG = "seed_fit_partial.png"


# --------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class SeedConfig:
    """The protocol's knobs: evaluation parameters (``streamrec evaluate --seed-*``), not
    runtime settings; checked on construction."""

    split: float = 0.9
    """Time cut: *current* events before it, *new* after."""
    validation_fraction: float = 0.2
    """Random share of the current events held out for the validation AUC."""
    max_epochs: int = 60
    """The full-fit curve goes up to this many epochs."""
    folds: int = 5
    """k of the k-fold split of the new events."""
    epochs_grid: tuple[int, ...] = (1, 2, 5, 10, 20)
    """Epochs per micro-batch to try."""
    batch_size: int = 10
    """Events per ``fit_partial`` micro-batch when feeding the new events' training folds
    (1 is the worker's light-load shape, and much slower)."""
    tolerance: float = 0.001
    """The fewest epochs whose mean AUC is within this of the best are chosen: the curves
    are flat at the top, and fewer epochs cost less."""

    def __post_init__(self) -> None:
        problems = [what for what, bad in (
            ("split must be between 0 and 1", not 0 < self.split < 1),
            ("validation_fraction must be between 0 and 1", not 0 < self.validation_fraction < 1),
            ("max_epochs must be at least 1", self.max_epochs < 1),
            ("folds must be at least 2", self.folds < 2),
            ("epochs_grid needs integers >= 1", not self.epochs_grid or min(self.epochs_grid) < 1),
            ("batch_size must be at least 1", self.batch_size < 1),
            ("tolerance must be >= 0", self.tolerance < 0)) if bad]
        if problems:
            raise StreamrecError(f"seed protocol: {'; '.join(problems)}")


def parse_grid(text: str) -> tuple[int, ...]:
    """``"1,2,5"`` -> ``(1, 2, 5)``, sorted and deduplicated; a bad value is a user error."""
    try:
        grid = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError as exc:
        raise StreamrecError(f"--seed-epochs-grid {text!r} is not a comma-separated list of "
                             "integers; give e.g. --seed-epochs-grid 1,2,5,10,20") from exc
    if not grid or grid[0] < 1:
        raise StreamrecError(f"--seed-epochs-grid {text!r} needs integers >= 1")
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
    config = config or SeedConfig()
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
        plot_seed_curves(doc, out_dir / FULL_FIT_PNG, out_dir / FIT_PARTIAL_PNG)
    return doc
