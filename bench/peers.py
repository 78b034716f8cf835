"""Peers of streamrec under the same prequential protocol ("lead the peers").

    python bench/peers.py [--data PATH] [--out bench/results] [--quick] [--synthetic SEED]

Runs, on MovieLens 100K (first 90 % trains, last 10 % is test-then-train, hit@10 on
ratings >= 4): all-time and recent popularity, static LightFM, LightFM ``fit_partial``
every 1/10/50 events (plain ``lightfm.LightFM``: WARP, 30 components, lr 0.05, 10 epochs per
update, no features, all users and items pre-allocated), implicit ALS with fold-in
(``partial_fit_users`` + ``partial_fit_items`` after every positive), an incremental
item-item co-occurrence kNN, sequential rules (Ludewig & Jannach; W = 5 / decay 0.6 and
W = 10 / decay 0.8) and SR + 0.5 x item-kNN (issue #18), and the streamrec engine (per
event, and its best variant). Prints one table and writes ``peers.json`` and ``peers.png``
to ``--out`` (``peers-synthetic.json`` / ``.png`` for ``--synthetic``: the power-user stream
of ``streamrec_eval/synthetic.py`` instead of ML-100K).

Every peer sends a user without any positive yet to recent popularity (5,000 positives),
as the engine sends unknown users to its fallback list.
"""

from __future__ import annotations

import os

# BLAS threads fight implicit's own threads (and the other work on a 2-core machine).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from stream_app.cooccurrence import CooccurrenceIndex
from streamrec_eval.adapters import (BootstrapCache, EngineModel, Popularity, best_engine,
                                     engine_settings)
from streamrec_eval.plots import new_figure
from streamrec_eval.prequential import run_prequential, top_items
from streamrec_eval.report import format_table
from streamrec_eval.stream import POSITIVE, Events, Stream

log = logging.getLogger("bench.peers")

REFERENCE = {  # hit@10 measured elsewhere for this protocol (5,629 positives)
    "item-kNN": 0.183, "ALS fold-in": 0.176, "LightFM every 1": 0.174,
    "LightFM every 10": 0.162, "LightFM every 50": 0.135, "LightFM static": 0.097,
    "recent popularity": 0.096, "popularity": 0.086,
    "sequential rules W=5 decay 0.6": 0.190, "sequential rules W=10 decay 0.8": 0.196,
    "SR + 0.5 item-kNN": 0.2095,      # issue #18
}


class _WithFallback:
    """Shared part of the peers: positives per user and a recent-popularity fallback."""

    def __init__(self, threshold: float = POSITIVE, window: int = 5000) -> None:
        self.threshold = threshold
        self.popular = Popularity(window=window, threshold=threshold)
        self.liked: dict[int, list[int]] = {}

    def _remember(self, events: Events) -> tuple[np.ndarray, np.ndarray]:
        u, i = events.positives(self.threshold)
        for a, b in zip(u.tolist(), i.tolist()):
            self.liked.setdefault(a, []).append(b)
        return u, i

    def fit_initial(self, events: Events) -> None:
        self.popular.fit_initial(events)
        self._remember(events)

    def update(self, events: Events) -> None:
        self.popular.update(events)

    def recommend(self, user: int, n: int, exclude: set[int]) -> np.ndarray:
        if user not in self.liked:
            return self.popular.recommend(user, n, exclude)
        return top_items(self.scores(user), n, exclude)

    def scores(self, user: int) -> np.ndarray:
        raise NotImplementedError


class LightFMPeer(_WithFallback):
    """Plain LightFM (no features): full fit, then ``fit_partial`` on the positives of every
    ``every`` events (``every=None``: static)."""

    def __init__(self, every: int | None = 1, epochs: int = 10, initial_epochs: int = 30,
                 components: int = 30, learning_rate: float = 0.05, seed: int = 42) -> None:
        super().__init__()
        from lightfm import LightFM

        self.every, self.epochs, self.initial_epochs = every, epochs, initial_epochs
        self.name = "LightFM static" if every is None else f"LightFM every {every}"
        self.model = LightFM(no_components=components, loss="warp",
                             learning_rate=learning_rate, random_state=seed)
        self.shape = (0, 0)
        self.pending: list[tuple[int, int]] = []
        self.since = 0

    def _matrix(self, u: np.ndarray, i: np.ndarray) -> sp.coo_matrix:
        m = sp.coo_matrix((np.ones(len(u), np.float32), (u, i)), shape=self.shape)
        m.sum_duplicates()
        m.data[:] = 1.0
        return m

    def fit_initial(self, events: Events) -> None:
        super().fit_initial(events)
        self.shape = (events.stream.n_users, events.stream.n_items)
        u, i = events.positives(self.threshold)
        self.model.fit(self._matrix(u, i), epochs=self.initial_epochs, num_threads=1)

    def update(self, events: Events) -> None:
        super().update(events)
        if self.every is None:
            return
        u, i = self._remember(events)
        self.pending.extend(zip(u.tolist(), i.tolist()))
        self.since += len(events)
        if self.since >= self.every:
            self.since = 0
            if self.pending:
                pu, pi = (np.array(x) for x in zip(*self.pending))
                self.model.fit_partial(self._matrix(pu, pi), epochs=self.epochs, num_threads=1)
                self.pending = []

    def scores(self, user: int) -> np.ndarray:
        m = self.model
        return m.item_embeddings @ m.user_embeddings[user] + m.item_biases


class ALSPeer(_WithFallback):
    """implicit ALS, then fold-in: ``partial_fit_users`` + ``partial_fit_items`` with the
    full rows of the user and the item after every positive."""

    name = "ALS fold-in"

    def __init__(self, factors: int = 32, regularization: float = 0.1, alpha: float = 1.0,
                 iterations: int = 15, seed: int = 42) -> None:
        super().__init__()
        from implicit.cpu.als import AlternatingLeastSquares

        self.model = AlternatingLeastSquares(factors=factors, regularization=regularization,
                                             alpha=alpha, iterations=iterations,
                                             random_state=seed, num_threads=1)
        self.fans: dict[int, list[int]] = {}
        self.n_users = self.n_items = 0

    def fit_initial(self, events: Events) -> None:
        super().fit_initial(events)
        self.n_users, self.n_items = events.stream.n_users, events.stream.n_items
        for u, items in self.liked.items():
            for i in set(items):
                self.fans.setdefault(i, []).append(u)
        u, i = events.positives(self.threshold)
        m = sp.csr_matrix((np.ones(len(u), np.float32), (u, i)),
                          shape=(self.n_users, self.n_items))
        m.data[:] = 1.0
        self.model.fit(m, show_progress=False)

    @staticmethod
    def _row(cols: list[int], width: int) -> sp.csr_matrix:
        cols = sorted(set(cols))
        return sp.csr_matrix((np.ones(len(cols), np.float32), (np.zeros(len(cols), int), cols)),
                             shape=(1, width))

    def update(self, events: Events) -> None:
        super().update(events)
        u, i = self._remember(events)
        for a, b in zip(u.tolist(), i.tolist()):
            self.fans.setdefault(b, []).append(a)
            self.model.partial_fit_users([a], self._row(self.liked[a], self.n_items))
            self.model.partial_fit_items([b], self._row(self.fans[b], self.n_users))

    def scores(self, user: int) -> np.ndarray:
        m = self.model
        return m.item_factors @ m.user_factors[user]


class ItemKNNPeer(_WithFallback):
    """Incremental co-occurrence: a new positive co-occurs with the user's last
    ``pair_window`` positives; a user's scores come from their last ``recent`` positives by
    asymmetric cosine (``alpha``). Counting pairs over the whole history instead
    (``pair_window=None``) measured 0.165 here; the window of 20 gives 0.190."""

    def __init__(self, recent: int = 20, alpha: float = 0.7,
                 pair_window: int | None = 20) -> None:
        super().__init__()
        self.name = "item-kNN" if pair_window == 20 else f"item-kNN pairs/{pair_window}"
        self.index = CooccurrenceIndex(alpha=alpha, recent=recent, pair_window=pair_window)
        self.n_items = 0

    def fit_initial(self, events: Events) -> None:
        super().fit_initial(events)
        self.n_items = events.stream.n_items
        u, i = events.positives(self.threshold)
        self.index.add(u.tolist(), i.tolist())

    def update(self, events: Events) -> None:
        super().update(events)
        u, i = self._remember(events)
        self.index.add(u.tolist(), i.tolist())

    def scores(self, user: int) -> np.ndarray:
        return self.index.scores([user], self.n_items)[0]


class SequentialRulesPeer(_WithFallback):
    """Sequential rules (Ludewig & Jannach, "Evaluation of session-based recommendation
    algorithms", 2018): for each positive ``b`` of a user, ``T[a, b] += 1 / gap`` for each of
    their earlier positives ``a`` at most ``window`` positives back (``gap`` steps); a user's
    scores are the ``T`` rows of their last ``recent`` positives, weighted ``decay ** k``
    (``k`` = 0 for the newest). Dense ``T``, updated after every event."""

    def __init__(self, window: int = 5, decay: float = 0.6, recent: int = 5,
                 name: str | None = None) -> None:
        super().__init__()
        self.window, self.decay, self.recent = window, decay, recent
        self.name = name or f"sequential rules W={window} decay {decay:g}"
        self.T = np.zeros((0, 0), np.float32)

    def fit_initial(self, events: Events) -> None:
        n = events.stream.n_items
        self.T = np.zeros((n, n), np.float32)
        self.popular.fit_initial(events)
        u, i = events.positives(self.threshold)
        for a, b in zip(u.tolist(), i.tolist()):
            self._add(a, b)

    def _add(self, user: int, item: int) -> None:
        prev = self.liked.setdefault(user, [])
        back = prev[-self.window:]
        if back:
            gaps = np.arange(len(back), 0, -1, dtype=np.float32)
            np.add.at(self.T, (np.asarray(back), item), 1.0 / gaps)
        prev.append(item)

    def update(self, events: Events) -> None:
        super().update(events)
        u, i = events.positives(self.threshold)
        for a, b in zip(u.tolist(), i.tolist()):
            self._add(a, b)

    def scores(self, user: int) -> np.ndarray:
        last = self.liked[user][-self.recent:][::-1]          # newest first
        w = self.decay ** np.arange(len(last), dtype=np.float32)
        return w @ self.T[last]


class BlendPeer(_WithFallback):
    """``sum(weight * scores / max(scores))`` of peers that share the protocol (each peer is
    fed every event; each score vector max-normalised before mixing)."""

    def __init__(self, parts: list[tuple[_WithFallback, float]], name: str) -> None:
        super().__init__()
        self.parts, self.name = parts, name

    def fit_initial(self, events: Events) -> None:
        super().fit_initial(events)
        for peer, _ in self.parts:
            peer.fit_initial(events)

    def update(self, events: Events) -> None:
        super().update(events)
        self._remember(events)
        for peer, _ in self.parts:
            peer.update(events)

    def scores(self, user: int) -> np.ndarray:
        total = None
        for peer, weight in self.parts:
            s = peer.scores(user).astype(np.float64)
            top = s.max()
            s = s / top * weight if top > 0 else s * 0.0
            total = s if total is None else total + s
        return total


def sr_knn(knn_weight: float = 0.5, window: int = 5, decay: float = 0.6) -> BlendPeer:
    """Sequential rules + ``knn_weight`` x item-kNN, both max-normalised (issue #18)."""
    return BlendPeer([(SequentialRulesPeer(window, decay), 1.0), (ItemKNNPeer(), knn_weight)],
                     name=f"SR + {knn_weight:g} item-kNN")


def plot(summaries: list[dict], path: Path) -> None:
    names = [s["name"] for s in summaries]
    y = np.arange(len(names))
    fig = new_figure(figsize=(8, 0.4 * len(names) + 1.2))
    ax = fig.subplots()
    ax.barh(y - 0.2, [s["hit@10_new"] for s in summaries], 0.4, label="new users")
    ax.barh(y + 0.2, [s["hit@10_returning"] for s in summaries], 0.4, label="returning users")
    ax.scatter([s["hit@10"] for s in summaries], y, color="k", zorder=3, label="overall")
    ax.scatter([REFERENCE.get(n, np.nan) for n in names], y, marker="x", color="r", zorder=3,
               label="reference")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("hit@10 (prequential, ML-100K last 10 %)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def peer_models(quick: bool = False, periodic: bool = False) -> list:
    """Every model of the peers table, in its order; ``periodic`` adds the scheduled full
    retrain (the model-quality issue's baseline)."""
    from streamrec_eval.adapters import PeriodicRetrain

    settings = engine_settings()
    cache = BootstrapCache()
    return [Popularity(), Popularity(window=5000, name="recent popularity"),
            LightFMPeer(None), *[LightFMPeer(b) for b in ((10, 50) if quick else (1, 10, 50))],
            ALSPeer(), ItemKNNPeer(), SequentialRulesPeer(5, 0.6), SequentialRulesPeer(10, 0.8),
            sr_knn(0.5),
            EngineModel(settings, None, cache=cache, name="streamrec static"),
            *([PeriodicRetrain(settings, 2000)] if periodic else []),
            EngineModel(settings, 1, cache=cache, name="streamrec B=1"),
            best_engine(settings, 1, cache)]


def run_peers(stream: Stream, quick: bool = False, periodic: bool = False,
              progress: bool = True, reference: bool = True) -> list[dict]:
    """Run every peer through the prequential protocol; one summary dict per model."""
    summaries = []
    for model in peer_models(quick, periodic):
        res = run_prequential(model, stream, progress=progress)
        s = res.summary()
        s["reference"] = REFERENCE.get(model.name) if reference else None
        summaries.append(s)
        print(f"{s['name']:<28} hit@10 {s['hit@10']:.4f}  ({s['seconds']:.0f} s)",
              file=sys.stderr, flush=True)
    return summaries


def main(argv: list[str] | None = None) -> int:
    from streamrec.movielens import find_movielens, load_movielens

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=None, help="ML-100K folder")
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument("--quick", action="store_true", help="skip the slow per-event LightFM")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--synthetic", type=int, default=None, metavar="SEED",
                   help="the synthetic power-user stream of this seed instead of ML-100K")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.synthetic is None:
        stream = Stream.from_movielens(load_movielens(find_movielens(args.data,
                                                                     download=False)))
        data, stem = "MovieLens 100K", "peers"
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from streamrec_eval.synthetic import generate
        stream = generate(args.synthetic).stream()
        data, stem = f"synthetic power-user stream, seed {args.synthetic}", "peers-synthetic"
    summaries = run_peers(stream, quick=args.quick, progress=not args.no_progress,
                          reference=args.synthetic is None)
    print(format_table(summaries))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(
        {"protocol": {"data": data, "split": 0.9, "n": 10,
                      "positive_rating": POSITIVE, "positives": summaries[0]["positives"]},
         "models": summaries}, indent=1))
    plot(summaries, args.out / f"{stem}.png")
    print(f"wrote {args.out / (stem + '.json')} and {args.out / (stem + '.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
