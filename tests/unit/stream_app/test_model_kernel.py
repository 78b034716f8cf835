"""The ranking-loss fast path of PaddedLightFM.fit_partial equals LightFM's own fit_partial."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.sparse as sp

from stream_app.model import ARRAYS, SIDES, ModelParams, PaddedLightFM


def _reference_fit(model: PaddedLightFM, u: np.ndarray, i: np.ndarray, v: np.ndarray,
                   epochs: int) -> None:
    """What the model did before the fast path: LightFM.fit_partial on positives only."""
    inter, w = model.interactions_matrix(u, i, v)
    pos = inter.data > 0
    if not pos.any():
        return
    shape = inter.shape
    inter = sp.coo_matrix((inter.data[pos], (inter.row[pos], inter.col[pos])), shape=shape)
    w = sp.coo_matrix((w.data[pos], (w.row[pos], w.col[pos])), shape=shape)
    model.lightfm.fit_partial(inter, user_features=model.users.matrix(),
                              item_features=model.items.matrix(), sample_weight=w,
                              epochs=epochs)


@pytest.mark.parametrize("loss", ["warp", "bpr"])
@pytest.mark.parametrize("epochs", [1, 3])
def test_fast_path_is_bit_identical_to_lightfm_fit_partial(loss: str, epochs: int) -> None:
    """One epoch per call, or several with a per-epoch callback (as full fits run): the
    compact user rows and the batch-local CSRs change nothing, bit for bit."""
    rng = np.random.default_rng(7)
    fast = PaddedLightFM(ModelParams(loss=loss), 120, 80)
    for r in range(0, 120, 3):          # hybrid rows: shared metadata columns too
        fast.users.set(r, {"age": str(r % 4), "job": ["a", "b"][r % 2]})
    for r in range(0, 80, 2):
        fast.items.set(r, {"genre": [str(r % 5), str(r % 3)]})
    ref = copy.deepcopy(fast)
    for _ in range(15):
        n = int(rng.integers(1, 25))
        u, i = rng.integers(0, 120, n), rng.integers(0, 80, n)
        v = rng.choice([1.0, -1.0, 2.0, 0.5], n).astype(np.float32)  # dupes, negatives
        fast.fit_partial(u, i, v, epochs=epochs,
                         on_epoch=(lambda _e: None) if epochs > 1 else None)
        _reference_fit(ref, u, i, v, epochs=epochs)
    for side in SIDES:
        for name in ARRAYS:
            a = getattr(fast.lightfm, f"{side}_{name}")
            b = getattr(ref.lightfm, f"{side}_{name}")
            assert np.array_equal(a, b), (side, name)


def test_fast_path_rejects_non_finite_values_and_skips_negatives_only() -> None:
    model = PaddedLightFM(ModelParams(), 10, 10)
    before = model.lightfm.item_embeddings.copy()
    model.fit_partial(np.array([1]), np.array([2]), np.array([-1.0], np.float32))
    assert np.array_equal(before, model.lightfm.item_embeddings)
    with pytest.raises(ValueError, match="finite"):
        model.fit_partial(np.array([1]), np.array([2]), np.array([np.inf], np.float32))


def test_folded_epochs_of_a_micro_batch_learn_like_epoch_by_epoch() -> None:
    """Micro-batches run their epochs in one kernel call (same examples, same order; only
    the negatives' random stream differs): the model learns the same communities."""
    rng = np.random.default_rng(3)
    users = np.repeat(np.arange(60), 10)
    items = np.concatenate([rng.choice(40, 10, replace=False) + 40 * (u % 2) for u in range(60)])
    models = {}
    for name, cb in (("folded", None), ("per_epoch", lambda _e: None)):
        m = PaddedLightFM(ModelParams(no_components=8), 60, 80)
        order = rng.permutation(len(users))
        for k in range(0, len(order), 20):
            b = order[k:k + 20]
            m.fit_partial(users[b], items[b], np.ones(len(b), np.float32), epochs=10,
                          on_epoch=cb)
        models[name] = m
    for m in models.values():
        s = m.scores(np.arange(60), 80)
        own = np.array([s[u, 40 * (u % 2):40 * (u % 2) + 40].mean() for u in range(60)])
        other = np.array([s[u, 40 * (1 - u % 2):40 * (1 - u % 2) + 40].mean()
                          for u in range(60)])
        assert (own > other).mean() >= 0.9          # each learnt the two communities
