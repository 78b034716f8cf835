"""Item-side changes that user-sharded workers share (docs/scaling.md, "Sharded workers").

A shard trains only its own users' events, so each shard counts only its users' positives,
pairs and transitions. Every ``delta_interval_s`` a shard *cuts* what its own events added
since the last cut into one delta, numbered by a per-shard sequence, and produces it to
``item_deltas_topic``; every other shard adds it to its counts (the simulation's
sum-of-deltas rule: counts are sums, so the merged counts equal one worker's).

Exactly once, through crashes, by the worker's existing machinery:

- **cut**: the delta is written to the shard's WAL as a record of its own (topic
  :data:`CUT_TOPIC`, offset = sequence) before it is produced. After a ``kill -9`` the WAL
  replay re-applies the events since the checkpoint (the capture fills again) and meets the
  cut at the same place (the capture is emptied again, and the stored delta is produced
  again). A cut always precedes a checkpoint, so a checkpoint never holds uncut changes;
  deltas not yet acknowledged by the broker are stored with it (the *outbox*) and produced
  again after a restart.
- **apply**: other shards' deltas are records of the worker's input like any other: in the
  WAL, below the stored offsets skipped. A delta produced twice (a retry, or again after its
  sender restarted) is applied once: :class:`AppliedSeqs` remembers, per shard, the
  sequences applied, and is checkpointed with the counts it describes.

Items are named by id in a delta, never by row: rows are assigned per shard, in the order
each meets its items. With ``control_key`` set, deltas are signed (HMAC-SHA256 of the JSON
body, before it in the value) and unsigned or forged ones are refused (dead-letter topic)
like forged control messages.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from stream_app.registry import IdRegistry
from streamrec.errors import InvalidEvent

if TYPE_CHECKING:
    from confluent_kafka import TopicPartition

    from stream_app.engine import Engine

CUT_TOPIC = "__streamrec.delta-cut"
"""The WAL-only topic name of a shard's own cuts (partition = shard, offset = sequence);
its offset in the engine's offsets is the next sequence number."""

FORMAT = 1


def kafka_positions(offsets: dict[str, int]) -> list["TopicPartition"]:
    """The state's ``"topic:partition" -> next offset`` as Kafka positions (for group
    commits), without the WAL-only :data:`CUT_TOPIC` sequences, which name no topic."""
    from confluent_kafka import TopicPartition

    out = []
    for key, off in offsets.items():
        topic, _, part = key.rpartition(":")
        if topic != CUT_TOPIC:
            out.append(TopicPartition(topic, int(part), off))
    return out


class _Triples(BaseModel):
    model_config = ConfigDict(extra="forbid")

    a: list[int] = Field(default_factory=list)
    b: list[int] = Field(default_factory=list)
    w: list[float] = Field(default_factory=list)


class _Delta(BaseModel):
    """A delta record's value (indices point into ``items``)."""

    model_config = ConfigDict(extra="forbid")

    v: int
    shard: int = Field(ge=0)
    seq: int = Field(ge=0)
    items: list[str]
    pos: list[int] = Field(default_factory=list)
    recent: list[int] = Field(default_factory=list)
    pairs: _Triples = Field(default_factory=_Triples)
    trans: _Triples = Field(default_factory=_Triples)


_delta = TypeAdapter(_Delta)


def _mac(key: str, value: bytes) -> bytes:
    return hmac.new(key.encode(), value, hashlib.sha256).hexdigest().encode()


MAX_ENTRIES = 20_000
"""Numbers of each kind in one delta record: ~0.5 MB of JSON at most."""


class DeltaBuffer:
    """What this shard's own events added to the counts since the last cut (item rows)."""

    def __init__(self) -> None:
        self._pos: list[np.ndarray] = []
        self._recent: list[np.ndarray] = []
        self._pairs: list[tuple[np.ndarray, np.ndarray]] = []
        self._trans: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def __bool__(self) -> bool:
        return bool(self._pos or self._recent or self._pairs or self._trans)

    def positives(self, items: np.ndarray) -> None:
        """Counted positives (a user's first positive on each item)."""
        self._pos.append(np.array(items, np.int64))

    def recent(self, items: list[int]) -> None:
        """Every positive, in order (the popular fallback's window)."""
        self._recent.append(np.array(items, np.int64))

    def pairs(self, cur: np.ndarray, prev: np.ndarray) -> None:
        self._pairs.append((np.array(cur, np.int64), np.array(prev, np.int64)))

    def transitions(self, prev: np.ndarray, cur: np.ndarray, w: np.ndarray) -> None:
        self._trans.append((np.array(prev, np.int64), np.array(cur, np.int64),
                            np.array(w, np.float64)))

    def clear(self) -> None:
        self._pos, self._recent, self._pairs, self._trans = [], [], [], []

    def encode(self, items: IdRegistry, shard: int, seq: int,
               max_entries: int = MAX_ENTRIES) -> list[bytes]:
        """The deltas' record values, numbered from ``seq``: duplicates summed, rows turned
        into item ids, at most ``max_entries`` numbers of each kind in one (a bootstrap's
        whole history is one cut; a Kafka record holds ~1 MB by default)."""
        pos = np.concatenate(self._pos) if self._pos else np.zeros(0, np.int64)
        recent = np.concatenate(self._recent) if self._recent else np.zeros(0, np.int64)
        pa, pb, pw = _summed([(a, b, np.ones(len(a))) for a, b in self._pairs])
        ta, tb, tw = _summed(self._trans)
        parts = []
        longest = max(len(pos), len(recent), len(pa), len(ta), 1)
        for k in range(0, longest, max_entries):
            cut = slice(k, k + max_entries)
            parts.append(_encode_one(items, shard, seq + len(parts), pos[cut], recent[cut],
                                     (pa[cut], pb[cut], pw[cut]), (ta[cut], tb[cut], tw[cut])))
        return parts


def _encode_one(items: IdRegistry, shard: int, seq: int, pos: np.ndarray, recent: np.ndarray,
                pairs: tuple[np.ndarray, ...], trans: tuple[np.ndarray, ...]) -> bytes:
    (pa, pb, pw), (ta, tb, tw) = pairs, trans
    rows, inverse = np.unique(np.concatenate([pos, recent, pa, pb, ta, tb]),
                              return_inverse=True)
    cut = np.cumsum([len(pos), len(recent), len(pa), len(pb), len(ta)])
    ipos, irecent, ipa, ipb, ita, itb = np.split(inverse, cut)
    doc = {"v": FORMAT, "shard": shard, "seq": seq, "items": items.ids_of(rows),
           "pos": ipos, "recent": irecent, "pairs": {"a": ipa, "b": ipb, "w": pw},
           "trans": {"a": ita, "b": itb, "w": tw}}
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


def _summed(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, w) with repeated (a, b) summed."""
    if not parts:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float64)
    a = np.concatenate([p[0] for p in parts])
    b = np.concatenate([p[1] for p in parts])
    w = np.concatenate([p[2] for p in parts]).astype(np.float64)
    keys = np.stack([a, b], axis=1)
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    return uniq[:, 0], uniq[:, 1], np.bincount(inv.reshape(-1), weights=w)


def sign_value(body: bytes, key: str | None) -> bytes:
    """The record value: the JSON body, after its HMAC (64 hex chars) when ``key`` is set
    (in the value, not a header, so the WAL keeps it and a replay checks it again)."""
    return _mac(key, body) + body if key else body


def parse_delta(value: bytes | None, key: str | None) -> _Delta:
    """Validate (and with ``key`` authenticate) a delta record; InvalidEvent otherwise."""
    if not value:
        raise InvalidEvent("item delta: empty value")
    if key:
        sig, value = value[:64], value[64:]
        if value[:1] != b"{" and sig[:1] == b"{":
            raise InvalidEvent("item delta: unsigned delta refused (control_key is set)")
        if not hmac.compare_digest(sig, _mac(key, value)):
            raise InvalidEvent("item delta: bad signature (forged, or signed with another key)")
    try:
        d = _delta.validate_json(value)
    except ValidationError as exc:
        raise InvalidEvent(f"item delta: {exc.errors()[0]['msg']} at "
                           f"{'.'.join(map(str, exc.errors()[0]['loc']))}") from None
    if d.v != FORMAT:
        raise InvalidEvent(f"item delta: format {d.v}, this worker reads {FORMAT}")
    n = len(d.items)
    for name, t in (("pairs", d.pairs), ("trans", d.trans)):
        if not len(t.a) == len(t.b) == len(t.w):
            raise InvalidEvent(f"item delta: {name} a, b and w differ in length")
        if any(not 0 <= x < n for x in (*t.a, *t.b)):
            raise InvalidEvent(f"item delta: {name} names an item index outside items")
    if any(not 0 <= x < n for x in (*d.pos, *d.recent)):
        raise InvalidEvent("item delta: pos or recent names an item index outside items")
    return d


class AppliedSeqs:
    """Per shard, the delta sequences applied: the last :data:`WINDOW` of them by number,
    and everything older than that as applied. A shard produces its deltas in order (its
    outbox again in order after a restart), so only a retry arrives out of order, and never
    ``WINDOW`` deltas (~17 min at 1 s) late. Bounded, and right for a shard that starts
    reading another shard's deltas in the middle of its sequence."""

    WINDOW = 1024

    def __init__(self, state: dict | None = None) -> None:
        self.top: dict[int, int] = {}
        self.recent: dict[int, set[int]] = {}
        for shard, (top, recent) in (state or {}).items():
            self.top[int(shard)] = int(top)
            self.recent[int(shard)] = set(recent)

    def seen(self, shard: int, seq: int) -> bool:
        top = self.top.get(shard)
        return top is not None and (seq <= top - self.WINDOW or seq in self.recent[shard])

    def add(self, shard: int, seq: int) -> None:
        recent = self.recent.setdefault(shard, set())
        recent.add(seq)
        top = self.top[shard] = max(seq, self.top.get(shard, seq))
        if len(recent) > 2 * self.WINDOW:
            self.recent[shard] = {s for s in recent if s > top - self.WINDOW}

    def state(self) -> dict:
        return {str(s): [self.top[s], sorted(self.recent[s])] for s in self.top}


def apply_delta(engine: "Engine", d: _Delta) -> bool:
    """Add another shard's delta to ``engine`` once; False if it was applied already."""
    if engine.applied_deltas.seen(d.shard, d.seq):
        return False
    rows = engine.items.assign_many(d.items).astype(np.int64)
    engine._grow()   # noqa: SLF001 - items another shard met first get their model rows
    counts = np.bincount(np.asarray(d.pos, np.int64), minlength=len(rows))
    has = np.flatnonzero(counts)

    def triples(t: _Triples) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (rows[np.asarray(t.a, np.int64)], rows[np.asarray(t.b, np.int64)],
                np.asarray(t.w, np.float64))

    engine.cooc.add_shared(rows[has], counts[has], *triples(d.pairs), *triples(d.trans))
    engine.add_recent_positives(rows[np.asarray(d.recent, np.int64)].tolist())
    engine.applied_deltas.add(d.shard, d.seq)
    return True
