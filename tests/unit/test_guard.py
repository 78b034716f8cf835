"""The fraud and bot guard: bots and bursts are held back, real traffic never is."""

from __future__ import annotations

import functools

import numpy as np
import orjson
import pytest

from stream_app.guard import (
    ITEM_BURST,
    USER_PACE,
    USER_RATE,
    USER_REPEAT,
    Guard,
    GuardConfig,
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
    rng = np.random.default_rng(seed)
    t = start + np.sort(rng.uniform(0, seconds, n))
    ts = {"now": t, "none": [None] * n, "forged": 880_000_000.0 + 60.0 * np.arange(n)}[stamp]
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


def test_a_bot_forging_spread_out_timestamps_still_meets_the_rate_limit():
    g = Guard()
    events, t, source = merge(humans(400, 200, 3.0), bot("bot", 1000, T0 + 1.0, 1.0, "forged"))
    keep, _ = replay(g, events, t)
    assert keep[source == 0].all()
    assert g.quarantined()["users"]["bot"].reason == USER_RATE
    assert not keep[source == 1][-50:].any()          # everything after the flag is held


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
