import numpy as np

from stream_app.model import ModelParams, PaddedLightFM
from streamrec_eval.adapters import EngineModel, ImprovedEngine, Popularity, engine_settings
from streamrec_eval.foldin import als_fold_in, centroid_fold_in, fold_in_lightfm
from streamrec_eval.prequential import popularity_ranks, run_prequential, top_items
from streamrec_eval.stream import Stream

TINY = engine_settings(padding_min=10, no_components=4, epochs_bootstrap=2,
                       epochs_per_batch=1, num_threads=1)


def tiny_stream() -> Stream:
    # u1 and u2 like a0..a3 early; u3 only appears after the split.
    users = ["u1", "u2", "u1", "u2", "u1", "u2", "u3", "u3", "u1", "u3"]
    items = ["a0", "a0", "a1", "a1", "a2", "a3", "a0", "a1", "a3", "a2"]
    ratings = [5, 5, 4, 5, 2, 4, 5, 1, 5, 4]
    return Stream.from_triples(users, items, ratings,
                               item_features={"a0": {"genre": ["x"]}})


class Scripted:
    """Records the order of calls; recommends a fixed ranking minus exclusions."""

    name = "scripted"

    def __init__(self, ranking):
        self.ranking, self.calls = list(ranking), []

    def fit_initial(self, events):
        self.calls.append(("fit", events.start, events.stop))

    def recommend(self, user, n, exclude):
        self.calls.append(("rec", user, frozenset(exclude)))
        return [i for i in self.ranking if i not in exclude][:n]

    def update(self, events):
        self.calls.append(("upd", events.start))


def test_stream_codes_ids_in_order_of_first_appearance():
    s = tiny_stream()
    assert s.user_ids == ("u1", "u2", "u3") and s.item_ids == ("a0", "a1", "a2", "a3")
    assert s.users.tolist()[:3] == [0, 1, 0] and len(s) == 10
    ev = s.events(6, 8)
    assert ev.users.tolist() == [2, 2] and ev.positives()[1].tolist() == [0]
    assert [x.item_id for x in ev.interactions()] == ["a0", "a1"]


def test_each_positive_is_tested_before_it_is_trained_and_negatives_are_only_fed():
    s = tiny_stream()
    model = Scripted(ranking=[0, 1, 3, 2])
    res = run_prequential(model, s, split=0.6, n=1, progress=False)
    assert model.calls[0] == ("fit", 0, 6)
    # events 6..9: positives at 6, 8, 9 are tested (7 is a rating of 1), all four are fed
    kinds = [c[0] for c in model.calls[1:]]
    assert kinds == ["rec", "upd", "upd", "rec", "upd", "rec", "upd"]
    # u3 at event 9 already interacted with a0 (6) and a1 (7, negative): both excluded
    assert model.calls[-2] == ("rec", 2, frozenset({0, 1}))
    assert res.event_index.tolist() == [6, 8, 9]
    assert res.hits.tolist() == [True, True, False]      # u3 wanted a2, was offered a3
    assert res.new_user.tolist() == [True, False, True]  # u3 had no positive before split
    summary = res.summary()
    assert summary["hit@1_new"] == 0.5 and summary["hit@1_returning"] == 1.0
    assert summary["positives"] == 3


def test_popularity_over_a_window_forgets_old_positives():
    s = Stream.from_triples(["u"] * 5, ["a", "a", "b", "c", "c"], [5] * 5)
    pop = Popularity(window=3)
    pop.fit_initial(s.events(0, 5))
    # window holds b, c, c: 'a' fell out
    assert pop.counts.tolist() == [0, 1, 2]
    assert top_items(pop.counts, 2, exclude={2}).tolist() == [1, 0]
    ranks = popularity_ranks(s.events(0, 5), 3)
    assert ranks.tolist() == [1, 3, 2]  # a and c tie on 2 positives: lower code first


def test_als_fold_in_is_the_ridge_solution_and_centroid_the_centred_mean():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(6, 3))
    x = als_fold_in(y, [[1, 4], []], reg=0.5, alpha=2.0)
    a = y.T @ y + 2.0 * y[[1, 4]].T @ y[[1, 4]] + 0.5 * np.eye(3)
    b = 3.0 * y[[1, 4]].sum(0)
    assert np.allclose(x[0], np.linalg.solve(a, b), atol=1e-5)
    assert not x[1].any()
    c = centroid_fold_in(y, [[0, 2]])
    assert np.allclose(c[0], y[[0, 2]].mean(0) - y.mean(0), atol=1e-6)


def test_fold_in_sets_the_user_representation_with_metadata_left_alone():
    m = PaddedLightFM(ModelParams(no_components=4, user_buckets=8, item_buckets=8), 5, 6)
    m.users.set(1, {"gender": "F"})
    meta_before = m.lightfm.user_embeddings[:8].copy()
    target = fold_in_lightfm(m, [1, 2], [[0, 3], [5]], n_items=6, scale=2.0,
                             method="centroid")
    _, rep = m.user_representations(np.array([1, 2]))
    assert np.allclose(rep, target, atol=1e-5)
    assert np.array_equal(m.lightfm.user_embeddings[:8], meta_before)


def test_engine_adapter_batches_like_the_worker_and_never_recommends_seen_items():
    s = tiny_stream()
    model = EngineModel(TINY, batch_size=2)
    res = run_prequential(model, s, split=0.6, n=3, progress=False)
    e = model.engine
    assert e.n_applied == 10  # 6 bootstrapped + 4 fed in 2 micro-batches
    assert e.batch_seq == 3
    assert len(res.hits) == 3
    recs = model.recommend(0, 3, {0, 1})
    assert not set(recs.tolist()) & {0, 1, 2, 3}  # u1 saw everything
    # u3 was unknown to the engine at event 6: the fallback (popular) list, a0 on top
    assert res.hits.tolist()[0] and model.fallback(1, set()).tolist() == [0]


def test_improved_engine_runs_every_part_on_a_tiny_stream():
    s = tiny_stream()
    model = ImprovedEngine(TINY, batch_size=1, cooc_weight=0.5, fold_in=True,
                           fold_method="centroid", carry=5)
    res = run_prequential(model, s, split=0.6, n=2, progress=False)
    assert len(res.hits) == 3 and model.engine.n_applied == 10
    assert model.cooc.positives(0) == [0, 1, 3]  # engine rows of u1's positives
    assert np.isfinite(model.engine.model.lightfm.user_embeddings).all()
