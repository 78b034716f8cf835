"""The worker's durable state in RocksDB (rocksdict): checkpoints plus a write-ahead log.

Every micro-batch first appends its raw records to a WAL entry (one RocksDB write), then is
applied. Every ``checkpoint_interval_s`` (stretched as the state grows) the whole state is
snapshotted: model arrays to a versioned ``.npz``/``.json`` pair, and registry, seen sets,
dedup ids, popularity, input offsets and the users whose lists may not be on the topic yet
in one ``WriteBatch`` that also names the model file and drops WAL entries it covers. The
snapshot is captured between micro-batches (:meth:`WorkerStore.snapshot`: array copies, the
batch built) and written by the worker's background thread (:meth:`WorkerStore.write`).

On restart the snapshot is loaded and the WAL replayed through the same code, so the state
describes exactly the offsets it claims: records below them are skipped when Kafka redelivers
them, records above them are applied once. Nothing is trusted that is newer than the model.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
from rocksdict import Options, Rdict, WriteBatch, WriteOptions

from stream_app.deltas import AppliedSeqs
from stream_app.engine import Changes, Engine
from stream_app.guard import Guard, GuardConfig
from stream_app.model import PaddedLightFM, write_snapshot
from stream_app.registry import IdRegistry
from streamrec.errors import ModelStateError
from streamrec.replay import Record
from streamrec.settings import Settings

log = logging.getLogger(__name__)


_SYNC = WriteOptions()
_SYNC.sync = True
_CHECKPOINT = b"meta:checkpoint"
_OFFSETS = b"meta:offsets"
_POPULAR = b"meta:popular"
_GUARD = b"meta:guard"
_PENDING = b"meta:pending"
_DELTAS = b"meta:deltas"       # sharded workers: other shards' deltas applied, own unacked


@dataclass
class Snapshot:
    """A checkpoint captured by :meth:`WorkerStore.snapshot`, not yet written."""

    path: Path
    arrays: dict[str, np.ndarray]
    doc: dict
    batch: WriteBatch
    offsets: dict[str, int]


_WAL_V1 = b"\x01"
_WAL_HEAD = struct.Struct("<Hiqdii")
"""topic length, partition, offset, timestamp, key length, value length (-1: None)."""


def encode_wal(records: list[Record]) -> bytes:
    """A WAL entry: the records' raw key and value bytes, exactly as Kafka delivered them,
    so that a replay after a crash decides exactly as the first pass (an event dead-lettered
    for invalid UTF-8 stays invalid)."""
    parts = [_WAL_V1]
    for topic, part, offset, key, value, ts in records:
        t = topic.encode()
        parts.append(_WAL_HEAD.pack(len(t), part, offset, ts, -1 if key is None else len(key),
                                    -1 if value is None else len(value)))
        parts.append(t)
        if key is not None:
            parts.append(key)
        if value is not None:
            parts.append(value)
    return b"".join(parts)


def decode_wal(raw: bytes) -> list[Record]:
    """The records of a WAL entry (also the JSON entries of earlier versions)."""
    if raw[:1] != _WAL_V1:
        return [Record(t, p, o, k.encode() if k is not None else None,
                       v.encode() if v is not None else None, ts)
                for t, p, o, k, v, ts in orjson.loads(raw)]
    view, pos, out = memoryview(raw), 1, []
    while pos < len(raw):
        tlen, part, offset, ts, klen, vlen = _WAL_HEAD.unpack_from(view, pos)
        pos += _WAL_HEAD.size
        topic = bytes(view[pos:pos + tlen]).decode()
        pos += tlen
        key = None if klen < 0 else bytes(view[pos:pos + klen])
        pos += max(klen, 0)
        value = None if vlen < 0 else bytes(view[pos:pos + vlen])
        pos += max(vlen, 0)
        out.append(Record(topic, part, offset, key, value, ts))
    return out


def _lock_dir(root: Path):
    """Hold ``root/worker.lock`` for this process's lifetime: one worker per state dir.
    RocksDB would refuse a second one too, with a raw "lock hold by" error mid-start."""
    fh = open(root / "worker.lock", "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise ModelStateError(f"another worker ({holder}) is running on the state dir "
                              f"{root.parent}; stop it first, or give this one its own "
                              "--state-dir") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}")
    fh.flush()
    return fh


def _row_key(prefix: bytes, row: int) -> bytes:
    return prefix + b"%010d" % row


def _put_changes(wb: WriteBatch, engine: Engine, changes: Changes) -> None:
    """The rows an engine's changes touch: new ids, the seen items and positives of users
    whose history changed, dedup ids added and forgotten."""
    for prefix, new in ((b"reg:u:", changes.new_users), (b"reg:i:", changes.new_items)):
        for row, ident in new:
            wb.put(_row_key(prefix, row), ident.encode())
    positives = engine.cooc.history
    for row in changes.dirty_users:
        hist = positives[row]
        flag = b"T" if len(hist) else b"F"   # trained = has a positive (Engine.is_trained)
        wb.put(_row_key(b"seen:", row), flag + engine.seen[row].tobytes())
        if len(hist):
            wb.put(_row_key(b"hist:", row), hist.tobytes())
    for eid in changes.new_event_ids:
        wb.put(b"dedup:" + eid.encode(), b"")
    for eid in changes.evicted_event_ids:
        wb.delete(b"dedup:" + eid.encode())


class WorkerStore:
    """RocksDB at ``<state_dir>/worker``; models under ``<state_dir>/worker/models``."""

    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir) / "worker"
        self.models = self.root / "models"
        self.models.mkdir(parents=True, exist_ok=True)
        self._lock = _lock_dir(self.root)
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        try:
            self.db = Rdict(str(self.root / "state.rdb"), opts)
        except Exception as exc:   # rocksdict raises a bare Exception with RocksDB's text
            self._lock.close()
            raise ModelStateError(
                f"the worker's state store {self.root / 'state.rdb'} cannot be opened ({exc}). "
                f"If it is corrupt, move {self.root} aside: the worker then rebuilds its "
                "state from the topics") from None
        last = self._last_key(b"wal:")
        cp = self.db.get(_CHECKPOINT)
        self.wal_seq = max(int(last[4:]) if last else 0,
                           int(orjson.loads(cp)["wal_seq"]) if cp else 0)
        # model arrays of the last snapshot, refilled by the next one: a snapshot is always
        # written (or dropped) before the next is taken, so nothing still reads them then
        self._model_buffers: dict[str, np.ndarray] = {}

    def close(self) -> None:
        self.db.close()
        self._lock.close()

    # ----------------------------------------------------------------- iteration
    def _scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        for k, v in self.db.items(from_key=prefix):
            if not k.startswith(prefix):
                break
            yield k, v

    def _last_key(self, prefix: bytes) -> bytes | None:
        last = None
        for k, _ in self._scan(prefix):
            last = k
        return last

    # ----------------------------------------------------------------- WAL
    def append_wal(self, records: list[Record]) -> int:
        """Log a batch before it is applied; returns its sequence number. Not synced: a
        process crash (``kill -9``) loses nothing (the write is in the OS already); a power
        cut may lose entries after the last checkpoint, and those records are read again
        from Kafka at the checkpoint's offsets (group commit: the next checkpoint syncs)."""
        self.wal_seq += 1
        self.db[b"wal:%012d" % self.wal_seq] = encode_wal(records)
        return self.wal_seq

    def wal_after(self, seq: int) -> Iterator[tuple[int, list[Record]]]:
        for k, v in self._scan(b"wal:"):
            s = int(k[4:])
            if s > seq:
                yield s, decode_wal(v)

    # ----------------------------------------------------------------- checkpoint
    def checkpoint(self, engine: Engine, full: bool = False,
                   pending: Iterable[int] = (), outbox: dict[int, bytes] | None = None
                   ) -> Path:
        """Snapshot ``engine`` as of WAL entry ``self.wal_seq`` and write it now; returns
        the model path. ``full`` replaces everything stored (a model swap): the same single
        WriteBatch first deletes every key, then writes the whole engine, so a crash leaves
        old or new state, never a mix. ``pending``: user rows whose lists may not have
        reached the topic yet (republished after a restart)."""
        snap = self.snapshot(engine, full=full, pending=pending, outbox=outbox)
        self.write(snap)
        return snap.path

    def snapshot(self, engine: Engine, full: bool = False,
                 pending: Iterable[int] = (), outbox: dict[int, bytes] | None = None
                 ) -> "Snapshot":
        """Everything a checkpoint writes, captured now (model arrays copied, the RocksDB
        batch built), so :meth:`write` can run in a thread while the engine moves on. The
        engine's change sets are handed over and cleared; if the write then fails, the
        next checkpoint must be ``full``. Write (or drop) a snapshot before taking the next:
        the next one refills its model arrays in place."""
        seq = self.wal_seq
        name = f"model-{seq:012d}-{engine.batch_seq:08d}.npz"
        meta = {"offsets": dict(engine.offsets), "created": engine.created,
                "batch_seq": engine.batch_seq, "wal_seq": seq, "n_applied": engine.n_applied,
                "model_version": engine.model_version, "saved_at": time.time(),
                "n_users": len(engine.users), "n_items": len(engine.items)}
        arrays, doc = engine.model.snapshot(meta, into=self._model_buffers)
        sharded = engine.settings.shards > 1
        if sharded:   # other shards' counts: not rebuilt from this shard's histories
            arrays = {**arrays, **engine.cooc.count_arrays()}
        wb = WriteBatch(raw_mode=True)
        if full:
            # every key but the WAL entries after ``seq``: those were appended after this
            # snapshot and must be replayed after it (deleted below up to ``seq``)
            wb.delete_range(b"\x00", b"wal:")
            wb.delete_range(b"wal:\xff", b"\xff")
        _put_changes(wb, engine, engine.take_changes(everything=full))
        wb.put(_POPULAR, np.fromiter(engine.recent_positives, dtype=np.int32).tobytes())
        wb.put(_OFFSETS, orjson.dumps(engine.offsets))
        wb.put(_PENDING, np.fromiter(sorted(set(pending)), dtype=np.int32).tobytes())
        if engine.guard is not None:
            wb.put(_GUARD, orjson.dumps(engine.guard.state()))
        if sharded:
            wb.put(_DELTAS, orjson.dumps({
                "applied": engine.applied_deltas.state(),
                "outbox": {str(k): v.decode() for k, v in (outbox or {}).items()}}))
        wb.put(_CHECKPOINT, orjson.dumps({"model": name, **meta}))
        if seq:
            wb.delete_range(b"wal:", b"wal:%012d" % (seq + 1))
        return Snapshot(self.models / name, arrays, doc, wb, meta["offsets"])

    def write(self, snap: "Snapshot") -> None:
        """Write a snapshot: model files first (fsynced, renamed, directory fsynced), then
        the one RocksDB batch that names them, synced (and with it every WAL entry before
        it), then drop older model files. Safe to run in a thread. After a power cut the
        state is this checkpoint or the one before, each whole."""
        t0 = time.perf_counter()
        write_snapshot(snap.path, snap.arrays, snap.doc)
        self.db.write(snap.batch, _SYNC)
        for old in self.models.glob("model-*"):
            if old.stem != snap.path.stem:
                old.unlink(missing_ok=True)
        log.info("checkpoint %s written in %.0f ms (offsets %s)", snap.path.name,
                 (time.perf_counter() - t0) * 1e3, snap.offsets)

    def outbox(self) -> dict[int, bytes]:
        """Sharded workers: this shard's deltas the last checkpoint could not vouch for
        (not yet acknowledged by the broker), produced again after a restart."""
        raw = orjson.loads(self.db.get(_DELTAS) or b"{}").get("outbox", {})
        return {int(k): v.encode() for k, v in raw.items()}

    def pending_rows(self) -> list[int]:
        """User rows whose lists the last checkpoint could not vouch for (see
        :meth:`checkpoint`): the worker republishes them after a restart."""
        return np.frombuffer(self.db.get(_PENDING) or b"", dtype=np.int32).tolist()

    def load(self, settings: Settings) -> tuple[Engine, int] | None:
        """The engine as of the last checkpoint and its WAL sequence, or None if none."""
        raw = self.db.get(_CHECKPOINT)
        if raw is None:
            return None
        cp = orjson.loads(raw)
        model, doc = PaddedLightFM.load(self.models / cp["model"])
        users = IdRegistry(v.decode() for _, v in self._scan(b"reg:u:"))
        items = IdRegistry(v.decode() for _, v in self._scan(b"reg:i:"))
        if len(users) != doc["n_users"] or len(items) != doc["n_items"]:
            raise ModelStateError(
                f"state in {self.root} does not match its model checkpoint "
                f"({len(users)} vs {doc['n_users']} users); delete {self.root} to rebuild "
                "it from the topics")
        engine = Engine(settings, model=model, users=users, items=items, created=cp["created"])
        engine.batch_seq = cp["batch_seq"]
        engine.n_applied = cp.get("n_applied", 0)
        rows, seen = [], []
        for k, v in self._scan(b"seen:"):   # the T/F flag is redundant with hist: (trained)
            rows.append(int(k[5:]))
            seen.append(np.frombuffer(v, dtype=np.int32, offset=1))
        engine.seen.load(rows, seen)
        engine.cooc.load_histories({int(k[5:]): np.frombuffer(v, dtype=np.int32)
                                    for k, v in self._scan(b"hist:")})
        engine.dedup = OrderedDict((k[6:].decode(), None) for k, _ in self._scan(b"dedup:"))
        pop = np.frombuffer(self.db.get(_POPULAR) or b"", dtype=np.int32).tolist()
        engine.recent_positives = deque(pop, maxlen=settings.popular_window)
        engine.popularity.update(engine.recent_positives)
        engine.offsets = dict(orjson.loads(self.db.get(_OFFSETS) or b"{}"))
        if settings.shards > 1:
            with np.load(self.models / cp["model"], allow_pickle=False) as npz:
                if "cooc_counts" in npz.files:
                    engine.cooc.load_count_arrays({k: npz[k] for k in npz.files
                                                   if k.startswith("cooc_")})
            raw_deltas = orjson.loads(self.db.get(_DELTAS) or b"{}")
            engine.applied_deltas = AppliedSeqs(raw_deltas.get("applied"))
        raw_guard = self.db.get(_GUARD)
        if raw_guard is not None and engine.guard is not None:
            engine.guard = Guard.from_state(orjson.loads(raw_guard),
                                            GuardConfig.from_settings(settings))
        return engine, int(cp["wal_seq"])
