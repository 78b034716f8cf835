"""What a list is besides a hit or a miss: coverage, novelty, diversity, popularity bias, and
how soon new items are shown.

Every function takes the lists a prequential run served as one ``(lists x n)`` int array of
item codes, ``-1`` where a list was shorter, so each is a few vectorised numpy lines and the
same numbers come out for any model (streamrec variants, peers, baselines). Popularity is
always the *training part's* positives (what the model could know before the test window),
so a model cannot move its own yardstick.

Definitions (``docs/evaluation.md``, "Beyond accuracy"):

- catalogue coverage: share of the catalogue in at least one served list (``coverage`` of
  :class:`~streamrec_eval.prequential.RunResult`'s summary);
- novelty: mean self-information ``-log2 p(i)`` of recommended items, ``p(i)`` the item's
  Laplace-smoothed share of training positives (an item nobody liked yet is the most novel,
  not infinitely so);
- intra-list diversity: mean over lists of the mean pairwise ``1 - Jaccard`` of the items'
  genre sets;
- popularity bias: mean popularity percentile (mid-rank, 1 = most popular) of recommended
  items against that of the user's own history at the time of the list;
- new-item exposure: for items whose first event falls in the test window, how many events
  pass from that first event until the item first appears in any served list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from streamrec_eval.stream import Stream


def pad_lists(lists: Sequence[Sequence[int]], n: int) -> np.ndarray:
    """Ragged lists of item codes as one ``(len(lists) x n)`` array, ``-1`` padded."""
    out = np.full((len(lists), n), -1, np.int64)
    for k, lst in enumerate(lists):
        m = min(n, len(lst))
        out[k, :m] = np.asarray(lst, np.int64)[:m]
    return out


def item_counts(items: np.ndarray, n_items: int) -> np.ndarray:
    """How often each item code occurs (e.g. among training positives)."""
    return np.bincount(np.asarray(items, np.int64), minlength=n_items)[:n_items]


def self_information(counts: np.ndarray) -> np.ndarray:
    """``-log2`` of each item's Laplace-smoothed popularity share, in bits."""
    counts = np.asarray(counts, np.float64)
    return -np.log2((counts + 1.0) / (counts.sum() + len(counts)))


def popularity_percentile(counts: np.ndarray) -> np.ndarray:
    """Mid-rank percentile of each item's count in [0, 1]: the share of items less popular,
    plus half the share as popular (so ties, e.g. every never-liked item, share a value)."""
    counts = np.asarray(counts)
    srt = np.sort(counts)
    below = np.searchsorted(srt, counts, side="left")
    tied = np.searchsorted(srt, counts, side="right") - below
    return (below + 0.5 * tied) / len(counts)


def mean_over_entries(lists: np.ndarray, per_item: np.ndarray) -> float:
    """Mean of a per-item value over every served entry (novelty, popularity percentile)."""
    valid = lists >= 0
    return float(per_item[lists[valid]].mean()) if valid.any() else float("nan")


def genre_vectors(item_ids: Sequence[str], item_features: Mapping[str, Mapping[str, Any]],
                  key: str = "genre") -> np.ndarray:
    """(items x genres) 0/1 matrix from each item's ``features[key]`` (a string or a list of
    strings), columns in sorted order; an item without the key has an all-zero row."""
    def values(iid: str) -> list[str]:
        v = item_features.get(iid, {}).get(key, [])
        return [v] if isinstance(v, str) else list(v)

    names = sorted({g for iid in item_ids for g in values(iid)})
    col = {g: k for k, g in enumerate(names)}
    out = np.zeros((len(item_ids), len(names)), np.float32)
    for r, iid in enumerate(item_ids):
        for g in values(iid):
            out[r, col[g]] = 1.0
    return out


def intra_list_diversity(lists: np.ndarray, vectors: np.ndarray) -> float:
    """Mean over lists (with at least two entries) of the mean pairwise ``1 - Jaccard`` of
    the entries' 0/1 feature vectors. Two items without any feature count as identical."""
    valid = lists >= 0
    g = vectors[np.where(valid, lists, 0)] * valid[..., None]          # (lists, n, genres)
    inter = np.einsum("lig,ljg->lij", g, g)
    size = g.sum(axis=2)
    union = size[:, :, None] + size[:, None, :] - inter
    dist = np.where(union > 0, 1.0 - inter / np.maximum(union, 1e-12), 0.0)
    pair = valid[:, :, None] & valid[:, None, :]
    iu = np.triu_indices(lists.shape[1], k=1)
    d, p = dist[:, iu[0], iu[1]], pair[:, iu[0], iu[1]]
    n_pairs = p.sum(axis=1)
    keep = n_pairs > 0
    if not keep.any():
        return float("nan")
    return float(((d * p).sum(axis=1)[keep] / n_pairs[keep]).mean())


def history_means(users: np.ndarray, items: np.ndarray, per_item: np.ndarray,
                  at_users: np.ndarray, at_index: np.ndarray) -> np.ndarray:
    """For each (user, event index) query, the mean of ``per_item`` over the distinct items
    the user interacted with before that index (``nan`` without history).

    ``users``/``items``: every event in time order. Vectorised: events sorted by (user,
    time), cumulative sums, and one binary search for all queries.
    """
    users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
    n_items = max(int(items.max(initial=-1)) + 1, len(per_item))
    n_events = len(users)
    _, first = np.unique(users * n_items + items, return_index=True)
    keep = np.zeros(n_events, bool)
    keep[first] = True                                      # repeats add nothing
    order = np.lexsort((np.arange(n_events), users))        # by user, then time
    key = users[order] * n_events + order                   # sorted: (user, event index)
    vals = np.where(keep[order], per_item[items[order]], 0.0)
    cnt = np.concatenate([[0], np.cumsum(keep[order])])
    csum = np.concatenate([[0.0], np.cumsum(vals)])
    at_users = np.asarray(at_users, np.int64)
    start = np.searchsorted(key, at_users * n_events, side="left")
    stop = np.searchsorted(key, at_users * n_events + np.asarray(at_index, np.int64),
                           side="left")
    n = cnt[stop] - cnt[start]
    total = csum[stop] - csum[start]
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def popularity_bias(lists: np.ndarray, percentile: np.ndarray,
                    history: np.ndarray) -> dict[str, float]:
    """Recommended items' mean popularity percentile, the users' own history's, and the mean
    per-list difference (``lift`` > 0: lists more mainstream than the user's own taste)."""
    valid = lists >= 0
    per_list = np.where(valid, percentile[np.where(valid, lists, 0)], 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_list = per_list / valid.sum(axis=1)
    both = np.isfinite(per_list) & np.isfinite(history)
    return {"rec_popularity_pct": round(mean_over_entries(lists, percentile), 4),
            "history_popularity_pct": round(float(np.nanmean(history[both])), 4)
            if both.any() else float("nan"),
            "popularity_lift": round(float((per_list[both] - history[both]).mean()), 4)
            if both.any() else float("nan")}


def first_shown(lists: np.ndarray, list_index: np.ndarray, n_items: int,
                since: np.ndarray | None = None) -> np.ndarray:
    """Per item, the event index of the first list showing it at or after ``since[item]``
    (default: ever); ``-1`` if never."""
    valid = lists >= 0
    items = lists[valid]
    at = np.broadcast_to(np.asarray(list_index)[:, None], lists.shape)[valid]
    if since is not None:
        ok = at >= since[items]
        items, at = items[ok], at[ok]
    big = np.iinfo(np.int64).max
    out = np.full(n_items, big, np.int64)
    np.minimum.at(out, items, at)
    out[out == big] = -1
    return out


def new_item_exposure(lists: np.ndarray, list_index: np.ndarray, stream_items: np.ndarray,
                      split: int, hits: np.ndarray | None = None) -> dict[str, float]:
    """How fast items first seen in the test window get shown.

    New items: items with no event before ``split``. Delay: events (of the whole stream)
    from an item's first event until the first served list at or after it that shows it;
    items never shown afterwards are censored, so the median is None ("never", plain JSON)
    when fewer than half were shown. ``hits`` (per list, aligned with ``list_index``) adds hit@n over the
    positives on new items. In a replay of logged data the lists do not change what users
    do, so this measures exposure, not the clicks exposure would have earned.
    """
    stream_items = np.asarray(stream_items, np.int64)
    n_items = int(max(stream_items.max(initial=-1) + 1, lists.max(initial=-1) + 1))
    first_event = np.full(n_items, -1, np.int64)
    codes, first = np.unique(stream_items, return_index=True)
    first_event[codes] = first
    new = np.flatnonzero(first_event >= split)
    since = np.where(first_event >= 0, first_event, 0)
    shown = first_shown(lists, list_index, n_items, since)
    delay = np.where(shown[new] >= 0, shown[new] - first_event[new], np.inf)
    median = float(np.median(delay)) if len(new) else float("nan")
    out = {"new_items": int(len(new)),
           "new_items_shown": round(float(np.isfinite(delay).mean()), 4)
           if len(new) else float("nan"),
           "new_item_median_delay": None if median == np.inf else median}
    if hits is not None:
        on_new = np.isin(stream_items[np.asarray(list_index)], new)
        out["new_item_positives"] = int(on_new.sum())
        out["new_item_hit"] = round(float(np.asarray(hits)[on_new].mean()), 4) \
            if on_new.any() else float("nan")
    return out


def measure(stream: "Stream", lists: np.ndarray, list_index: np.ndarray, split: int,
            hits: np.ndarray | None = None, threshold: float = 4.0) -> dict[str, float]:
    """Every beyond-accuracy number of one prequential run (lists served at the events
    ``list_index`` of ``stream``, trained on ``[0, split)``). Catalogue coverage is
    :meth:`~streamrec_eval.prequential.RunResult.summary`'s ``coverage``."""
    n_items = stream.n_items
    train = slice(0, split)
    pos = stream.ratings[train] >= threshold
    counts = item_counts(stream.items[train][pos], n_items)
    pct = popularity_percentile(counts)
    hist = history_means(stream.users, stream.items, pct, stream.users[list_index], list_index)
    genres = genre_vectors(stream.item_ids, stream.item_features)
    return {"novelty_bits": round(mean_over_entries(lists, self_information(counts)), 3),
            "diversity_genre": round(intra_list_diversity(lists, genres), 4)
            if genres.shape[1] else float("nan"),
            **popularity_bias(lists, pct, hist),
            **new_item_exposure(lists, list_index, stream.items, split, hits)}
