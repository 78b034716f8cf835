"""Beyond-accuracy measures: each on a case small enough to check by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamrec_eval.beyond_accuracy import (
    genre_vectors,
    history_means,
    intra_list_diversity,
    item_counts,
    mean_over_entries,
    new_item_exposure,
    pad_lists,
    popularity_bias,
    popularity_percentile,
    self_information,
)
from streamrec_eval.adapters import Popularity
from streamrec_eval.prequential import run_prequential
from streamrec_eval.stream import Stream


def test_popular_items_carry_less_information_and_unliked_ones_stay_finite():
    bits = self_information(np.array([6, 1, 0]))            # shares (7, 2, 1) / 10
    assert bits[0] < bits[1] < bits[2]
    assert bits[2] == pytest.approx(math.log2(10))
    lists = np.array([[0, 2, -1]])                          # padding is ignored
    assert mean_over_entries(lists, bits) == pytest.approx((bits[0] + bits[2]) / 2)


def test_percentile_is_mid_rank_so_ties_share_a_value():
    pct = popularity_percentile(np.array([0, 0, 5, 9]))
    assert pct.tolist() == [0.25, 0.25, 0.625, 0.875]
    assert item_counts(np.array([3, 3, 1]), 5).tolist() == [0, 1, 0, 2, 0]


def test_diversity_is_mean_pairwise_one_minus_jaccard():
    genres = genre_vectors(["a", "b", "c", "d"], {"a": {"genre": ["x", "y"]},
                                                  "b": {"genre": ["y"]},
                                                  "c": {"genre": "z"}})
    assert genres.shape == (4, 3) and genres[3].sum() == 0   # no genre: all zeros
    same = np.array([[0, 0]])
    assert intra_list_diversity(same, genres) == 0.0
    assert intra_list_diversity(np.array([[1, 2]]), genres) == 1.0
    # pairs: (a,b) 1 - 1/2, (a,c) 1, (b,c) 1  ->  mean 5/6; the -1 pad adds no pair
    assert intra_list_diversity(np.array([[0, 1, 2, -1]]), genres) == pytest.approx(5 / 6)
    # a one-item list has no pair and does not count
    assert intra_list_diversity(np.array([[0, 1, -1], [2, -1, -1]]), genres) == 0.5


def test_history_means_use_distinct_items_strictly_before_the_list():
    users = np.array([0, 0, 1, 0, 0])
    items = np.array([1, 2, 1, 2, 3])                        # user 0 repeats item 2
    per_item = np.array([0.0, 1.0, 0.5, 0.2])
    got = history_means(users, items, per_item, np.array([0, 0, 0, 1, 2]),
                        np.array([0, 2, 5, 3, 5]))
    assert np.isnan(got[0]) and np.isnan(got[4])             # nothing before / unknown user
    assert got[1] == pytest.approx(0.75)                     # items 1, 2
    assert got[2] == pytest.approx((1.0 + 0.5 + 0.2) / 3)    # the repeat counts once
    assert got[3] == pytest.approx(1.0)


def test_popularity_lift_compares_lists_with_the_users_own_history():
    pct = np.array([0.1, 0.9])
    out = popularity_bias(np.array([[1, 1], [1, -1]]), pct, np.array([0.1, np.nan]))
    assert out["rec_popularity_pct"] == pytest.approx(0.9)
    assert out["history_popularity_pct"] == pytest.approx(0.1)
    assert out["popularity_lift"] == pytest.approx(0.8)      # only the list with a history


def test_new_items_delay_counts_events_from_first_event_to_first_list_showing_it():
    # items 0, 1 are old; 2 first occurs at event 5 (split 4), 3 at event 6, never shown
    stream_items = np.array([0, 1, 0, 1, 0, 2, 3, 2, 2])
    lists = pad_lists([[2, 0], [0], [2], [1]], 2)
    at = np.array([3, 5, 7, 8])                  # a list at 3 shows 2 before it existed
    hits = np.array([False, False, True, False])
    out = new_item_exposure(lists, at, stream_items, 4, hits)
    assert out["new_items"] == 2 and out["new_items_shown"] == 0.5
    assert out["new_item_median_delay"] is None               # half were never shown
    assert out["new_item_positives"] == 3                     # lists at events 5, 7, 8
    assert out["new_item_hit"] == pytest.approx(1 / 3, abs=1e-4)   # rounded to 4 places
    out = new_item_exposure(pad_lists([[2], [3]], 1), np.array([7, 8]), stream_items, 4)
    assert out["new_item_median_delay"] == pytest.approx(2.0)  # delays 7-5=2 and 8-6=2


def test_every_prequential_run_reports_the_beyond_accuracy_numbers():
    users = ["u1", "u2", "u1", "u2", "u3", "u3", "u1", "u3"]
    items = ["a", "b", "b", "a", "a", "c", "c", "b"]
    s = Stream.from_triples(users, items, [5] * 8,
                            item_features={"a": {"genre": ["x"]}, "b": {"genre": ["y"]},
                                           "c": {"genre": ["x", "y"]}})
    summary = run_prequential(Popularity(), s, split=0.5, progress=False).summary()
    for key in ("coverage", "mean_popularity_rank", "novelty_bits", "diversity_genre",
                "rec_popularity_pct", "history_popularity_pct", "popularity_lift",
                "new_items", "new_items_shown", "new_item_median_delay", "new_item_hit"):
        assert key in summary
    assert summary["new_items"] == 1                          # "c" first occurs after the split
