import numpy as np
import pytest

from stream_app.features import FeatureSpace, hash_column
from stream_app.model import ModelParams, PaddedLightFM, padded_capacity
from stream_app.registry import IdRegistry
from stream_app.topn import top_n


def test_registry_assigns_in_order_and_reads_never_write():
    r = IdRegistry()
    assert r.get("a") is None and len(r) == 0
    assert list(r.assign_many(["a", "b", "a", "c"])) == [0, 1, 0, 2]
    assert r.get("b") == 1 and r.id_of(2) == "c" and len(r) == 3
    assert r.unpersisted() == [(0, "a"), (1, "b"), (2, "c")]
    r.mark_persisted()
    r.assign("d")
    assert r.unpersisted() == [(3, "d")]
    assert IdRegistry(["x", "y"]).get("y") == 1


def test_padding_capacity():
    assert padded_capacity(943, 0.10, 100) == 943 + 100
    assert padded_capacity(5000, 0.10, 100) == 5500


def test_feature_width_never_changes_with_new_values():
    fs = FeatureSpace(buckets=16, capacity=10, feature_weight=0.5)
    w0 = fs.matrix().shape[1]
    fs.set(0, {"genre": ["Drama", "Never-seen-before"], "year": 0.3})
    fs.set(1, {"genre": "Brand-new-genre"})
    m = fs.matrix()
    assert m.shape == (10, w0) == (10, 16 + 10)
    assert m[0, 16] == 1.0 and m[5, 16 + 5] == 1.0  # identity column per row
    assert abs(m[1].sum() - 1.5) < 1e-6               # identity 1 + metadata weight 0.5
    assert 0 <= hash_column("genre=Drama", 16) < 16


def _fit(model, n=400, seed=0):
    rng = np.random.default_rng(seed)
    u = rng.integers(0, 40, n)
    i = (u % 2) * 25 + rng.integers(0, 25, n)   # two taste groups
    model.fit_partial(u, i, np.ones(n, np.float32), epochs=10)


def test_growth_past_padding_keeps_learnt_rows_and_learns_new_ones():
    m = PaddedLightFM(ModelParams(no_components=8), user_capacity=50, item_capacity=60)
    _fit(m)
    before = m.scores(np.arange(40))
    emb_before = m.lightfm.user_embeddings.copy()
    assert m.ensure_capacity(120, 200, growth=1.5)
    lf = m.lightfm
    assert m.user_capacity >= 120 and m.item_capacity >= 200
    for side, cap, buckets in (("user", m.user_capacity, 256), ("item", m.item_capacity, 256)):
        for name in ("embeddings", "embedding_gradients", "embedding_momentum", "biases",
                     "bias_gradients", "bias_momentum"):
            arr = getattr(lf, f"{side}_{name}")
            assert arr.shape[0] == buckets + cap and arr.dtype == np.float32
            assert arr.flags["C_CONTIGUOUS"]
    # learnt rows are untouched; new rows start like LightFM initialises them
    np.testing.assert_array_equal(lf.user_embeddings[:emb_before.shape[0]], emb_before)
    np.testing.assert_allclose(m.scores(np.arange(40))[:, :60], before[:, :60], rtol=1e-5)
    assert np.all(lf.user_embedding_gradients[emb_before.shape[0]:] == 1.0)  # adagrad
    assert np.abs(lf.user_embeddings[emb_before.shape[0]:]).max() <= 0.5 / 8
    # and a brand-new user in a grown row learns its group's taste
    m.fit_partial(np.full(20, 110), np.arange(20), np.ones(20, np.float32), epochs=20)
    s = m.scores(np.array([110]))[0]
    assert s[:25].mean() > s[25:50].mean()


def test_checkpoint_roundtrip_is_exact(tmp_path):
    m = PaddedLightFM(ModelParams(no_components=8), 50, 60)
    m.items.set(3, {"genre": ["Drama"]})
    _fit(m)
    m.save(tmp_path / "m.npz", {"offsets": {"t:0": 7}})
    m2, doc = PaddedLightFM.load(tmp_path / "m.npz")
    assert doc["offsets"] == {"t:0": 7}
    np.testing.assert_array_equal(m.scores(np.arange(10)), m2.scores(np.arange(10)))
    # same random state: the next update is identical too
    _fit(m, seed=3)
    _fit(m2, seed=3)
    np.testing.assert_array_equal(m.scores(np.arange(10)), m2.scores(np.arange(10)))
    assert not list(tmp_path.glob("*.tmp"))
    with np.load(tmp_path / "m.npz", allow_pickle=False) as npz:  # never a pickle
        assert "user_embeddings" in npz.files


def test_snapshot_into_reused_buffers_equals_fresh_copies():
    m = PaddedLightFM(ModelParams(no_components=8), 50, 60)
    _fit(m)
    buffers: dict = {}
    first, _ = m.snapshot(into=buffers)
    held = {k: v for k, v in buffers.items()}
    _fit(m, seed=3)                      # the model moves on after the first snapshot
    second, _ = m.snapshot(into=buffers)
    fresh, _ = m.snapshot()
    assert all(second[k] is held[k] for k in held)          # refilled in place
    for k in fresh:
        np.testing.assert_array_equal(second[k], fresh[k])
        assert fresh[k] is not getattr(m.lightfm, k, None)  # copies, never the live arrays
    assert not np.array_equal(held["user_embeddings"], np.zeros_like(held["user_embeddings"]))
    m.ensure_capacity(120, 200, growth=1.5)                  # grown arrays: new buffers
    third, _ = m.snapshot(into=buffers)
    assert third["user_embeddings"] is not held["user_embeddings"]
    assert buffers["user_embeddings"] is third["user_embeddings"]
    np.testing.assert_array_equal(third["user_embeddings"], m.lightfm.user_embeddings)


def test_top_n_excludes_seen_disliked_and_dummy_rows():
    scores = np.array([[5., 4., 3., 2., 1., 9., 9.],
                       [1., 2., 3., 4., 5., 9., 9.]], dtype=np.float32)
    out = top_n(scores.copy(), 3, n_valid_items=5, exclude=[{0, 2}, set()])
    assert list(out[0][0]) == [1, 3, 4]
    assert list(out[1][0]) == [4, 3, 2]
    short = top_n(scores.copy(), 10, n_valid_items=5, exclude=[{0, 1, 2, 3}, set()])
    assert list(short[0][0]) == [4] and len(short[1][0]) == 5


@pytest.mark.parametrize("loss", ["warp", "bpr", "logistic", "warp-kos"])
def test_every_loss_trains(loss):
    m = PaddedLightFM(ModelParams(no_components=8, loss=loss), 50, 60)
    _fit(m)
    assert np.isfinite(m.scores(np.arange(5))).all()


def test_item_representations_follow_updates_incrementally():
    """After micro-batches the cached reps (updated only for the items that moved) equal a
    full recomputation, with shared metadata columns too."""
    m = PaddedLightFM(ModelParams(no_components=6), 50, 300)
    for r in range(0, 300, 4):
        m.items.set(r, {"genre": [str(r % 7)]})
    rng = np.random.default_rng(2)
    m.item_representations()
    for _ in range(12):
        n = int(rng.integers(1, 8))
        m.fit_partial(rng.integers(0, 50, n), rng.integers(0, 300, n),
                      np.ones(n, np.float32), epochs=3)
        bias, emb = m.item_representations()
        full_bias, full_emb = m.lightfm.get_item_representations(m.items.matrix())
        np.testing.assert_allclose(emb, full_emb, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bias, full_bias, rtol=1e-5, atol=1e-6)
