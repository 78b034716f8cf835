"""The candidate path of large catalogues gives the exact path's lists when the candidates
cover the catalogue, and close to them with the index's default probe."""

from __future__ import annotations

import numpy as np

from stream_app.candidates import ItemMoments, union_rows
from stream_app.engine import Engine
from streamrec.schema import validate_interaction
from streamrec.settings import Settings

S = Settings(padding_min=20, no_components=8, epochs_per_batch=2, num_threads=1,
             explore_share=0.0, ann_min_items=0)


def engine(n_items: int = 400, n_users: int = 60, seed: int = 0, **kw) -> Engine:
    e = Engine(S.model_copy(update=kw))
    rng = np.random.default_rng(seed)
    events = [validate_interaction({"user_id": f"u{u}", "item_id": f"i{int(i)}"})
              for u in range(n_users)
              for i in rng.choice(n_items // 4, 12, replace=False) + (n_items // 4) * (u % 4)]
    for k in range(0, len(events), 97):
        e.apply_interactions(events[k:k + 97])
    return e


def test_item_moments_are_the_exact_moments_of_every_users_scores():
    rng = np.random.default_rng(1)
    emb, bias = rng.normal(size=(500, 8)).astype(np.float32), rng.normal(size=500)
    users = rng.normal(size=(7, 8)).astype(np.float32)
    full = users @ emb[:450].T + bias[:450]
    mu, var = ItemMoments.of(emb, bias.astype(np.float32), 450).score_moments(users)
    np.testing.assert_allclose(mu, full.mean(axis=1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(var, full.var(axis=1), rtol=1e-4)


def test_union_keeps_each_item_once_per_row():
    u, void = union_rows([np.array([[3, 1, -1], [2, 2, 5]]), np.array([[1, 7], [-1, 5]])])
    kept = [r[~v].tolist() for r, v in zip(u, void)]
    assert kept == [[1, 3, 7], [2, 5]]


def test_full_candidates_give_the_exact_lists():
    exact = engine()
    rows = np.arange(60)
    want = exact.lists(rows, 10)
    approx = engine(ann_min_items=1, ann_candidates=10_000)
    got = approx.lists(rows, 10)
    for (wr, ws, _), (gr, gs, _) in zip(want, got):
        assert wr == gr
        np.testing.assert_allclose(gs, ws, rtol=1e-3, atol=1e-3)


def test_default_probe_finds_most_of_the_exact_list_and_never_seen_or_dummy_items():
    rows = np.arange(60)
    exact = engine(n_items=4000, explore_share=0.05)
    approx = engine(n_items=4000, explore_share=0.05, ann_min_items=1)
    valid = len(approx.items)
    overlap = []
    for r, (wr, _, _), (gr, _, explored) in zip(rows, exact.lists(rows, 20),
                                                approx.lists(rows, 20)):
        seen = set(approx.seen[r].tolist())
        assert not seen & set(gr) and max(gr) < valid and len(set(gr)) == len(gr) == 20
        assert len(explored) == 1                     # 0.05 of 20: one exploration slot
        plain = [i for k, i in enumerate(gr) if k not in explored]
        overlap.append(len(set(plain) & set(wr)) / len(plain))
    assert np.mean(overlap) > 0.8
