"""The fraud and bot guard: bots and bursts are held back, real traffic never is."""

from __future__ import annotations

import functools

import numpy as np
import orjson
import pytest

from stream_app.guard import (
    ITEM_BURST,
    USER_HISTORY,
    USER_PACE,
    USER_RATE,
    USER_REPEAT,
    Guard,
    GuardConfig,
    _running_count,
)
from streamrec.errors import DataNotFound
from streamrec.schema import Interaction

T0 = 1_700_000_000.0
BATCH_S = 0.05   # the worker's micro-batches at 2,000 events/s


def ev(user: str, item: str, ts: float | None = None, kind: str = "click",
       rating: float | None = None) -> Interaction:
    """An event without validation cost (tests replay tens of thousands)."""
    return Interaction.model_construct(user_id=user, item_id=item, event_type=kind,
                                       timestamp=ts, weight=None, rating=rating,
                                       event_id=None, user_features=None, item_features=None)


def humans(n_users: int, rate: float, seconds: float, n_items: int = 500,
           seed: int = 0) -> tuple[list[Interaction], np.ndarray]:
    """Background traffic at ``rate`` events/s, each user at a human pace (stamped now)."""
    assert rate / n_users <= 0.5, "more users: a person does not click every second"
    rng = np.random.default_rng(seed)
    t = T0 + np.arange(int(rate * seconds)) / rate
    users = rng.integers(n_users, size=len(t))
    items = rng.integers(n_items, size=len(t))
    return [ev(f"h{u}", f"i{i}", float(ts)) for u, i, ts in zip(users, items, t)], t


def merge(*streams: tuple[list[Interaction], np.ndarray]) -> tuple[list[Interaction],
                                                                   np.ndarray, np.ndarray]:
    """Streams interleaved by arrival time, with the index of the stream of each event."""
    events = [e for s in streams for e in s[0]]
    t = np.concatenate([s[1] for s in streams])
    source = np.concatenate([np.full(len(s[0]), k) for k, s in enumerate(streams)])
    order = np.argsort(t, kind="stable")
    return [events[k] for k in order], t[order], source[order]


def replay(guard: Guard, events: list[Interaction], t: np.ndarray,
           known: np.ndarray | None = None,
           batch_s: float = BATCH_S) -> tuple[np.ndarray, list[str | None]]:
    """Feed micro-batches of ``batch_s`` of arrival time; the keep mask and reasons of all."""
    keep = np.ones(len(events), bool)
    reasons: list[str | None] = [None] * len(events)
    batch = np.floor((t - t[0]) / batch_s).astype(np.int64)
    for seg in np.split(np.arange(len(events)), np.flatnonzero(np.diff(batch)) + 1):
        k, r = guard.check([events[j] for j in seg], t[seg],
                           None if known is None else known[seg])
        keep[seg] = k
        for j, reason in zip(seg.tolist(), r):
            reasons[j] = reason
    return keep, reasons


def bot(user: str, n: int, start: float, seconds: float, stamp: str = "now",
        seed: int = 1) -> tuple[list[Interaction], np.ndarray]:
    """``stamp``: "now" (arrival), "none", "recent" (spread over the last 4 minutes: live),
    "forged" (a past one minute apart: historical), "one-past" (one past second)."""
    rng = np.random.default_rng(seed)
    t = start + np.sort(rng.uniform(0, seconds, n))
    ts = {"now": t, "none": [None] * n, "forged": 880_000_000.0 + 60.0 * np.arange(n),
          "recent": t - 240.0 + 240.0 * np.arange(n) / n,
          "one-past": np.full(n, 880_000_000.0)}[stamp]
    items = rng.integers(1000, size=n)
    return [ev(user, f"i{i}", None if s is None else float(s)) for i, s in zip(items, ts)], t


@pytest.mark.parametrize("stamp", ["now", "none"])
def test_a_bot_at_1000_events_per_second_is_quarantined_and_nobody_else(stamp):
    g = Guard()
    events, t, source = merge(humans(400, 200, 3.0), bot("bot", 1000, T0 + 1.0, 1.0, stamp))
    keep, reasons = replay(g, events, t)
    assert keep[source == 0].all(), "a human was held back"
    assert (~keep[source == 1]).sum() >= 950          # at most one micro-batch slips through
    assert set(g.quarantined()["users"]) == {"bot"}
    assert {r for r in reasons if r} == {USER_PACE}
    assert g.decisions[USER_PACE] == (~keep).sum()


def test_a_bot_forging_recent_spread_out_timestamps_still_meets_the_rate_limit():
    g = Guard()
    events, t, source = merge(humans(400, 200, 3.0), bot("bot", 1000, T0 + 1.0, 1.0, "recent"))
    keep, _ = replay(g, events, t)
    assert keep[source == 0].all()
    assert g.quarantined()["users"]["bot"].reason == USER_RATE
    assert not keep[source == 1][-50:].any()          # everything after the flag is held


def test_a_bot_forging_a_spread_out_past_is_bounded_by_the_history_budget():
    """A past stamped one minute apart looks human on its own timeline: the budget of
    ``history_max_events`` per account is what bounds it."""
    g = Guard()
    limit = g.config.history_max_events
    events, t, source = merge(humans(400, 200, 6.0),
                              bot("bot", 2 * limit, T0 + 1.0, 4.0, "forged"))
    keep, _ = replay(g, events, t)
    assert keep[source == 0].all()
    assert g.quarantined()["users"]["bot"].reason == USER_HISTORY
    let_through = int(keep[source == 1].sum())
    assert limit - 2 * 0.05 * limit / 4.0 <= let_through <= limit   # within a micro-batch
    assert not keep[source == 1][let_through:].any()


def test_a_slow_history_bot_is_bounded_by_what_the_model_holds():
    """Sent slowly (no window fills up), the engine's history sizes bound it in total."""
    g = Guard(GuardConfig(history_max_events=500))
    trained = 0
    kept_total = 0
    for minute in range(12):                      # 100 forged past events a minute
        now = T0 + 60.0 * minute
        batch = [ev("slow", f"i{minute}-{k}", 880_000_000.0 + 3600.0 * (minute * 100 + k))
                 for k in range(100)]
        keep, _ = g.check(batch, np.full(100, now), history_sizes=np.full(100, trained))
        trained += int(keep.sum())
        kept_total += int(keep.sum())
    assert g.quarantined()["users"]["slow"].reason == USER_HISTORY
    assert kept_total == 500


def test_a_history_stamped_with_one_past_time_is_caught_by_its_pace():
    g = Guard()
    events, t, source = merge(humans(400, 200, 3.0), bot("bot", 1000, T0 + 1.0, 1.0,
                                                         "one-past"))
    keep, _ = replay(g, events, t)
    assert keep[source == 0].all()
    assert g.quarantined()["users"]["bot"].reason == USER_PACE
    assert (~keep[source == 1]).sum() >= 950


def power_history(n_users: int = 5, per_user: int = 5000, seed: int = 4
                  ) -> tuple[list[Interaction], np.ndarray]:
    """Users with thousands of ratings in sessions of 200 a few seconds apart, years ago;
    (events in each user's own order, user after user, as an app's export; their times)."""
    rng = np.random.default_rng(seed)
    events, times = [], []
    for u in range(n_users):
        t = 1_400_000_000.0 + rng.uniform(0, 1e7)
        for s in range(per_user // 200):
            ts = t + np.cumsum(np.maximum(1.0, rng.lognormal(np.log(6.0), 0.7, 200)))
            events += [ev(f"p{u}", f"m{rng.integers(20000)}", float(x), "rating", 4.0)
                       for x in ts]
            times.append(ts)
            t = float(ts[-1]) + 86400.0
    return events, np.concatenate(times)


@pytest.mark.parametrize("record_time", ["arrival", "event"])
def test_a_backfill_of_power_users_after_live_traffic_quarantines_nobody(record_time):
    """25,000 ratings of five power users sent as fast as they go while live traffic
    flows; record timestamps stamped at arrival, or (``event``) with the events' own times
    as a producer stamps a backfill, user after user."""
    g = Guard()
    live, t_live = humans(400, 200, 3.0)
    replay(g, live, t_live)
    history, own = power_history()
    arrival = T0 + 3.0 + np.arange(len(history)) / 100_000
    if record_time == "event":
        arrival = own
    keep, _ = replay(g, history, arrival, batch_s=0.05 if record_time == "arrival" else 1e9)
    assert keep.all(), g.quarantined()
    assert g.quarantined() == {"users": {}, "items": {}}


def test_running_count_counts_masked_positions_per_key():
    keys = np.array(["a", "b", "a", "a", "b", "c"])
    mask = np.array([True, True, False, True, True, False])
    assert _running_count(keys, mask).tolist() == [1, 1, 0, 2, 2, 0]
    assert _running_count(keys, np.zeros(6, bool)).tolist() == [0] * 6


def hammer(n_users: int, clicks: int, item: str, start: float, seconds: float,
           seed: int = 2) -> tuple[list[Interaction], np.ndarray]:
    rng = np.random.default_rng(seed)
    t = start + np.sort(rng.uniform(0, seconds, clicks))
    return [ev(f"fake{k % n_users}", item, float(s)) for k, s in enumerate(t)], t


@pytest.mark.parametrize("n_users", [50, 5000])
def test_new_users_hammering_one_item_are_caught_before_it_trains(n_users):
    g = Guard()
    background = humans(4000, 2000, 12.0)
    fans = ([ev(f"h{k}", "target", T0 + 5.0 + k * 0.01) for k in range(20)],
            T0 + 5.0 + np.arange(20) * 0.01)          # established users like it too
    events, t, source = merge(background, hammer(n_users, 5000, "target", T0 + 1.0, 10.0),
                              fans)
    known = np.array([e.user_id.startswith("h") for e in events])
    keep, reasons = replay(g, events, t, known)
    assert keep[source != 1].all(), "real traffic (incl. real fans of the item) was held"
    assert (~keep[source == 1]).sum() >= 4990
    assert "target" in g.quarantined()["items"]
    assert ITEM_BURST in {r for r in reasons if r}


@functools.cache
def test_one_user_repeating_one_click_at_a_human_pace_is_caught():
    g = Guard()
    t = T0 + np.arange(60) * 0.9                      # about 1/s: no rate or pace rule trips
    repeat = ([ev("clicker", "ad", float(s)) for s in t], t)
    events, tt, source = merge(humans(100, 50, 60.0), repeat)
    keep, _ = replay(g, events, tt, batch_s=0.5)
    assert keep[source == 0].all()
    assert g.quarantined()["users"]["clicker"].reason == USER_REPEAT
    assert g.quarantined()["items"] == {}     # one account is not a burst on the item
    assert keep[source == 1].sum() <= 51 and not keep[source == 1][-5:].any()


def test_a_slow_burst_of_repeating_new_users_is_caught_by_repetition():
    """Too small a share of the traffic for the share test; every account repeats itself."""
    g = Guard()
    slow = hammer(50, 300, "target", T0 + 1.0, 30.0)   # 10/s beside 500/s: 2 %
    events, t, source = merge(humans(2000, 500, 32.0), slow)
    keep, _ = replay(g, events, t, batch_s=0.25)
    assert keep[source == 0].all()
    assert g.quarantined()["items"]["target"].reason == ITEM_BURST
    assert (~keep[source == 1]).sum() >= 150


def movielens_tail() -> list[Interaction] | None:
    """The last 10 % of MovieLens 100K in time order, as the demo replays it."""
    from streamrec.movielens import find_movielens, load_movielens

    try:
        ml = load_movielens(find_movielens(download=False))
    except DataNotFound:
        return None
    sl = slice(ml.split_index(0.9), None)
    return [ev(str(u), str(i), float(ts), "rating", float(r)) for u, i, r, ts in
            zip(ml.users[sl], ml.items[sl], ml.ratings[sl], ml.timestamps[sl])]


@pytest.fixture
def ml_tail() -> list[Interaction]:
    events = movielens_tail()
    if events is None:
        pytest.skip("MovieLens 100K not found (shared/data/ml-100k)")
    return events


@pytest.mark.parametrize("rate", [2000, 20000])
def test_movielens_replayed_fast_quarantines_no_real_user(ml_tail, rate):
    """Every user counts as brand-new here (no known_users): the strictest case."""
    events = ml_tail
    t = T0 + np.arange(len(events)) / rate
    g = Guard()
    keep, _ = replay(g, events, t)
    assert keep.all(), g.quarantined()
    assert g.quarantined() == {"users": {}, "items": {}}


def test_movielens_with_an_attack_on_one_item_holds_back_only_the_attack(ml_tail):
    events_ml = ml_tail
    t_ml = T0 + np.arange(len(events_ml)) / 2000
    events, t, source = merge((events_ml, t_ml), hammer(50, 5000, "m-target", T0 + 1.0, 4.0))
    g = Guard()
    keep, _ = replay(g, events, t)
    assert keep[source == 0].all()
    assert not keep[source == 1].any()


def test_released_user_trains_again_and_released_events_pass_uncounted():
    g = Guard()
    events, t, _ = merge(bot("bot", 300, T0, 0.3, "none"))
    keep, _ = replay(g, events, t)
    assert "bot" in g.quarantined()["users"] and not keep[-1]

    replayed = events[:100]
    keep, reasons = g.check(replayed, np.full(100, T0 + 1.0), released=np.ones(100, bool))
    assert keep.all() and reasons == [None] * 100      # released events pass even now
    assert g.decisions["released"] == 100

    assert g.release_user("bot") is True
    assert g.quarantined()["users"] == {}
    keep, _ = g.check([ev("bot", "i1", T0 + 2.0)], np.array([T0 + 2.0]))
    assert keep.all()
    assert g.release_user("bot") is False               # releasing twice is harmless


def test_released_item_is_exempt_and_new_users_train_on_it_again():
    g = Guard()
    events, t, _ = merge(humans(4000, 2000, 2.0), hammer(50, 500, "target", T0 + 0.5, 0.5))
    replay(g, events, t)
    assert "target" in g.quarantined()["items"]
    assert g.release_item("target") is True
    events, t, _ = merge(hammer(50, 500, "target", T0 + 2.0, 0.5, seed=3))
    keep, _ = replay(g, events, t)
    assert "target" not in g.quarantined()["items"]
    assert keep.sum() > 0     # the item is exempt; users still repeating get their own flags


def test_screen_applies_standing_flags_without_counting():
    g = Guard()
    events, t, _ = merge(humans(4000, 2000, 1.0), bot("bot", 300, T0 + 0.2, 0.3, "none"),
                         hammer(50, 500, "target", T0 + 0.2, 0.5))
    replay(g, events, t)
    before = g.state()
    again = [ev("bot", "i1"), ev("fake1", "target"), ev("regular", "target"),
             ev("newbie", "target"), ev("h2", "i2")]
    keep, reasons = g.screen(again, known_users=np.array([False, False, True, False, True]))
    assert keep.tolist() == [False, False, True, False, True]
    assert reasons == [USER_PACE, ITEM_BURST, None, ITEM_BURST, None]
    assert g.state() == before                          # a read: nothing counted


def test_a_flag_lifts_after_its_ttl():
    g = Guard(GuardConfig(quarantine_ttl_s=60.0))
    events, t, _ = merge(bot("bot", 300, T0, 0.3, "none"))
    replay(g, events, t)
    assert "bot" in g.quarantined()["users"]
    later = T0 + 120.0
    keep, _ = g.check([ev("bot", "i1", later)], np.array([later]))
    assert keep.all() and g.quarantined()["users"] == {}


def test_state_round_trip_decides_the_same():
    g = Guard()
    events, t, _ = merge(humans(4000, 2000, 1.0),
                         bot("bot", 300, T0 + 0.2, 0.3, "none"),
                         hammer(50, 500, "target", T0 + 0.2, 0.5))
    replay(g, events, t)
    data = orjson.loads(orjson.dumps(g.state()))        # JSON-able, nothing lost
    h = Guard.from_state(data, g.config)
    assert h.quarantined() == g.quarantined() and h.decisions == g.decisions
    nxt, tn, _ = merge(humans(4000, 2000, 0.5, seed=5), bot("bot2", 200, T0 + 1.0, 0.2),
                       hammer(60, 300, "target2", T0 + 1.0, 0.3, seed=6))
    tn = tn + 1.0
    assert [r for r in replay(g, nxt, tn)[1]] == [r for r in replay(h, nxt, tn)[1]]
    assert h.state() == g.state()


def test_idle_keys_are_forgotten():
    g = Guard()
    events, t, _ = merge(humans(4000, 2000, 1.0))
    replay(g, events, t)
    assert len(g.windows["users"]) == len({e.user_id for e in events})
    later = T0 + 2 * g.config.window_s
    g.check([ev("h1", "i1", later)], np.array([later]))
    assert all(len(w) <= 1 for w in g.windows.values())


def test_disabled_guard_keeps_everything():
    g = Guard(GuardConfig(enabled=False))
    events, t, _ = merge(bot("bot", 1000, T0, 1.0, "none"))
    keep, _ = replay(g, events, t)
    assert keep.all()


def test_config_reads_guard_fields_from_settings():
    class S:
        guard_user_max_events = 5
        guard_enabled = False
        unrelated = 1

        guard_pace_max_rate = None                     # None: the measured default

    cfg = GuardConfig.from_settings(S())
    assert cfg.user_max_events == 5 and cfg.enabled is False
    assert cfg.pace_max_rate == GuardConfig().pace_max_rate


def test_one_event_batches_decide_as_the_general_path(monkeypatch):
    """A live micro-batch is usually one event, which takes scalar shortcuts
    (``_unique``, ``_Window._add_one``, ``_running_count``); the same events through the
    vectorised path must give the same decisions and the same state."""
    import stream_app.guard as guard_mod

    background = humans(400, 200, 3.0)
    events, t, source = merge(background, bot("bot", 300, T0 + 1.0, 0.5),
                              bot("forger", 300, T0 + 0.5, 2.0, "forged", seed=3),
                              hammer(50, 400, "target", T0 + 1.0, 1.5))
    known = np.array([e.user_id.startswith("h") for e in events])
    fast = Guard()
    fast_keep, fast_reasons = replay(fast, events, t, known, batch_s=1e-9)  # one per batch

    def general_unique(a):
        return np.unique(a, return_index=True, return_inverse=True, return_counts=True)

    def general_add_one(self, key, n, b, lo, hi):
        return self._add_many(self.slots([key]), np.array([n]), b, lo, hi)

    monkeypatch.setattr(guard_mod, "_unique", general_unique)
    monkeypatch.setattr(guard_mod._Window, "_add_one", general_add_one)
    slow = Guard()
    slow_keep, slow_reasons = replay(slow, events, t, known, batch_s=1e-9)
    assert (~fast_keep).sum() > 500                    # the attacks were caught at all
    np.testing.assert_array_equal(fast_keep, slow_keep)
    assert fast_reasons == slow_reasons
    assert orjson.dumps(fast.state(), option=orjson.OPT_SERIALIZE_NUMPY) == \
        orjson.dumps(slow.state(), option=orjson.OPT_SERIALIZE_NUMPY)
