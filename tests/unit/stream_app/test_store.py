"""The worker's RocksDB store: what a crash or a second process meets."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from stream_app.batch import process_records
from stream_app.engine import Engine
from stream_app.store import WorkerStore
from streamrec.errors import ModelStateError
from streamrec.settings import Settings


def _records(start: int, n: int, topic: str = "interactions") -> list[tuple]:
    return [(topic, 0, off, f"u{off % 7}".encode(),
             orjson.dumps({"user_id": f"u{off % 7}", "item_id": f"i{off}"}), 1.0e9 + off)
            for off in range(start, start + n)]


def _apply(store: WorkerStore, engine: Engine, s: Settings, records: list[tuple]) -> None:
    store.append_wal(records)
    process_records(engine, records, s)


def test_a_full_checkpoint_keeps_the_wal_entries_appended_while_it_was_written(
        tmp_path: Path) -> None:
    """A full checkpoint (after a failed write, or a model swap) used to delete the whole
    key space, WAL entries appended after its snapshot included: a kill -9 before the next
    checkpoint then lost those events for good."""
    s = Settings(state_dir=tmp_path, padding_min=10, guard_enabled=False)
    engine = Engine(s)
    store = WorkerStore(tmp_path)
    _apply(store, engine, s, _records(0, 20))
    snap = store.snapshot(engine, full=True)
    late = _records(20, 5)
    _apply(store, engine, s, late)          # the engine moves on while the write runs
    store.write(snap)
    store.close()                           # kill -9 before the next checkpoint

    store = WorkerStore(tmp_path)
    try:
        restored, seq = store.load(s)
        assert restored.offsets == {"interactions:0": 20}
        replay = list(store.wal_after(seq))
        assert [recs for _, recs in replay] == [late]
        for _, recs in replay:
            process_records(restored, recs, s)
        assert restored.n_applied == 25
    finally:
        store.close()


def test_one_worker_per_state_dir(tmp_path: Path) -> None:
    first = WorkerStore(tmp_path)
    try:
        with pytest.raises(ModelStateError, match="another worker .* is running on the state "
                                                  "dir"):
            WorkerStore(tmp_path)
    finally:
        first.close()
    WorkerStore(tmp_path).close()   # free again once the first one is closed


def test_a_corrupt_store_is_one_clear_error(tmp_path: Path) -> None:
    WorkerStore(tmp_path).close()
    current = next((tmp_path / "worker" / "state.rdb").glob("CURRENT"))
    current.write_text("MANIFEST-999999\n")     # points at a manifest that does not exist
    with pytest.raises(ModelStateError, match="cannot be opened .* move .* aside"):
        WorkerStore(tmp_path)


def test_the_wal_keeps_raw_bytes_so_a_replay_decides_as_the_first_pass(tmp_path: Path) -> None:
    """An event with invalid UTF-8 goes to the DLQ; the WAL used to re-decode records with
    errors="replace", which made it valid on replay after a crash, and it was trained on."""
    s = Settings(state_dir=tmp_path, padding_min=10, guard_enabled=False)
    bad = b'{"user_id": "u\xff", "item_id": "i1"}'
    records = [("interactions", 0, 0, b"u\xff", bad, 1.0e9),
               ("interactions", 0, 1, None, b'{"user_id": "u2", "item_id": "i2"}', 1.0e9),
               ("items", 0, 0, b"i9", None, 1.0e9)]
    engine = Engine(s)
    first = process_records(engine, records, s)
    assert [reason.split(":")[0] for _, _, reason in first.invalid] == ["interactions", "items"]
    store = WorkerStore(tmp_path)
    try:
        store.append_wal(records)
        (_, replayed), = store.wal_after(0)
    finally:
        store.close()
    assert replayed == records
    again = process_records(Engine(s), replayed, s)
    assert len(again.invalid) == len(first.invalid) == 2
    assert again.outcome.applied == first.outcome.applied == 1
