"""Full retrain by replay on ML-100K against plain LightFM ``fit`` on the same matrix.

    python bench/retrain_speed.py [--runs 5] [--data PATH] [--engine tansu|kafka] [--profile]

ML-100K (metadata + every rating) goes once into fresh topics of an embedded broker. Each run
then times, in this process and in turn:

* **retrain**: what ``streamrec retrain`` does before it writes and announces: replay the
  topics into a fresh Engine (``replay_into_engine``) and fit the padded hybrid model with
  ``epochs_bootstrap`` epochs (``train_engine``, no holdout): the whole, and the fit alone;
* **streamrec retrain as the CLI runs it** (``run_retrain``: 2 % holdout evaluated, checkpoint
  written, model announced on the control topic);
* **plain LightFM fit**: ``LightFM(...).fit`` on the same positives (known users x known
  items, no padding, no metadata: LightFM's default identity features) with the same
  components, epochs, loss, learning rate, max_sampled, seed and threads;
* **plain LightFM fit, same features**: the same, given the padded model's user and item
  feature matrices (identity + hashed metadata) restricted to the known rows, so the ratio to
  it isolates replay + padding from the cost of the hybrid model itself.

Medians over runs; ratios of medians. ``--profile`` prints cProfile's top lines of one
retrain. Writes bench/results/retrain_speed.json.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from lightfm import LightFM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import median, print_table, write_results  # noqa: E402
from bench.harness import fresh_settings  # noqa: E402
from producers.movielens import replay_movielens  # noqa: E402
from stream_app.retrain import Replayed, replay_into_engine, run_retrain, train_engine  # noqa: E402
from streamrec.broker import free_port, start_broker  # noqa: E402
from streamrec.movielens import find_movielens, load_movielens  # noqa: E402
from streamrec.settings import Settings  # noqa: E402


def plain_lightfm(s: Settings) -> LightFM:
    """A LightFM with the retrain's hyperparameters."""
    return LightFM(no_components=s.no_components, loss=s.loss, learning_rate=s.learning_rate,
                   item_alpha=s.item_alpha, user_alpha=s.user_alpha,
                   max_sampled=s.max_sampled, random_state=s.random_seed)


def positives_matrix(r: Replayed) -> tuple[sp.coo_matrix, sp.coo_matrix]:
    """Known users x known items, what the padded model trains on for a ranking loss:
    positive (user, item) pairs (value 1) and their summed weights."""
    n_users, n_items = len(r.engine.users), len(r.engine.items)
    m = sp.coo_matrix((r.values.astype(np.float32), (r.users, r.items)),
                      shape=(n_users, n_items))
    m.sum_duplicates()
    keep = m.data > 0
    x = sp.coo_matrix((np.ones(keep.sum(), np.float32), (m.row[keep], m.col[keep])),
                      shape=m.shape)
    w = sp.coo_matrix((m.data[keep], (m.row[keep], m.col[keep])), shape=m.shape)
    return x, w


def time_retrain(s: Settings) -> tuple[dict[str, float], Replayed]:
    t0 = time.perf_counter()
    replayed = replay_into_engine(s, progress=False, until_time=time.time())
    t1 = time.perf_counter()
    train_engine(s, replayed, holdout=0.0, progress=False)
    t2 = time.perf_counter()
    return {"replay_s": t1 - t0, "fit_s": t2 - t1, "whole_s": t2 - t0}, replayed


def time_plain(s: Settings, r: Replayed) -> dict[str, float]:
    x, w = positives_matrix(r)
    t0 = time.perf_counter()
    plain_lightfm(s).fit(x, sample_weight=w, epochs=s.epochs_bootstrap,
                         num_threads=s.fit_threads)
    t1 = time.perf_counter()
    uf = r.engine.model.users.matrix()[:x.shape[0]]
    itf = r.engine.model.items.matrix()[:x.shape[1]]
    t2 = time.perf_counter()
    plain_lightfm(s).fit(x, user_features=uf, item_features=itf, sample_weight=w,
                         epochs=s.epochs_bootstrap, num_threads=s.fit_threads)
    t3 = time.perf_counter()
    return {"plain_fit_s": t1 - t0, "plain_features_fit_s": t3 - t2,
            "nnz": int(x.nnz), "users": x.shape[0], "items": x.shape[1]}


def time_cli_retrain(s: Settings) -> float:
    t0 = time.perf_counter()
    result = run_retrain(s, progress=False)
    elapsed = time.perf_counter() - t0
    shutil.rmtree(Path(result.get("path", s.state_dir / "none")), ignore_errors=True)
    return elapsed


def profile_retrain(s: Settings, top: int = 20) -> str:
    prof = cProfile.Profile()
    prof.enable()
    time_retrain(s)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--data", type=Path, default=None, help="MovieLens 100K folder")
    ap.add_argument("--engine", default="kafka", choices=["kafka", "tansu"])
    ap.add_argument("--profile", action="store_true", help="cProfile one retrain")
    args = ap.parse_args()
    ml = load_movielens(find_movielens(args.data))
    work = Path(tempfile.mkdtemp(prefix="streamrec-retrain-"))
    broker = start_broker(args.engine, free_port(),
                          work / "kafka" if args.engine == "kafka" else None)
    runs: list[dict[str, float]] = []
    profile = ""
    try:
        s = fresh_settings(broker.bootstrap, work)
        replay_movielens(s, ml, progress=False)
        time_retrain(s)  # warm-up: imports, broker caches, first-call costs
        for run in range(args.runs):
            timing, replayed = time_retrain(s)
            timing.update(time_plain(s, replayed))
            timing["cli_retrain_s"] = time_cli_retrain(s)
            runs.append(timing)
            print(f"run {run + 1}/{args.runs}: retrain {timing['whole_s']:.2f} s "
                  f"(fit {timing['fit_s']:.2f} s), plain fit {timing['plain_fit_s']:.2f} s",
                  file=sys.stderr)
        if args.profile:
            profile = profile_retrain(s)
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)

    med = {k: median([r[k] for r in runs]) for k in runs[0]}
    plain, plain_f = med["plain_fit_s"], med["plain_features_fit_s"]

    def row(name: str, key: str) -> list:
        return [name, f"{med[key]:.2f} s", f"{med[key] / plain:.2f}", f"{med[key] / plain_f:.2f}",
                " ".join(f"{r[key]:.2f}" for r in runs)]

    print(f"\nML-100K: {runs[0]['nnz']:,} positives, {runs[0]['users']} users x "
          f"{runs[0]['items']} items; {s.no_components} components, {s.epochs_bootstrap} "
          f"epochs, {s.loss}, lr {s.learning_rate}, {s.fit_threads} threads; "
          f"medians of {args.runs} runs")
    print_table(["measure", "median", "/ plain fit", "/ plain fit same features", "runs (s)"],
                [row("retrain: replay + fit (whole)", "whole_s"),
                 row("  of which replay", "replay_s"),
                 row("  of which fit", "fit_s"),
                 row("streamrec retrain (holdout 2 %, write, announce)", "cli_retrain_s"),
                 row("plain LightFM fit (identity features)", "plain_fit_s"),
                 row("plain LightFM fit, same features", "plain_features_fit_s")])
    if profile:
        print("\n" + profile)
    ratio = med["whole_s"] / plain
    per_run = {f"{a}/{b}": median([r[a] / r[b] for r in runs])
               for a in ("whole_s", "fit_s") for b in ("plain_fit_s", "plain_features_fit_s")}
    print(f"\nratio retrain / plain fit: {ratio:.2f} (target <= 1.3: "
          f"{'met' if ratio <= 1.3 else 'missed'}); medians of per-run ratios (robust to "
          "load that changes between runs): " +
          ", ".join(f"{k} {v:.2f}" for k, v in per_run.items()))
    path = write_results("retrain_speed", {
        "args": {k: str(v) for k, v in vars(args).items()}, "medians": med, "runs": runs,
        "ratio_whole_to_plain": ratio, "ratio_fit_to_plain": med["fit_s"] / plain,
        "ratio_whole_to_plain_same_features": med["whole_s"] / plain_f,
        "ratio_fit_to_plain_same_features": med["fit_s"] / plain_f,
        "per_run_ratio_medians": per_run,
        "settings": {"no_components": s.no_components, "epochs": s.epochs_bootstrap,
                     "loss": s.loss, "learning_rate": s.learning_rate,
                     "max_sampled": s.max_sampled, "threads": s.fit_threads},
        "profile": profile})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
