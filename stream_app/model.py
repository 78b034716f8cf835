"""A hybrid LightFM pre-padded with dummy user and item rows, grown in place when full.

LightFM cannot resize, so the padding is ours: the model is created with ``capacity`` rows
per side (more than the known ids), feature widths never change, and when the rows run out
every per-feature array is extended the way ``LightFM._initialize`` fills new ones.
Checkpoints are ``.npz`` (arrays) + ``.json`` (everything else); never pickles.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from lightfm import LightFM
from lightfm._lightfm_fast import CSRMatrix, fit_bpr, fit_warp

from stream_app.features import FeatureSpace
from stream_app.useritems import ranges
from streamrec.durable import fsync_dir
from streamrec.errors import ModelStateError

log = logging.getLogger(__name__)

SIDES = ("user", "item")
ARRAYS = ("embeddings", "embedding_gradients", "embedding_momentum",
          "biases", "bias_gradients", "bias_momentum")
_KERNELS = {"warp": fit_warp, "bpr": fit_bpr}
"""LightFM's Cython epoch kernels of the ranking losses that take sample weights."""


@dataclass(frozen=True)
class ModelParams:
    """Hyperparameters that define a model; stored in every checkpoint."""

    no_components: int = 30
    loss: str = "warp"
    learning_rate: float = 0.05
    item_alpha: float = 0.0
    user_alpha: float = 0.0
    max_sampled: int = 10
    user_buckets: int = 256
    item_buckets: int = 256
    feature_weight: float = 0.5
    random_seed: int = 42

    @classmethod
    def from_settings(cls, s: object) -> "ModelParams":
        return cls(no_components=s.no_components, loss=s.loss, learning_rate=s.learning_rate,
                   item_alpha=s.item_alpha, user_alpha=s.user_alpha, max_sampled=s.max_sampled,
                   user_buckets=s.user_feature_buckets, item_buckets=s.item_feature_buckets,
                   feature_weight=s.feature_weight, random_seed=s.random_seed)


def padded_capacity(n: int, fraction: float, minimum: int) -> int:
    """Rows for ``n`` known ids plus padding: ``max(n * fraction, minimum)`` dummy slots."""
    return n + max(int(np.ceil(n * fraction)), minimum)


class PaddedLightFM:
    """LightFM with fixed-width hybrid features and spare rows on both sides."""

    def __init__(self, params: ModelParams, user_capacity: int, item_capacity: int) -> None:
        self.params = params
        self.users = FeatureSpace(params.user_buckets, user_capacity, params.feature_weight)
        self.items = FeatureSpace(params.item_buckets, item_capacity, params.feature_weight)
        self.lightfm = LightFM(no_components=params.no_components, loss=params.loss,
                               learning_rate=params.learning_rate,
                               item_alpha=params.item_alpha, user_alpha=params.user_alpha,
                               max_sampled=params.max_sampled, random_state=params.random_seed)
        self.lightfm._initialize(params.no_components, self.items.n_columns,
                                 self.users.n_columns)
        self._item_reps: tuple[np.ndarray, np.ndarray] | None = None
        self._item_reps_matrix: sp.csr_matrix | None = None   # the features they came from
        self._stale_items: list[np.ndarray] = []      # rows whose reps an update moved
        self.item_reps_version = 0                     # bumped whenever the reps change
        self._item_csr_cache: tuple[sp.csr_matrix, CSRMatrix] | None = None
        self._item_csc_cache: tuple[sp.csr_matrix, sp.csc_matrix] | None = None

    def __getstate__(self) -> dict:
        """Copies (``copy.deepcopy`` in the evaluation) leave the kernel's wrapper behind:
        it cannot be copied, and it is rebuilt on first use."""
        state = self.__dict__.copy()
        state["_item_csr_cache"] = None
        return state

    # ----------------------------------------------------------------- capacity
    @property
    def user_capacity(self) -> int:
        return self.users.capacity

    @property
    def item_capacity(self) -> int:
        return self.items.capacity

    def ensure_capacity(self, n_users: int, n_items: int, growth: float = 1.5) -> bool:
        """Grow geometrically when assigned rows reach capacity; True if anything grew."""
        grew = False
        for side, space, needed in (("user", self.users, n_users), ("item", self.items, n_items)):
            if needed > space.capacity:
                new_cap = int(np.ceil(max(space.capacity, needed) * growth))
                self._grow_side(side, space, new_cap)
                grew = True
        return grew

    def _grow_side(self, side: str, space: FeatureSpace, new_capacity: int) -> None:
        extra = new_capacity - space.capacity
        k = self.params.no_components
        m = self.lightfm
        rng = m.random_state
        adagrad = m.learning_schedule == "adagrad"
        new_emb = ((rng.rand(extra, k) - 0.5) / k).astype(np.float32)
        grad_fill = 1.0 if adagrad else 0.0
        blocks = {
            "embeddings": new_emb,
            "embedding_gradients": np.full((extra, k), grad_fill, dtype=np.float32),
            "embedding_momentum": np.zeros((extra, k), dtype=np.float32),
            "biases": np.zeros(extra, dtype=np.float32),
            "bias_gradients": np.full(extra, grad_fill, dtype=np.float32),
            "bias_momentum": np.zeros(extra, dtype=np.float32),
        }
        for name, block in blocks.items():
            attr = f"{side}_{name}"
            setattr(m, attr, np.ascontiguousarray(np.concatenate([getattr(m, attr), block])))
        space.grow(new_capacity)
        self._item_reps = None
        log.info("grew %s capacity to %d rows (no retrain)", side, new_capacity)

    def keep_users(self, rows: np.ndarray, capacity: int) -> "PaddedLightFM":
        """A copy with only these user rows (renumbered 0..len(rows)-1, then fresh padding
        up to ``capacity``) and every item row: a shard's share of a model trained on every
        user, so that every shard starts in the same latent space."""
        rows = np.asarray(rows, np.int64)
        out = PaddedLightFM(self.params, capacity, self.item_capacity)
        b = self.users.buckets
        m, o = self.lightfm, out.lightfm
        for a in ARRAYS:
            src, dst = getattr(m, f"user_{a}"), getattr(o, f"user_{a}")
            dst[:b] = src[:b]                           # hashed metadata columns
            dst[b:b + len(rows)] = src[b + rows]         # identity columns of kept users
            setattr(o, f"item_{a}", getattr(m, f"item_{a}").copy())
        o.random_state.set_state(m.random_state.get_state())
        for new, old in enumerate(rows.tolist()):
            features = self.users.get(old)
            if features:
                out.users.set(new, features)
        for r, features in self.items.items():
            out.items.set(r, features)
        out.users.dirty_rows.clear()
        out.items.dirty_rows.clear()
        return out

    # ----------------------------------------------------------------- training
    def interactions_matrix(self, user_rows: np.ndarray, item_rows: np.ndarray,
                            values: np.ndarray) -> tuple[sp.coo_matrix, sp.coo_matrix]:
        """Full-shape COO of (user,item) -> value with duplicates summed, and its weights.

        The interaction values are the sign (+1/-1) and the weights their magnitude, so the
        weights have exactly the sparsity pattern of the interactions, as LightFM demands.
        """
        shape = (self.user_capacity, self.item_capacity)
        m = sp.coo_matrix((values.astype(np.float32), (user_rows, item_rows)), shape=shape)
        m.sum_duplicates()
        keep = m.data != 0
        rows, cols, data = m.row[keep], m.col[keep], m.data[keep]
        signs = np.sign(data).astype(np.float32)
        interactions = sp.coo_matrix((signs, (rows, cols)), shape=shape)
        weights = sp.coo_matrix((np.abs(data), (rows, cols)), shape=shape)
        return interactions, weights

    def fit_partial(self, user_rows: np.ndarray, item_rows: np.ndarray, values: np.ndarray,
                    epochs: int = 1, num_threads: int = 1,
                    on_epoch: Callable[[int], None] | None = None) -> None:
        """Train on (user, item, signed weight) triples; rows must be within capacity.

        For the ranking losses (WARP, BPR) on small batches this runs LightFM's own Cython
        kernel once per epoch with everything LightFM rebuilds per epoch built once per call
        (the positives lookup, the CSR wrappers, the parameter bundle) and its finiteness
        check of every parameter array once at the end. Same kernel, same RNG draws in the
        same order, so the result equals ``LightFM.fit_partial`` bit for bit (tested), but a
        10-epoch update of one event costs ~0.3 ms instead of ~2 ms (docs/benchmarks.md):
        the difference between a list that has seen the user's last click and one that has not.
        """
        if len(user_rows) == 0:
            return
        loss = self.params.loss
        if loss in _KERNELS:
            self._fit_ranking(user_rows, item_rows, values, epochs, num_threads, on_epoch)
            return
        interactions, weights = self.interactions_matrix(user_rows, item_rows, values)
        if interactions.nnz == 0:
            return
        if loss != "logistic":
            # Ranking losses read only positives; keep negatives out of the matrix.
            pos = interactions.data > 0
            shape = interactions.shape
            interactions = sp.coo_matrix((interactions.data[pos], (interactions.row[pos],
                                          interactions.col[pos])), shape=shape)
            weights = sp.coo_matrix((weights.data[pos], (weights.row[pos], weights.col[pos])),
                                    shape=shape)
            if interactions.nnz == 0:
                return
        uf, itf = self.users.matrix(), self.items.matrix()
        if loss == "warp-kos":
            weights = None  # LightFM's k-OS loss takes no sample weights: events count equally
        for epoch in range(epochs):
            self.lightfm.fit_partial(interactions, user_features=uf, item_features=itf,
                                     sample_weight=weights, epochs=1, num_threads=num_threads)
            if on_epoch is not None:
                on_epoch(epoch)
        self._item_reps = None

    def _fit_ranking(self, user_rows: np.ndarray, item_rows: np.ndarray, values: np.ndarray,
                     epochs: int, num_threads: int,
                     on_epoch: Callable[[int], None] | None) -> None:
        """WARP/BPR epochs through LightFM's kernel; see :meth:`fit_partial`. Prepares the
        batch, the kernel's inputs (compact user rows when it can), runs the epochs, then
        checks and marks what moved; bit-identical to ``LightFM.fit_partial`` per epoch."""
        batch = self._ranking_batch(user_rows, item_rows, values)
        if batch is None:
            return
        m = self.lightfm
        accumulated = m.item_bias_gradients.copy()   # grows for every item feature updated
        user_rows_csr = _csr_rows(self.users.matrix(), batch.users)
        # LightFM's kernel ends every call by dividing *every* parameter by its L2 scale (1.0
        # without regularisation): 90 ms for one event at 1 M users x 100 k items, 10
        # epochs. Without user regularisation the batch's user feature rows are handed to
        # it as compact copies (written back after), so the user side costs only them.
        compact = m.user_alpha == 0
        if compact:
            columns, user_csr_rows = _compact_columns(user_rows_csr)
            params, users = self._lightfm_data(columns)
        else:
            columns, user_csr_rows, users = None, user_rows_csr, None
            params = m._get_lightfm_data()
        try:
            self._run_kernel(batch, CSRMatrix(user_csr_rows), params, epochs, num_threads,
                             on_epoch, (lambda: self._write_back(columns, users))
                             if compact else None)
        finally:
            if compact:
                self._write_back(columns, users)
        if on_epoch is None:
            self._check_touched_finite(user_rows_csr.indices, np.unique(batch.items))
        if m.item_alpha > 0:     # regularisation scales every item embedding
            self._item_reps = None
        else:
            self._stale_item_features(np.flatnonzero(m.item_bias_gradients != accumulated))

    def _ranking_batch(self, user_rows: np.ndarray, item_rows: np.ndarray,
                       values: np.ndarray) -> _RankingBatch | None:
        """The batch as the kernel reads it: duplicates summed, positives only (None if
        there is none), users as local rows 0..U-1 with their positives as a CSR lookup.

        The kernel reads a user only through their feature rows and positives, so the
        result is the same, and a batch costs nothing per *other* user (an indptr over the
        whole user capacity was 8 MB a batch at a million users)."""
        n_items = self.item_capacity
        key = np.asarray(user_rows, np.int64) * n_items + np.asarray(item_rows, np.int64)
        keys, inverse = np.unique(key, return_inverse=True)  # sorted: row-major, like COO
        summed = np.bincount(inverse, weights=np.asarray(values, np.float64)).astype(np.float32)
        if not np.isfinite(summed.sum()):
            raise ValueError("Not all input values are finite. Check the event values.")
        pos = summed > 0  # ranking losses read only positives
        if not pos.any():
            return None
        keys, weight = keys[pos], summed[pos]
        rows = (keys // n_items).astype(np.int64)
        cols = (keys % n_items).astype(np.int32)
        batch_users, local = np.unique(rows, return_inverse=True)   # rows are sorted
        local = local.astype(np.int32)
        data = np.ones(len(local), np.float32)
        indptr = np.zeros(len(batch_users) + 1, np.int32)
        np.cumsum(np.bincount(local, minlength=len(batch_users)), out=indptr[1:])
        lookup = CSRMatrix(_CSR(cols, indptr, data, (len(batch_users), n_items)))
        return _RankingBatch(batch_users, local, cols, data, weight, lookup)

    def _run_kernel(self, batch: _RankingBatch, user_csr: CSRMatrix, params, epochs: int,
                    num_threads: int, on_epoch: Callable[[int], None] | None,
                    write_back: Callable[[], None] | None) -> None:
        """The epochs. Without callbacks (micro-batches) they go in one call: the same
        examples in the same order (one shuffle per epoch), so the item side's rescaling
        pass runs once, not per epoch (8 ms of a 10-epoch batch at 100 k items); only the
        kernel's random stream for negatives is seeded once per call instead of once per
        epoch. With a callback, each epoch is a call and the callback sees the parameters
        written back and checked finite."""
        m = self.lightfm
        kernel = _KERNELS[self.params.loss]
        item_csr = self._item_csr()
        fold = on_epoch is None and m.item_alpha == 0 and epochs > 1
        examples = (batch.local, batch.items, batch.data, batch.weight)
        if fold:
            examples = tuple(np.tile(a, epochs) for a in examples)
        for call in range(1 if fold else epochs):
            shuffle = _shuffle(len(batch.local), epochs if fold else 1, m.random_state)
            kernel(item_csr, user_csr, batch.lookup, *examples, shuffle, params,
                   m.learning_rate, m.item_alpha, m.user_alpha, num_threads, m.random_state)
            if on_epoch is not None:
                if write_back is not None:
                    write_back()
                m._check_finite()  # a progress callback sees only finite parameters
                on_epoch(call)

    def _lightfm_data(self, user_columns: np.ndarray):
        """LightFM's parameter bundle with the item arrays themselves and compact copies of
        these user feature rows (the six user arrays), which :meth:`_write_back` returns."""
        from lightfm._lightfm_fast import FastLightFM

        m = self.lightfm
        users = [np.ascontiguousarray(getattr(m, f"user_{a}")[user_columns]) for a in ARRAYS]
        params = FastLightFM(m.item_embeddings, m.item_embedding_gradients,
                             m.item_embedding_momentum, m.item_biases, m.item_bias_gradients,
                             m.item_bias_momentum, *users, m.no_components,
                             int(m.learning_schedule == "adadelta"), m.learning_rate, m.rho,
                             m.epsilon, m.max_sampled)
        return params, users

    def _write_back(self, user_columns: np.ndarray, users: list[np.ndarray]) -> None:
        m = self.lightfm
        for a, block in zip(ARRAYS, users):
            getattr(m, f"user_{a}")[user_columns] = block

    def _stale_item_features(self, columns: np.ndarray) -> None:
        """The item representations that an update of these feature rows moved: the items
        having any of them (a hashed metadata column is shared; an identity column is one
        item's), recomputed on the next :meth:`item_representations`. A WARP step moves
        the positive and at most one sampled negative, so a small batch moves few items;
        recomputing all of them was 28 ms a batch at 100 k items, 360 ms at 1 M."""
        if self._item_reps is None or len(columns) == 0:
            return
        matrix = self.items.matrix()
        cached = self._item_csc_cache
        if cached is None or cached[0] is not matrix:
            cached = self._item_csc_cache = (matrix, matrix.tocsc())
        csc = cached[1]
        starts = csc.indptr[columns].astype(np.int64)
        rows = csc.indices[ranges(starts, csc.indptr[columns + 1] - starts)]
        if len(rows) > self.item_capacity // 4:
            self._item_reps = None
        else:
            self._stale_items.append(rows)

    def _check_touched_finite(self, user_columns: np.ndarray, item_rows: np.ndarray) -> None:
        """LightFM's divergence check (``_check_finite``) on what a small update can have
        made non-finite first: the batch users' feature rows, the positives' item feature
        rows and every item bias (sampled negatives move anywhere; their biases move with
        their embeddings). LightFM's own check sums every array: ~20 ms a batch at a
        million users, for one event."""
        m = self.lightfm
        item_columns = np.unique(_csr_rows(self.items.matrix(), item_rows).indices)
        if not (np.isfinite(m.user_embeddings[user_columns].sum())
                and np.isfinite(m.user_biases[user_columns].sum())
                and np.isfinite(m.item_embeddings[item_columns].sum())
                and np.isfinite(m.item_biases.sum())):
            raise ValueError("Not all estimated parameters are finite, your model may have "
                             "diverged. Try decreasing the learning rate or normalising "
                             "feature values and sample weights.")

    def _item_csr(self) -> CSRMatrix:
        """LightFM's wrapper of the item feature matrix, rebuilt only when it changes."""
        matrix = self.items.matrix()
        cached = self._item_csr_cache
        if cached is None or cached[0] is not matrix:
            cached = self._item_csr_cache = (matrix, CSRMatrix(matrix))
        return cached[1]

    # ----------------------------------------------------------------- scoring
    def item_representations(self) -> tuple[np.ndarray, np.ndarray]:
        """(biases, embeddings) of every item row, kept current: recomputed in full after
        growth, a metadata change or a large update, else only for the rows the last
        updates moved (in place; ``item_reps_version`` says when they changed)."""
        matrix = self.items.matrix()
        if self._item_reps is None or self._item_reps_matrix is not matrix:
            bias, emb = self.lightfm.get_item_representations(matrix)
            self._item_reps = (np.ascontiguousarray(bias, np.float32),
                               np.ascontiguousarray(emb, np.float32))
            self._item_reps_matrix = matrix
            self._stale_items = []
            self.item_reps_version += 1
        elif self._stale_items:
            rows = np.unique(np.concatenate(self._stale_items))
            self._stale_items = []
            bias, emb = self._item_reps
            bias[rows], emb[rows] = self._feature_sums(matrix, rows, self.lightfm.item_biases,
                                                       self.lightfm.item_embeddings)
            self.item_reps_version += 1
        return self._item_reps

    @staticmethod
    def _feature_sums(matrix: sp.csr_matrix, rows: np.ndarray, biases: np.ndarray,
                      embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(bias, embedding) representations of these rows of a feature matrix: each row's
        features times the feature arrays, summed (every row has its identity column)."""
        sub = _csr_rows(matrix, rows)
        firsts = sub.indptr[:-1]
        emb = np.add.reduceat(embeddings[sub.indices] * sub.data[:, None], firsts, axis=0)
        bias = np.add.reduceat(biases[sub.indices] * sub.data, firsts)
        return bias.astype(np.float32), emb.astype(np.float32)

    def user_representations(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(biases, embeddings) of these user rows: their feature rows times the feature
        arrays, summed per row (what LightFM's ``get_user_representations`` computes for a
        whole feature matrix, without building one)."""
        rows = np.asarray(rows, dtype=np.int64)
        m = self.lightfm
        if len(rows) == 0:
            return np.empty(0, np.float32), np.empty((0, m.no_components), np.float32)
        return self._feature_sums(self.users.matrix(), rows, m.user_biases, m.user_embeddings)

    def scores(self, user_rows: np.ndarray, n_items: int | None = None) -> np.ndarray:
        """(len(user_rows) x n_items) scores of the first ``n_items`` item rows (default:
        every row, dummies included); one matrix product for the whole batch."""
        _, u_emb = self.user_representations(user_rows)
        i_bias, i_emb = self.item_representations()
        if n_items is not None:
            i_bias, i_emb = i_bias[:n_items], i_emb[:n_items]
        out = u_emb @ i_emb.T
        out += i_bias
        return out

    # ----------------------------------------------------------------- persistence
    def save(self, path: Path, meta: dict | None = None) -> None:
        """Write ``path`` (.npz) and ``path.with_suffix('.json')`` atomically (tmp + rename)."""
        write_snapshot(path, *self.snapshot(meta))

    def snapshot(self, meta: dict | None = None,
                 into: dict[str, np.ndarray] | None = None) -> tuple[dict[str, np.ndarray], dict]:
        """Copies of every state array and the JSON document: what :func:`write_snapshot`
        writes. Copying is a memcpy (~1 ms per 4 MB), so the slow part, writing and
        syncing the files, can run in a thread while training goes on.

        ``into``: buffers of an earlier snapshot that nothing reads any more, filled in place
        where shapes match (and replaced in the dict where they do not). Fresh allocations
        cost far more than the copy: at 1 M users the first two 180 MB arrays took 0.5 s each
        (likely the kernel compacting memory for numpy's huge pages), a copy into reused buffers
        0.07 s for all twelve."""
        arrays = {}
        for s in SIDES:
            for a in ARRAYS:
                key, src = f"{s}_{a}", getattr(self.lightfm, f"{s}_{a}")
                buf = into.get(key) if into is not None else None
                if buf is not None and buf.shape == src.shape and buf.dtype == src.dtype:
                    np.copyto(buf, src)
                else:
                    buf = src.copy()
                    if into is not None:
                        into[key] = buf
                arrays[key] = buf
        rng = self.lightfm.random_state.get_state()
        arrays["rng_state_keys"] = rng[1].copy()
        doc = {"format": "streamrec-model/1", "params": asdict(self.params),
               "user_capacity": self.user_capacity, "item_capacity": self.item_capacity,
               "rng_state": [int(rng[2]), int(rng[3]), float(rng[4])],
               "user_features": {str(r): f for r, f in self.users.items()},
               "item_features": {str(r): f for r, f in self.items.items()},
               **(meta or {})}
        return arrays, doc

    @classmethod
    def load(cls, path: Path) -> tuple["PaddedLightFM", dict]:
        """Load a checkpoint; returns the model and its JSON document (offsets, version...)."""
        path = Path(path)
        try:
            doc = json.loads(path.with_suffix(".json").read_text())
            npz = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ModelStateError(f"cannot read model checkpoint {path}: {exc}; delete the "
                                  "state dir to start over or run 'streamrec retrain'") from exc
        if doc.get("format") != "streamrec-model/1":
            raise ModelStateError(f"{path} is not a streamrec model checkpoint")
        model = cls(ModelParams(**doc["params"]), doc["user_capacity"], doc["item_capacity"])
        for s in SIDES:
            for a in ARRAYS:
                setattr(model.lightfm, f"{s}_{a}", np.ascontiguousarray(npz[f"{s}_{a}"]))
        pos, has_gauss, gauss = doc["rng_state"]
        model.lightfm.random_state.set_state(("MT19937", npz["rng_state_keys"], pos, has_gauss,
                                              gauss))
        for r, f in doc.get("user_features", {}).items():
            model.users.set(int(r), f)
        for r, f in doc.get("item_features", {}).items():
            model.items.set(int(r), f)
        model.users.dirty_rows.clear()
        model.items.dirty_rows.clear()
        return model, doc


class _RankingBatch(NamedTuple):
    """A micro-batch as LightFM's ranking kernel reads it (:meth:`PaddedLightFM._ranking_batch`)."""

    users: np.ndarray
    """The batch's user rows, sorted; example ``k``'s user is ``users[local[k]]``."""
    local: np.ndarray
    items: np.ndarray
    data: np.ndarray
    weight: np.ndarray
    lookup: CSRMatrix
    """Each local user's positives: what WARP must not sample as a negative."""


def _shuffle(n: int, epochs: int, rng: np.random.RandomState) -> np.ndarray:
    """The order of ``epochs`` passes over ``n`` examples tiled end to end: each pass its
    own shuffle, drawn from ``rng`` in pass order (as per-epoch calls draw them)."""
    if epochs == 1:
        shuffle = np.arange(n, dtype=np.int32)
        rng.shuffle(shuffle)
        return shuffle
    shuffle = np.empty(n * epochs, np.int32)
    for e in range(epochs):
        part = np.arange(n, dtype=np.int32)
        rng.shuffle(part)
        shuffle[e * n:(e + 1) * n] = part + e * n
    return shuffle


class _CSR(NamedTuple):
    """The attributes LightFM's ``CSRMatrix`` wrapper reads, without scipy's checks
    (a micro-batch builds two: ~12 µs each through ``sp.csr_matrix``)."""

    indices: np.ndarray
    indptr: np.ndarray
    data: np.ndarray
    shape: tuple[int, int]


def _csr_rows(m: sp.csr_matrix, rows: np.ndarray) -> _CSR:
    """Rows of a CSR matrix as a :class:`_CSR` (scipy's fancy row indexing: ~100 µs)."""
    rows = np.asarray(rows, np.int64)
    starts = m.indptr[rows].astype(np.int64)
    lens = m.indptr[rows + 1].astype(np.int64) - starts
    idx = ranges(starts, lens)
    indptr = np.zeros(len(rows) + 1, np.int32)
    np.cumsum(lens, out=indptr[1:])
    return _CSR(m.indices[idx], indptr, m.data[idx], (len(rows), m.shape[1]))


def _compact_columns(rows: _CSR) -> tuple[np.ndarray, _CSR]:
    """The feature columns these CSR rows use, and the rows with their columns renumbered
    0..C-1 in that order."""
    columns, inverse = np.unique(rows.indices, return_inverse=True)
    return columns, rows._replace(indices=inverse.astype(np.int32),
                                  shape=(rows.shape[0], len(columns)))


def write_snapshot(path: Path, arrays: dict[str, np.ndarray], doc: dict) -> None:
    """Write a :meth:`PaddedLightFM.snapshot` as ``path`` (.npz) and its ``.json``, each
    atomically (tmp + fsync + rename); thread-safe, touches no live model state."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda f: np.savez(f, **arrays))
    _atomic_write(path.with_suffix(".json"),
                  lambda f: f.write(json.dumps(doc, separators=(",", ":")).encode()))
    fsync_dir(path.parent)   # the renames themselves survive a power cut


def _atomic_write(path: Path, write: Callable) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
