"""An approximate top-N index (IVF) over item vectors, for catalogues where exact scan is slow.

The exact scan scores every item for every user and then partitions each row: at 100 k items
that is ~1 ms per list, at 1 M ~12 ms (docs/benchmarks.md). This index clusters the items'
``[embedding, bias]`` vectors with k-means into ``~4 sqrt(N)`` inverted lists; a query
``[user_embedding, 1]`` ranks the centroids by inner product, probes the best lists until
about ``n_candidates`` items are gathered, and scores only those, with the vectors passed in
*now*. The inner product is LightFM's score minus the user's bias, which does not change a
user's ranking, so what comes back is what :func:`stream_app.topn.top_n` would return
whenever the true top items were among the candidates.

Training moves items every micro-batch, so the index is a cache of *where to look*, never
of scores: membership may go stale (an item that drifted sits in a list whose centroid no
longer suits it), but candidates are always scored with current vectors. Keeping it usable:

- :meth:`IVFIndex.update` re-assigns the given rows (touched or new) to their nearest centroid
  with the current vectors; cost ~ rows x lists x dim flops plus an O(N) re-sort of the
  lists on the next query.
- Rows the index has never seen (``n_indexed <= row < n_valid_items``) are candidates for
  every query until an update assigns them, so a new item is reachable at once.
- :meth:`IVFIndex.rebuild` re-clusters from scratch (~1 s CPU at 100 k items, ~15 s at 1 M:
  run it off the list path). Policy (:meth:`IVFIndex.needs_rebuild`): rebuild when a
  sample says more than 20 % of the rows are no longer in their nearest list, when the
  catalogue grew 25 % since the build, or after an hour, whichever first;
  ``bench/ann.py`` measures how recall decays with drift between rebuilds.

Dummy rows (``>= n_valid_items``) are never returned, nor are excluded items.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Sequence

import numpy as np

from stream_app.topn import top_n
from stream_app.useritems import ranges
from streamrec.errors import StreamrecError

log = logging.getLogger(__name__)

Lists = list[tuple[np.ndarray, np.ndarray]]
"""Best-first ``(item rows, scores)`` per user, as :func:`stream_app.topn.top_n` returns."""

_ASSIGN_CHUNK = 8192
"""Rows per nearest-centroid product: bounds its (chunk x lists) float32 temporary."""
_GATHER_FLOATS = 1 << 20
"""Floats of gathered candidate vectors per scoring chunk (4 MiB): stays in cache."""


class IndexStateError(StreamrecError):
    """The index was used before :meth:`IVFIndex.build`, or with vectors of another shape."""


def score_candidates(user_emb: np.ndarray, cand: np.ndarray, item_emb: np.ndarray,
                     item_bias: np.ndarray | None) -> np.ndarray:
    """Current scores of each user's candidate item rows (-inf for padding, -1), a chunk
    of users at a time so the gathered vectors stay in cache."""
    n_users, width = cand.shape
    out = np.empty((n_users, width), np.float32)
    step = max(1, _GATHER_FLOATS // max(1, width * item_emb.shape[1]))
    q = np.ascontiguousarray(user_emb, dtype=np.float32)
    for s in range(0, n_users, step):
        c = cand[s:s + step]
        safe = np.where(c >= 0, c, 0)
        # np.take copies whole rows; item_emb[safe] goes element by element (4x slower)
        block = np.matmul(np.take(item_emb, safe, axis=0), q[s:s + step, :, None])[..., 0]
        if item_bias is not None:
            block += np.take(item_bias, safe)
        block[c < 0] = -np.inf
        out[s:s + step] = block
    return out


def default_lists(n_items: int) -> int:
    """``4 sqrt(N)`` lists (faiss' rule of thumb), at least 1 and at most ``N``."""
    return int(min(max(n_items, 1), max(1, round(4.0 * np.sqrt(max(n_items, 1))))))


def default_candidates(n_items: int) -> int:
    """Candidates scored per query: ``8 sqrt(N)``, at least 1,000 (all of a small catalogue).

    That is ~32 of the ``4 sqrt(N)`` lists: on trained models (bench/ann.py) recall@20
    follows the number of lists probed more than the share of items, and was 0.997-0.999
    with these from 10 k to 1 M items (10 % of the items at 10 k, 2.5 % at 100 k, 0.8 % at
    1 M; 28x faster than exact at 1 M, 7x at 100 k, 1.2x at 10 k).
    """
    return int(min(n_items, max(1000, round(8.0 * np.sqrt(max(n_items, 0))))))


def augmented(emb: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """``[emb, bias]`` rows as one contiguous float32 array (bias 0 when None)."""
    out = np.empty((emb.shape[0], emb.shape[1] + 1), np.float32)
    out[:, :-1] = emb
    out[:, -1] = 0.0 if bias is None else bias
    return out


def nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Nearest centroid (squared L2) of each row of ``x``, in chunks of one product each.

    ``argmin |x - c|^2 = argmax (x.c - |c|^2 / 2)``: one BLAS product per chunk, no
    (rows x lists x dim) temporary.
    """
    half = 0.5 * np.einsum("ij,ij->i", centroids, centroids)
    out = np.empty(len(x), np.int32)
    for s in range(0, len(x), _ASSIGN_CHUNK):
        prod = x[s:s + _ASSIGN_CHUNK] @ centroids.T
        prod -= half
        out[s:s + _ASSIGN_CHUNK] = prod.argmax(axis=1)
    return out


def kmeans(x: np.ndarray, n_lists: int, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """Lloyd's k-means on ``x`` from ``n_lists`` distinct random rows; returns centroids.

    An emptied cluster is re-seeded with a random row, so every centroid stays in the data.
    """
    n = len(x)
    centroids = x[rng.choice(n, n_lists, replace=False)].astype(np.float32, copy=True)
    for _ in range(iterations):
        labels = nearest(x, centroids)
        counts = np.bincount(labels, minlength=n_lists)
        # A bincount per column: ~10x faster than np.add.at on (rows x dim).
        sums = np.stack([np.bincount(labels, weights=col, minlength=n_lists) for col in x.T],
                        axis=1)
        filled = counts > 0
        centroids[filled] = (sums[filled] / counts[filled, None]).astype(np.float32)
        empty = np.flatnonzero(~filled)
        if len(empty):
            centroids[empty] = x[rng.choice(n, len(empty), replace=False)]
    return centroids


class IVFIndex:
    """Inverted-file index over item rows; see the module docstring for the contract.

    ``n_lists`` None means :func:`default_lists` of the items at each build. The k-means
    runs ``iterations`` Lloyd steps on a seeded sample of ``sample_per_list`` rows per list,
    so a build is deterministic for a seed and costs O(sample x lists x dim) per step plus
    one nearest-centroid pass over every row.
    """

    def __init__(self, n_lists: int | None = None, seed: int = 0, iterations: int = 6,
                 sample_per_list: int = 32, rebuild_misassigned: float = 0.2,
                 rebuild_growth: float = 0.25, rebuild_age_s: float = 3600.0) -> None:
        self.n_lists_setting = n_lists
        self.seed = seed
        self.iterations = iterations
        self.sample_per_list = sample_per_list
        self.rebuild_misassigned = rebuild_misassigned
        self.rebuild_growth = rebuild_growth
        self.rebuild_age_s = rebuild_age_s
        self.centroids: np.ndarray | None = None
        self.assign = np.empty(0, np.int32)
        self.built_at = 0.0
        self.n_built = 0
        self._touched = np.zeros(0, bool)
        self._fresh = False
        self._members = np.empty(0, np.int64)
        self._offsets = np.zeros(1, np.int64)
        self._pos = np.empty(0, np.int64)
        self._valid_sizes: tuple[int, np.ndarray] = (-1, np.empty(0, np.int64))

    # ----------------------------------------------------------------- state
    @property
    def n_indexed(self) -> int:
        """Rows ``[0, n_indexed)`` are in lists; later rows are scored for every query."""
        return len(self.assign)

    @property
    def n_lists(self) -> int:
        return 0 if self.centroids is None else len(self.centroids)

    @property
    def stale_fraction(self) -> float:
        """Share of indexed rows re-assigned (or added) since the last build."""
        return float(self._touched.mean()) if len(self._touched) else 0.0

    @property
    def growth(self) -> float:
        """Rows added since the last build, as a share of the rows it clustered."""
        return (self.n_indexed - self.n_built) / max(1, self.n_built)

    def list_sizes(self) -> np.ndarray:
        return np.bincount(self.assign, minlength=self.n_lists)

    def misassigned(self, item_emb: np.ndarray, item_bias: np.ndarray | None = None,
                    sample: int = 2048) -> float:
        """Estimated share of indexed rows not in their nearest list *now*, from a seeded
        sample: what drifted without being passed to :meth:`update` (WARP moves every
        sampled negative, and a caller knows only the batch's items)."""
        self._require_built()
        rng = np.random.default_rng(self.seed + 1)
        rows = rng.choice(self.n_indexed, min(sample, self.n_indexed), replace=False)
        x = augmented(item_emb[rows], None if item_bias is None else item_bias[rows])
        return float((nearest(x, self.centroids) != self.assign[rows]).mean())

    def needs_rebuild(self, item_emb: np.ndarray | None = None,
                      item_bias: np.ndarray | None = None, now: float | None = None) -> bool:
        """The rebuild policy: the build is older than ``rebuild_age_s``, the catalogue grew
        by ``rebuild_growth`` since, or (when the current vectors are passed, ~1 ms) more
        than ``rebuild_misassigned`` of the rows sit in a list that is no longer theirs.

        :meth:`update` puts rows into the list whose centroid is nearest now, but the
        centroids were fitted to the embeddings of the build: new items in a region no
        centroid covers, and rows that moved unreported, make probes need more lists for
        the same recall. bench/ann.py measured no recall loss at up to ~35 % misassigned
        rows (120 k events after the build), so 20 % is on the safe side; the growth bound
        is a judgement (that bench adds only 1 % new items).
        """
        if self.centroids is None:
            return True
        age = (time.monotonic() if now is None else now) - self.built_at
        if age >= self.rebuild_age_s or self.growth >= self.rebuild_growth:
            return True
        return item_emb is not None and \
            self.misassigned(item_emb, item_bias) >= self.rebuild_misassigned

    # ----------------------------------------------------------------- building
    def build(self, item_emb: np.ndarray, item_bias: np.ndarray | None = None,
              n_items: int | None = None) -> "IVFIndex":
        """Cluster rows ``[0, n_items)`` (default all) of ``[item_emb, item_bias]``.

        Pass only assigned rows (``n_items`` = valid items): padding rows would take list
        slots, although they are never returned.
        """
        n = len(item_emb) if n_items is None else int(n_items)
        if n <= 0:
            raise IndexStateError("cannot build an index over 0 items; build it once the "
                                  "catalogue has items, or use exact top_n until then")
        t0 = time.perf_counter()
        x = augmented(item_emb[:n], None if item_bias is None else item_bias[:n])
        n_lists = min(n, self.n_lists_setting or default_lists(n))
        rng = np.random.default_rng(self.seed)
        sample = min(n, max(n_lists, self.sample_per_list * n_lists))
        train = x if sample == n else x[np.sort(rng.choice(n, sample, replace=False))]
        self.centroids = kmeans(train, n_lists, self.iterations, rng)
        self.assign = nearest(x, self.centroids)
        self._touched = np.zeros(n, bool)
        self._fresh = False
        self.built_at = time.monotonic()
        self.n_built = n
        log.info("ann index built: %d items in %d lists in %.2f s", n, n_lists,
                 time.perf_counter() - t0)
        return self

    def rebuild(self, item_emb: np.ndarray, item_bias: np.ndarray | None = None,
                n_items: int | None = None) -> "IVFIndex":
        """A fresh build with the same settings (new centroids from the current vectors)."""
        return self.build(item_emb, item_bias, n_items)

    def update(self, rows: np.ndarray | Sequence[int], item_emb: np.ndarray,
               item_bias: np.ndarray | None = None) -> None:
        """Re-assign ``rows`` (item rows whose vectors changed, or new ones) to the nearest
        centroid, reading their current vectors from the full ``item_emb``/``item_bias``.

        Rows past the indexed ones extend the index, together with any rows in between
        (they are new too), so the index never has a gap of rows no list holds.
        """
        self._require_built()
        rows = np.unique(np.asarray(rows, np.int64))
        if len(rows) == 0:
            return
        if rows[0] < 0:
            raise IndexStateError(f"item row {rows[0]} is negative; pass model item rows")
        n0 = self.n_indexed
        top = int(rows[-1]) + 1
        if top > len(item_emb):
            raise IndexStateError(f"row {top - 1} is beyond the {len(item_emb)} item vectors "
                                  "passed; pass the model's full item arrays")
        if top > n0:
            rows = np.union1d(rows, np.arange(n0, top))
            self.assign = np.concatenate([self.assign, np.zeros(top - n0, np.int32)])
            self._touched = np.concatenate([self._touched, np.zeros(top - n0, bool)])
        x = augmented(item_emb[rows], None if item_bias is None else item_bias[rows])
        self.assign[rows] = nearest(x, self.centroids)
        self._touched[rows] = True
        self._fresh = False

    def _require_built(self) -> None:
        if self.centroids is None:
            raise IndexStateError("the ANN index has not been built; call build(item_emb, "
                                  "item_bias, n_items) first")

    def refresh(self) -> None:
        """Lay out the members of every list (CSR) and each row's slot in its list.

        Runs on the first query after a build or an update (O(N): a radix sort of the row
        assignments); call it after :meth:`update` to pay it outside the list path.
        """
        if self._fresh:
            return
        n_lists = self.n_lists
        key = self.assign.astype(np.uint16) if n_lists <= 1 << 16 else self.assign
        self._members = np.argsort(key, kind="stable")      # radix sort for uint16 keys
        counts = np.bincount(self.assign, minlength=n_lists)
        self._offsets = np.concatenate([[0], np.cumsum(counts)])
        self._pos = np.empty(self.n_indexed, np.int64)
        self._pos[self._members] = np.arange(self.n_indexed) - \
            np.repeat(self._offsets[:-1], counts)
        self._valid_sizes = (-1, self._valid_sizes[1])
        self._fresh = True

    # ----------------------------------------------------------------- querying
    def _sizes(self, n_valid: int) -> np.ndarray:
        """Valid items per list: a list's members are in row order, so its valid ones
        (``< n_valid``) are the first ``sizes[l]`` and dummy rows are never even gathered."""
        if n_valid >= self.n_indexed:
            return np.diff(self._offsets)
        if self._valid_sizes[0] != n_valid:
            self._valid_sizes = (n_valid, np.bincount(self.assign[:n_valid],
                                                      minlength=self.n_lists))
        return self._valid_sizes[1]

    def probe(self, user_emb: np.ndarray, n_candidates: int, n_valid_items: int | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The lists each user probes, best centroid first, until ``n_candidates`` valid
        items (rows below ``n_valid_items``, default all indexed ones).

        Returns ``(pair_user, pair_list, pair_start, sizes)``: one entry per probed
        (user, list), users in order, where the list's items start in that user's candidate
        row, and the valid items per list.
        """
        self._require_built()
        self.refresh()
        n_users, n_lists = len(user_emb), self.n_lists
        sizes = self._sizes(self.n_indexed if n_valid_items is None else int(n_valid_items))
        cs = user_emb @ self.centroids[:, :-1].T
        cs += self.centroids[:, -1]
        # Probe depth if lists were all of the average size, with slack; users whose
        # lists turn out small get the full order.
        guess = int(np.ceil(n_candidates * n_lists / max(self.n_indexed, 1)))
        depth = min(n_lists, 2 * guess + 8)
        if depth < n_lists:
            part = np.argpartition(-cs, depth - 1, axis=1)[:, :depth]
            order = np.take_along_axis(part, np.argsort(-np.take_along_axis(cs, part, 1),
                                                        axis=1, kind="stable"), 1)
            short = sizes[order].sum(axis=1) < n_candidates
            if short.any():
                depth = n_lists
        if depth == n_lists:
            order = np.argsort(-cs, axis=1, kind="stable")
        got = np.cumsum(sizes[order], axis=1)
        # Probe list j while the lists before it hold fewer than n_candidates items.
        n_probe = np.minimum((got < n_candidates).sum(axis=1) + 1, order.shape[1])
        keep = np.arange(order.shape[1])[None, :] < n_probe[:, None]
        pair_user = np.repeat(np.arange(n_users), n_probe)
        pair_list = order[keep]
        pair_start = (got - sizes[order])[keep]
        return pair_user, pair_list.astype(np.int64), pair_start, sizes

    def candidates(self, user_emb: np.ndarray, n_candidates: int | None = None,
                   n_valid_items: int | None = None) -> np.ndarray:
        """(users x width) item rows each user's query would score, -1 padded.

        Rows the index has not seen yet (``n_indexed`` up to ``n_valid_items``) come first
        in every row; dummy rows (``>= n_valid_items``) are never among them.
        """
        cand, *_ = self._candidates(user_emb, n_candidates, n_valid_items)
        return cand

    def _candidates(self, user_emb: np.ndarray, n_candidates: int | None,
                    n_valid_items: int | None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        n_valid = self.n_indexed if n_valid_items is None else int(n_valid_items)
        c = default_candidates(n_valid) if n_candidates is None else int(n_candidates)
        pu, pl, ps, list_sizes = self.probe(user_emb, max(1, c), n_valid)
        n_tail = max(0, n_valid - self.n_indexed)
        sizes = list_sizes[pl]
        lengths = np.bincount(pu, weights=sizes, minlength=len(user_emb)).astype(np.int64)
        width = n_tail + (int(lengths.max()) if len(lengths) else 0)
        cand = np.full((len(user_emb), width), -1, np.int64)
        if n_tail:
            cand[:, :n_tail] = np.arange(self.n_indexed, n_valid)
        src = ranges(self._offsets[pl], sizes)
        dst = ranges(pu * width + n_tail + ps, sizes)
        cand.ravel()[dst] = self._members[src]
        return cand, pu, pl, ps, n_tail

    def search(self, user_emb: np.ndarray, item_emb: np.ndarray,
               item_bias: np.ndarray | None, n: int, n_valid_items: int,
               exclude: Sequence[Collection[int]] | None = None,
               n_candidates: int | None = None) -> Lists:
        """Best ``n`` item rows per user among the probed candidates, best first.

        Same inputs and output as :func:`stream_app.topn.top_n` on
        ``user_emb @ item_emb.T + item_bias`` (the model's current full item arrays),
        except that only ``~n_candidates`` items per user are scored
        (default :func:`default_candidates`). Items in ``exclude[i]`` and rows
        ``>= n_valid_items`` are never returned.
        """
        self._require_built()
        n_users = len(user_emb)
        if item_emb.shape[1] + 1 != self.centroids.shape[1]:
            raise IndexStateError(f"index built on {self.centroids.shape[1] - 1}-dimensional "
                                  f"items, queried with {item_emb.shape[1]}; rebuild it")
        if n_users == 0:
            return []
        cand, pu, pl, ps, n_tail = self._candidates(user_emb, n_candidates, n_valid_items)
        scores = score_candidates(user_emb, cand, item_emb, item_bias)
        if exclude is not None:
            self._mask(scores, exclude, pu, pl, ps, n_tail, n_valid_items)
        picked = top_n(scores, n, scores.shape[1], [()] * n_users)
        return [(cand[u, pos], sc) for u, (pos, sc) in enumerate(picked)]

    def _mask(self, scores: np.ndarray, exclude: Sequence[Collection[int]], pu: np.ndarray,
              pl: np.ndarray, ps: np.ndarray, n_tail: int, n_valid: int) -> None:
        """-inf where a user's candidate is one of their excluded items, found through each
        item's list and slot, not by searching the candidate rows."""
        lens = [len(e) for e in exclude]
        if not sum(lens):
            return
        users = np.repeat(np.arange(len(exclude)), lens)
        items = np.concatenate([np.fromiter(e, np.int64, len(e)) for e in exclude])
        n_idx = self.n_indexed
        start = np.full((len(exclude), self.n_lists), -1, np.int64)
        start[pu, pl] = ps + n_tail
        listed = items < min(n_idx, n_valid)
        u, it = users[listed], items[listed]
        col = start[u, self.assign[it]]
        hit = col >= 0
        scores[u[hit], col[hit] + self._pos[it[hit]]] = -np.inf
        tail = (items >= n_idx) & (items < n_valid)
        scores[users[tail], items[tail] - n_idx] = -np.inf
