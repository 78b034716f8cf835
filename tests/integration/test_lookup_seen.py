"""The lookup's read-your-writes filter on a real broker: an item the user has just
interacted with leaves their served list before the worker's new list arrives."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from producers import EventProducer
from streamrec.broker import ensure_topics
from streamrec.kafka import producer_config
from streamrec.settings import Settings
from tests.integration.processes import Proc, get_list, metric, wait_until

pytestmark = pytest.mark.integration


def _publish_list(s: Settings, user: str, items: list[str], updated_at: float) -> None:
    """A list record as the worker publishes it (no worker runs in this test)."""
    value = orjson.dumps({"user_id": user, "model_version": "test", "source": "model",
                          "updated_at": updated_at,
                          "items": [{"item_id": i, "score": 1.0 - k / 100}
                                    for k, i in enumerate(items)]})
    p = Producer(producer_config(s))
    p.produce(s.topic_recommendations, key=user.encode(), value=value)
    p.flush(10)


def _served(s: Settings, user: str) -> list[str]:
    return [e["item_id"] for e in get_list(s, user, n=10)["items"]]


def test_just_touched_items_leave_the_served_list_until_the_new_list(
        settings: Settings, tmp_path: Path) -> None:
    ensure_topics(settings)
    lookup = Proc(["serve"], settings, tmp_path / "serve.log").start()
    try:
        wait_until(lambda: get_list(settings, "nobody")["source"] == "fallback", 60,
                   "lookup API", (lookup,))
        _publish_list(settings, "u1", ["a", "b", "c", "d"], 1.0)
        _publish_list(settings, "u2", ["b", "c"], 1.0)
        wait_until(lambda: _served(settings, "u1") == ["a", "b", "c", "d"], 20, "u1's list",
                   (lookup,))
        with EventProducer(settings) as events:
            events.send({"user_id": "u1", "item_id": "b", "event_type": "click"})
            events.send({"user_id": "u1", "item_id": "zz", "event_type": "view"})
        wait_until(lambda: _served(settings, "u1") == ["a", "c", "d"], 20,
                   "u1's list without b", (lookup,))
        # A list the worker computed before it saw the click still holds b: the lookup
        # drops it on arrival. Other users' lists are untouched.
        _publish_list(settings, "u1", ["b", "e", "c"], 2.0)
        wait_until(lambda: _served(settings, "u1") == ["e", "c"], 20, "stale list filtered",
                   (lookup,))
        assert _served(settings, "u2") == ["b", "c"]
        assert get_list(settings, "u1")["updated_at"] == 2.0
        assert metric(settings.http_port, "streamrec_lookup_seen_filtered_total") >= 1
    finally:
        lookup.stop()
