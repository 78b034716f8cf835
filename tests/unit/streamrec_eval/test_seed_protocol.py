import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from streamrec.errors import StreamrecError
from streamrec_eval.adapters import engine_settings
from streamrec_eval.report import render_section
from streamrec_eval.seed_protocol import (
    FIT_PARTIAL_PNG,
    FULL_FIT_PNG,
    SeedConfig,
    choose,
    curve_points,
    fold_indices,
    mean_user_auc,
    parse_grid,
    run_seed_protocol,
)
from streamrec_eval.stream import Stream

TINY = engine_settings(padding_min=5, no_components=4, num_threads=1, random_seed=7)


def clustered_stream(n_users: int = 30, n_items: int = 16, per_user: int = 6) -> Stream:
    """Even users like even items, odd users odd items; users arrive over time, so the
    last 30 % holds new users too. Interleaved in time like real traffic."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(n_users):
        liked = rng.choice(np.arange(u % 2, n_items, 2), per_user, replace=False)
        rows += [(u * 10 + k, f"u{u}", f"i{i}", 5.0) for k, i in enumerate(liked)]
        rows.append((u * 10 + per_user, f"u{u}", f"i{(u + 1) % 2}", 1.0))  # disliked
    rows.sort()
    _, users, items, ratings = zip(*rows)
    return Stream.from_triples(users, items, ratings)


def test_mean_user_auc_matches_sklearn_per_user_and_skips_users_without_positives():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(4, 12))
    pos = rng.random((4, 12)) < 0.3
    pos[3] = False  # no positive: skipped
    exclude = np.zeros((4, 12), bool)
    exclude[0, :3] = True
    pos[0, :3] = False
    expected = []
    for u in range(3):
        keep = ~exclude[u]
        expected.append(roc_auc_score(pos[u, keep], scores[u, keep]))
    assert mean_user_auc(scores, pos, exclude) == pytest.approx(np.mean(expected))


def test_mean_user_auc_perfect_reversed_tied_and_excluded():
    scores = np.array([[4.0, 3.0, 2.0, 1.0]])
    pos = np.array([[True, True, False, False]])
    none = np.zeros_like(pos)
    assert mean_user_auc(scores, pos, none) == 1.0
    assert mean_user_auc(-scores, pos, none) == 0.0
    assert mean_user_auc(np.zeros_like(scores), pos, none) == 0.5
    # An excluded item that outranks the positive does not count against it.
    excl = np.array([[False, False, False, True]])
    assert mean_user_auc(np.array([[3.0, 1.0, 0.0, 9.0]]), np.array([[True, False, False,
                                                                       False]]), excl) == 1.0
    assert np.isnan(mean_user_auc(scores, none, none))


def test_choose_takes_the_fewest_epochs_within_tolerance_of_the_best():
    assert choose([1, 5, 10, 20], [0.80, 0.899, 0.9, 0.895], 0.001) == 5
    assert choose([1, 5, 10, 20], [0.80, 0.899, 0.9, 0.895], 0.0) == 10


def test_grid_option_is_parsed_and_a_bad_one_says_what_to_give():
    assert parse_grid(" 10,1, 2,2") == (1, 2, 10)
    with pytest.raises(StreamrecError, match="--seed-epochs-grid 1,2,5,10,20"):
        parse_grid("1,two")
    with pytest.raises(StreamrecError):
        parse_grid("0,1")
    assert SeedConfig().epochs_grid == (1, 2, 5, 10, 20)


def test_seed_config_refuses_values_out_of_range():
    with pytest.raises(StreamrecError, match="folds must be at least 2"):
        SeedConfig(folds=1)
    with pytest.raises(StreamrecError, match="split"):
        SeedConfig(split=1.0)


def test_folds_partition_the_new_events_and_keep_time_order():
    folds = fold_indices(23, 5, seed=3)
    assert len(folds) == 5
    assert sorted(np.concatenate(folds).tolist()) == list(range(23))
    assert all((np.diff(f) > 0).all() for f in folds)


def test_curve_points_are_dense_early_and_end_at_the_maximum():
    assert curve_points(12) == list(range(1, 11)) + [12]
    assert curve_points(30)[-4:] == [15, 20, 25, 30]


def test_seed_protocol_learns_from_new_events_and_writes_curves_and_report(tmp_path):
    config = SeedConfig(split=0.7, validation_fraction=0.25, max_epochs=6, folds=3,
                        epochs_grid=(1, 5), batch_size=4, tolerance=0.0)
    doc = run_seed_protocol(clustered_stream(), tmp_path, TINY, config, progress=False)
    full, part = doc["full_fit"], doc["fit_partial"]
    assert full["epochs"] == [1, 2, 3, 4, 5, 6] and full["chosen"] in full["epochs"]
    assert part["epochs_per_batch"] == [0, 1, 5] and part["chosen"] in (1, 5)
    # Training on the new events beats only registering them (e = 0).
    assert max(part["mean_auc"][1:]) > part["mean_auc"][0]
    assert doc["chosen"] == {"epochs_bootstrap": full["chosen"],
                             "epochs_per_batch": part["chosen"]}
    assert doc["defaults"]["epochs_per_batch"] == TINY.epochs_per_batch
    for name in ("seed_protocol.json", FULL_FIT_PNG, FIT_PARTIAL_PNG):
        assert (tmp_path / name).stat().st_size > 0
    assert json.loads((tmp_path / "seed_protocol.json").read_text())["chosen"] == doc["chosen"]
    md = "\n".join(render_section(doc))
    assert "## Seed protocol and training curves" in md
    assert f"]({FULL_FIT_PNG})" in md and f"]({FIT_PARTIAL_PNG})" in md
    assert "default" in md and "chosen" in md


def test_evaluate_report_links_the_training_curves(tmp_path):
    from streamrec_eval.report import render

    config = SeedConfig(split=0.7, validation_fraction=0.25, max_epochs=2, folds=2,
                        epochs_grid=(1,), batch_size=8)
    seed = run_seed_protocol(clustered_stream(), tmp_path, TINY, config, progress=False)
    protocol = {"events": 100, "split": 0.9, "positives": 10, "positive_rating": 4.0, "n": 10,
                "positives_new_users": 5}
    md = render({"protocol": protocol, "models": {}, "seed_protocol": seed})
    assert "## Seed protocol and training curves" in md
    assert f"![AUC vs full-fit epochs]({FULL_FIT_PNG})" in md
