import pytest

from streamrec.errors import InvalidEvent
from streamrec.schema import parse_interaction, parse_metadata

VALID = [
    (b'{"user_id": "u1", "item_id": "i1"}', {"event_type": "click"}),
    (b'{"user_id": 42, "item_id": 7}', {"user_id": "42", "item_id": "7"}),
    (b'{"user_id": "u", "item_id": "i", "event_type": "rating", "rating": 4.5,'
     b' "timestamp": 1700000000.25, "weight": 2, "event_id": "e1",'
     b' "user_features": {"age": "25-34", "score": 0.5},'
     b' "item_features": {"genre": ["Drama", "Sci-Fi"]}}', {"rating": 4.5, "weight": 2}),
]


@pytest.mark.parametrize("raw,expect", VALID)
def test_valid_events_are_accepted_and_normalised(raw, expect):
    ev = parse_interaction(raw)
    for k, v in expect.items():
        assert getattr(ev, k) == v


INVALID = {
    "not json": (b"{nope", "JSON"),
    "not an object": (b"[1]", "object"),
    "tombstone": (None, "empty"),
    "missing item": (b'{"user_id": "u"}', "item_id"),
    "empty user": (b'{"user_id": "", "item_id": "i"}', "user_id"),
    "too long id": (('{"user_id": "%s", "item_id": "i"}' % ("x" * 257)).encode(), "user_id"),
    "bool id": (b'{"user_id": true, "item_id": "i"}', "user_id"),
    "float id": (b'{"user_id": 1.5, "item_id": "i"}', "user_id"),
    "unknown type": (b'{"user_id": "u", "item_id": "i", "event_type": "zap"}', "event_type"),
    "rating without type": (b'{"user_id": "u", "item_id": "i", "rating": 4}', "rating"),
    "rating type without rating": (b'{"user_id": "u", "item_id": "i", "event_type": "rating"}',
                                   "rating"),
    "rating not a number": (b'{"user_id": "u", "item_id": "i", "event_type": "rating",'
                            b' "rating": "4"}', "rating"),
    "infinite rating": (b'{"user_id": "u", "item_id": "i", "event_type": "rating",'
                        b' "rating": 1e999}', "infinity"),
    "NaN timestamp": (b'{"user_id": "u", "item_id": "i", "timestamp": NaN}', "JSON"),
    "negative timestamp": (b'{"user_id": "u", "item_id": "i", "timestamp": -1}', "timestamp"),
    "negative weight": (b'{"user_id": "u", "item_id": "i", "weight": -1}', "weight"),
    "bool weight": (b'{"user_id": "u", "item_id": "i", "weight": true}', "weight"),
    "unknown key": (b'{"user_id": "u", "item_id": "i", "color": "red"}', "color"),
    "nested feature": (b'{"user_id": "u", "item_id": "i", "user_features": {"a": {"b": 1}}}',
                       "user_features"),
    "numeric list feature": (b'{"user_id": "u", "item_id": "i", "item_features": {"a": [1]}}',
                             "item_features"),
    "empty event_id": (b'{"user_id": "u", "item_id": "i", "event_id": ""}', "event_id"),
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_each_invalid_kind_has_a_readable_reason(name):
    raw, needle = INVALID[name]
    with pytest.raises(InvalidEvent) as exc:
        parse_interaction(raw)
    assert needle in exc.value.reason


def test_metadata_id_comes_from_value_or_key():
    meta = parse_metadata(b'{"item_id": "m1", "features": {"genre": ["Drama"]}}', "item")
    assert meta.item_id == "m1"
    assert parse_metadata(b'{"features": {"age": "18-24"}}', "user", key="u9").user_id == "u9"
    with pytest.raises(InvalidEvent):
        parse_metadata(b'{"features": {}}', "user", key=None)
    with pytest.raises(InvalidEvent):
        parse_metadata(b'{"item_id": "m1", "features": {"x": {"y": 1}}}', "item")


def test_fast_path_accepts_exactly_what_the_model_accepts():
    """parse_interaction validates valid events with a TypedDict twin of the model; both
    must agree on every input (and on the values), or the fast path would widen the
    contract."""
    from streamrec.schema import Event, _parse_model

    extra = [b'{"user_id": "u", "item_id": "i", "rating": null, "event_type": "rating"}',
             b'{"user_id": "u", "item_id": "i", "event_type": "rating", "rating": 2}',
             b'{"user_id": "u", "item_id": "i", "timestamp": 0}',
             b'{"user_id": "u", "item_id": "i", "weight": 0.0, "event_id": null}',
             b'{"user_id": "u", "item_id": "i", "user_features": null}',
             b'{"user_id": "u", "item_id": "i", "item_features": {"g": ["a"], "n": -1}}',
             b'{"user_id": "u", "item_id": "i"} ',
             b'{"user_id": "u", "item_id": "i", "user_id": "v"}']
    for raw in [r for r, _ in VALID] + [r for r, _ in INVALID.values()] + extra:
        try:
            want = Event.of(_parse_model(raw)) if raw is not None else None
        except InvalidEvent:
            want = None
        try:
            got = parse_interaction(raw)
        except InvalidEvent:
            got = None
        assert got == want, raw
