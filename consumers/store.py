"""The lookup consumer's RocksDB store: latest list per user plus the offsets it reflects.

Lists and offsets are written in one ``WriteBatch``, so after a restart the store resumes
exactly where its content ends.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
from rocksdict import Options, Rdict, WriteBatch

_OFFSETS = b"\x00meta:offsets"


class ListStore:
    def __init__(self, state_dir: Path, name: str = "lookup") -> None:
        path = Path(state_dir) / name
        path.mkdir(parents=True, exist_ok=True)
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        self.db = Rdict(str(path / "lists.rdb"), opts)
        self._watchers: list[Callable[[list[bytes]], None]] = []

    def on_change(self, watcher: Callable[[list[bytes]], None]) -> None:
        """Call ``watcher(keys)`` after every ``apply`` with the user ids it wrote or deleted.

        It runs on the writer's thread, after the write is visible to ``get``: a reader cache
        drops those keys there (see ``consumers.api``)."""
        self._watchers.append(watcher)

    def get(self, user_id: str) -> bytes | None:
        return self.db.get(b"l:" + user_id.encode("utf-8"))

    def get_raw(self, key: bytes) -> bytes | None:
        """The stored list under a record key (the user id's bytes as published)."""
        return self.db.get(b"l:" + key)

    def offsets(self) -> dict[str, int]:
        raw = self.db.get(_OFFSETS)
        return orjson.loads(raw) if raw else {}

    def apply(self, records: list[tuple[bytes, bytes | None]], offsets: dict[str, int]) -> None:
        """Write a batch of (key, value) records (None deletes: a tombstone) and offsets."""
        wb = WriteBatch(raw_mode=True)
        for key, value in records:
            if value is None:
                wb.delete(b"l:" + key)
            else:
                wb.put(b"l:" + key, value)
        wb.put(_OFFSETS, orjson.dumps(offsets))
        self.db.write(wb)
        if self._watchers:
            keys = [key for key, _ in records]
            for watcher in self._watchers:
                watcher(keys)

    def count(self) -> int:
        n = 0
        for k in self.db.keys(from_key=b"l:"):
            if not k.startswith(b"l:"):
                break
            n += 1
        return n

    def close(self) -> None:
        self.db.close()
