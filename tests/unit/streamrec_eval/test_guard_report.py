"""The guard decision report: users and events held per rule on a replayed data set."""

from __future__ import annotations

import numpy as np

from stream_app.guard import USER_HISTORY, USER_PACE, GuardConfig
from streamrec_eval.guard_report import arrival_times, guard_report
from streamrec_eval.synthetic import generate
from tests.unit.stream_app.test_guard import ev


def test_synthetic_history_is_deterministic_and_has_power_users():
    a, b = generate(3, n_users=120, n_items=3000, power_users=(2500, 2000)), \
        generate(3, n_users=120, n_items=3000, power_users=(2500, 2000))
    assert np.array_equal(a.items, b.items) and np.array_equal(a.timestamps, b.timestamps)
    stats = a.stats()
    assert stats["max_per_user"] == 2500 and stats["users_over_2000"] == 2
    assert np.all(np.diff(a.timestamps) >= 0)
    assert set(np.unique(a.ratings * 2) % 1) == {0.0}          # half stars
    assert generate(4, n_users=120, n_items=3000).stats() != stats


def test_a_power_user_backfill_is_held_by_the_old_guard_and_not_by_the_new():
    history = generate(3, n_users=120, n_items=3000, power_users=(2500, 2000)).interactions()
    new = guard_report(history, rate=1e6)
    old = guard_report(history, GuardConfig(history_after_s=float("inf")), rate=1e6)
    assert new.held_users == {} and new.kept == len(history)
    assert len(old.held_users) == 2                              # the two power users
    rows = {r["rule"]: r for r in old.rows()}
    assert rows["user_rate"]["users"] == 2 and rows["total"]["events"] == len(history) - old.kept


def test_report_counts_bots_per_rule_and_settings_are_accepted():
    class S:
        guard_history_max_events = 100

    forged = [ev("forger", f"i{k}", 1.5e9 + 60.0 * k) for k in range(300)]
    stamped = [ev("stamper", f"j{k}", 1.5e9) for k in range(300)]
    rep = guard_report(forged + stamped, S(), arrivals=np.full(600, 1.8e9))
    assert rep.held_users == {"forger": USER_HISTORY, "stamper": USER_PACE}
    assert rep.held_events[USER_HISTORY] == 300 and rep.held_events[USER_PACE] == 300
    assert "user_history" in rep.table() and rep.as_dict()["kept"] == 0


def test_arrival_times_replay_after_the_history_or_at_event_time():
    events = [ev("u", "i", 100.0), ev("u", "j", 50.0)]
    assert arrival_times(events, None).tolist() == [100.0, 50.0]
    assert arrival_times(events, 10.0).tolist() == [100.0 + 86400.0, 100.1 + 86400.0]


def test_load_events_reads_a_jsonl_file_and_skips_bad_lines(tmp_path):
    from streamrec_eval.guard_report import load_events

    f = tmp_path / "events.jsonl"
    f.write_text('{"user_id": "u1", "item_id": "i1", "timestamp": 1.0}\n'
                 'not json\n{"user_id": ""}\n\n'
                 '{"user_id": "u2", "item_id": "i2", "event_type": "rating", "rating": 4}\n')
    events = load_events(jsonl=f)
    assert [(e.user_id, e.item_id) for e in events] == [("u1", "i1"), ("u2", "i2")]
    assert guard_report(events, rate=None).kept == 2
