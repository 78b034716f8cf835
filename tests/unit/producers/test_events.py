"""Producers stamp a backfill's records with the events' own times only when asked."""

from __future__ import annotations

from producers.events import BACKFILL_AFTER_S, EventProducer
from streamrec.settings import Settings


def test_record_timestamp_is_the_event_time_only_for_backfills_and_only_when_asked():
    s = Settings(bootstrap_servers="127.0.0.1:1")
    now = 1_800_000_000.0
    with_time = EventProducer(s, event_time=True)
    default = EventProducer(s)
    try:
        old = now - BACKFILL_AFTER_S - 1.0
        assert with_time.record_timestamp_ms(old, now) == int(old * 1000)
        assert with_time.record_timestamp_ms(now - 5.0, now) == 0        # live: send time
        assert with_time.record_timestamp_ms(now + 3600.0, now) == 0     # never the future
        assert with_time.record_timestamp_ms(None, now) == 0
        assert default.record_timestamp_ms(old, now) == 0
    finally:
        for p in (with_time, default):
            p._closed = True            # nothing was sent: no flush against a dead broker


def test_an_app_producer_sends_each_event_at_once_unless_told_to_batch():
    """Apps get linger 0 (the freshest lists for an app instance sending a few events a
    second, docs/benchmarks.md); replays and high-rate producers pass their own."""
    from streamrec.kafka import APP_LINGER_MS, LIVE_LINGER_MS

    s = Settings(bootstrap_servers="127.0.0.1:1")
    app = EventProducer(s)
    batching = EventProducer(s, **{"linger.ms": LIVE_LINGER_MS})
    try:
        assert APP_LINGER_MS == 0
        assert app._producer._conf["linger.ms"] == APP_LINGER_MS
        assert batching._producer._conf["linger.ms"] == LIVE_LINGER_MS == 2
    finally:
        for p in (app, batching):
            p._closed = True
