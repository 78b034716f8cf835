"""A MovieLens-like rating history with power users, generated deterministically from a seed.

``python bench/synthetic_history.py [--seed 7] [--out bench/results]`` prints its statistics.

The second, larger MovieLens release of issue #18 (610 users, 9.7 k items, half-star
ratings, users with thousands of ratings) is not shipped here, so this module makes a data
set with its shape, for two jobs: the guard's false positives when a history with power
users is backfilled at full speed, and the "power-user stream" of the order-aware
evaluation (docs/evaluation.md, docs/guard-notes.md).

What it imitates:

- **users**: ~600, activity heavy-tailed (lognormal, at least 20 ratings), plus a few power
  users with 2,000-5,000 ratings;
- **items**: ~9.7 k in genre-like clusters, popularity a long tail (Zipf within a cluster;
  the busiest item gets well under 1 % of the ratings, as in MovieLens);
- **sessions**: users rate in sessions; a power user's sessions hold 100-400 ratings a few
  seconds apart (a session of 100+ ratings within minutes), others' 5-60; sessions are hours
  to weeks apart, over about three years;
- **order**: within a session a user browses a cluster's page top-down (popular first) and
  rates what they have seen, skipping a few, now and then jumping to another cluster, so the
  order of ratings carries signal, as MovieLens' rating pages do;
- **ratings**: half stars 0.5-5, from the user's affinity to the cluster, the item's quality
  and noise (mean ~3.5, about half >= 4).

Everything comes from one ``numpy.random.default_rng(seed)``: the same seed gives the same
events on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

START = 1_400_000_000.0           # 2014-05: histories are years in the past


@dataclass(frozen=True)
class History:
    """Ratings in time order: ``users``/``items`` as external ids ("s17", "m4031")."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray
    seed: int

    def __len__(self) -> int:
        return len(self.users)

    def stream(self):
        """As a :class:`streamrec_eval.stream.Stream` (no metadata)."""
        from streamrec_eval.stream import Stream

        return Stream.from_triples(self.users.tolist(), self.items.tolist(), self.ratings,
                                   self.timestamps)

    def interactions(self) -> list:
        """As contract events (what ``streamrec produce`` would send)."""
        from streamrec.schema import Interaction

        return [Interaction.model_construct(
                    user_id=u, item_id=i, event_type="rating", timestamp=t, weight=None,
                    rating=r, event_id=f"syn-{k}", user_features=None, item_features=None)
                for k, (u, i, r, t) in enumerate(zip(self.users.tolist(), self.items.tolist(),
                                                     self.ratings.tolist(),
                                                     self.timestamps.tolist()))]

    def stats(self) -> dict:
        _, per_user = np.unique(self.users, return_counts=True)
        _, per_item = np.unique(self.items, return_counts=True)
        return {"seed": self.seed, "events": len(self), "users": len(per_user),
                "items": len(per_item), "max_per_user": int(per_user.max()),
                "users_over_2000": int((per_user >= 2000).sum()),
                "users_over_900": int((per_user > 900).sum()),
                "median_per_user": float(np.median(per_user)),
                "top_item_share": round(float(per_item.max() / len(self)), 4),
                "mean_rating": round(float(self.ratings.mean()), 3),
                "positive_share": round(float((self.ratings >= 4).mean()), 3),
                "days": round(float((self.timestamps.max() - self.timestamps.min()) / 86400), 1)}


def generate(seed: int = 7, n_users: int = 610, n_items: int = 16_000, n_clusters: int = 60,
             power_users: tuple[int, ...] = (5000, 4200, 3500, 2900, 2400, 2000),
             ) -> History:
    """The history; ``power_users`` are the rating counts of the heaviest users."""
    rng = np.random.default_rng(seed)
    cluster_of = rng.integers(n_clusters, size=n_items)
    quality = rng.normal(0.0, 0.6, n_items)
    # global popularity: a Zipf rank per item (item k of ``ranked`` is the k-th most popular);
    # a cluster's page lists its items by that rank, best first, and the "popular" page is
    # the whole catalogue by rank
    ranked = rng.permutation(n_items)
    rank = np.empty(n_items, np.int64)
    rank[ranked] = np.arange(n_items)
    pages = [np.flatnonzero(cluster_of == c) for c in range(n_clusters)]
    pages = [p[np.argsort(rank[p] + rng.normal(0, 3, len(p)))] for p in pages]
    pages.append(ranked)
    cluster_size = np.bincount(cluster_of, minlength=n_clusters).astype(float)
    cluster_pop = rng.dirichlet(np.full(n_clusters, 2.0)) * 0.5 + \
        0.5 * cluster_size / cluster_size.sum()

    counts = np.maximum(20, rng.lognormal(4.3, 1.0, n_users)).astype(int)
    counts = np.minimum(counts, 1500)
    heavy = rng.choice(n_users, size=len(power_users), replace=False)
    counts[heavy] = power_users

    users, items, ratings, stamps = [], [], [], []
    for u in range(n_users):
        power = counts[u] >= 2000
        taste = rng.dirichlet(np.full(n_clusters, 1.0 if power else 0.08)) * 0.8 + \
            0.2 * cluster_pop
        taste = np.append(0.7 * taste / taste.sum(), 0.3)    # 30 %: the popular page
        affinity = rng.normal(0.0, 0.7, n_clusters) + \
            1.5 * (taste[:-1] - taste[:-1].mean()) / taste[:-1].std()
        affinity = np.append(affinity, 0.0)
        bias = rng.normal(0.0, 0.4)
        seen: set[int] = set()
        t = START + rng.uniform(0, 2.0 * 365 * 86400)
        left = int(counts[u])
        while left > 0:
            size = int(rng.integers(100, 401) if power else rng.integers(5, 61))
            size = min(size, left)
            got = _session(rng, size, taste, pages, seen)
            if not got:
                break
            gaps = np.maximum(1.0, rng.lognormal(np.log(6.0), 0.7, len(got)))
            ts = t + np.cumsum(gaps)
            c = cluster_of[got]
            raw = 2.92 + bias + 0.45 * affinity[c] + quality[got] + rng.normal(0, 0.7, len(got))
            users.extend([u] * len(got))
            items.extend(got)
            ratings.extend(np.clip(np.round(raw * 2) / 2, 0.5, 5.0).tolist())
            stamps.extend(ts.tolist())
            left -= len(got)
            t = float(ts[-1]) + rng.lognormal(np.log(3 * 86400.0), 1.2)
    order = np.argsort(np.asarray(stamps), kind="stable")
    u = np.asarray(users)[order]
    i = np.asarray(items)[order]
    return History(np.array([f"s{x}" for x in u.tolist()]), np.array([f"m{x}" for x in
                                                                       i.tolist()]),
                   np.asarray(ratings)[order], np.asarray(stamps)[order], seed)


def _session(rng: np.random.Generator, size: int, taste: np.ndarray,
             pages: list[np.ndarray], seen: set[int], shuffle: float = 8.0,
             wander: float = 0.2) -> list[int]:
    """One session: browse cluster pages top-down (skipping some), rate unseen items.

    Each visit sees the page in its own order (positions jittered by ``shuffle``: a page
    is sorted by popularity, re-ranked per visitor), and each rating comes, with
    probability ``wander``, from anywhere in the user's taste instead of the page being
    browsed: the order carries signal, but far from all of it."""
    out: list[int] = []
    tries = 0
    while len(out) < size and tries < 50 * size:
        c = int(rng.choice(len(taste), p=taste))
        page = pages[c]
        page = page[np.argsort(np.arange(len(page)) + rng.normal(0, shuffle, len(page)))]
        pos = int(rng.geometric(0.05 if c == len(pages) - 1 else 0.06)) - 1   # near the top
        stay = int(rng.integers(5, 40))
        while pos < len(page) and stay > 0 and len(out) < size:
            tries += 1
            if rng.random() < wander:
                other = pages[int(rng.choice(len(taste), p=taste))]
                item = int(other[min(len(other) - 1, int(rng.geometric(0.02)) - 1)])
            else:
                item = int(page[pos])
                pos += 1 + int(rng.geometric(0.5)) - 1   # skip a few
            if item not in seen:
                seen.add(item)
                out.append(item)
                stay -= 1
        tries += 1
    return out
