"""The lookup's read-your-writes filter (consumers/seen.py)."""

from __future__ import annotations

import orjson

from consumers.seen import RecentSeen, event_user_item, without_items


def _list(*items: str) -> bytes:
    return orjson.dumps({"user_id": "u1", "items": [{"item_id": i, "score": 1.0} for i in items],
                         "model_version": "v", "updated_at": 1.0, "source": "model"})


def test_recent_seen_is_bounded_per_user_and_in_users() -> None:
    seen = RecentSeen(max_users=2, per_user=3)
    for item in "abcd":
        seen.add("u1", item)
    assert list(seen.items_of("u1")) == ["b", "c", "d"]
    seen.add("u2", "x")
    seen.add("u1", "e")  # u1 is now the most recent user
    seen.add("u3", "y")  # evicts u2, the least recently active
    assert seen.items_of("u2") is None and seen.items_of("u1") is not None
    assert len(seen) == 2


def test_without_items_removes_only_listed_items_and_keeps_the_rest_intact() -> None:
    out = without_items(_list("a", "b", "c"), {"b"})
    doc = orjson.loads(out)
    assert [e["item_id"] for e in doc["items"]] == ["a", "c"]
    assert doc["updated_at"] == 1.0 and doc["source"] == "model"
    assert without_items(_list("a"), {"z"}) is None  # nothing to drop: keep the bytes
    assert without_items(b"not json", {"a"}) is None


def test_event_user_item_reads_valid_events_and_ignores_anything_else() -> None:
    ev = orjson.dumps({"user_id": "u1", "item_id": "i9", "event_type": "click"})
    assert event_user_item(ev) == ("u1", "i9")
    for bad in (None, b"", b"{", b"[1]", orjson.dumps({"user_id": 3, "item_id": "x"}),
                orjson.dumps({"user_id": "u"})):
        assert event_user_item(bad) is None


def test_may_list_is_never_wrong_when_it_says_no() -> None:
    from consumers.seen import may_list

    value = _list("a", "b c", "ü", 'q"x')
    for item in ("a", "b c", "ü", 'q"x'):
        assert may_list(value, item)
    assert not may_list(value, "zz")
    assert not may_list(value, "b")  # a prefix of "b c" is not its id
