"""External string ids <-> model rows.

A new id takes the next free (dummy) row; rows are never reused, so row order is assignment
order and "is this row assigned?" is ``row < len(registry)``. Reads never assign.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


class IdRegistry:
    """Append-only map of external ids to dense rows."""

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}
        self._persisted = 0
        for ident in ids:
            self._add(ident)
        self._persisted = len(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, ident: object) -> bool:
        return ident in self._rows

    def get(self, ident: str) -> int | None:
        """The row of ``ident`` or None; never assigns (reads never write)."""
        return self._rows.get(ident)

    def id_of(self, row: int) -> str:
        return self._ids[row]

    def ids_of(self, rows: Sequence[int] | np.ndarray) -> list[str]:
        ids = self._ids
        return [ids[r] for r in rows]

    def _add(self, ident: str) -> int:
        row = len(self._ids)
        self._ids.append(ident)
        self._rows[ident] = row
        return row

    def assign(self, ident: str) -> int:
        """The row of ``ident``, assigning the next free one if it is new (training path)."""
        row = self._rows.get(ident)
        return self._add(ident) if row is None else row

    def assign_many(self, idents: Iterable[str]) -> np.ndarray:
        """Rows for a batch of ids, assigning new ones in first-seen order."""
        rows = self._rows
        out = []
        for ident in idents:
            row = rows.get(ident)
            out.append(self._add(ident) if row is None else row)
        return np.asarray(out, dtype=np.int32)

    def unpersisted(self) -> list[tuple[int, str]]:
        """(row, id) pairs assigned since the last :meth:`mark_persisted`."""
        return [(r, self._ids[r]) for r in range(self._persisted, len(self._ids))]

    def mark_persisted(self) -> None:
        self._persisted = len(self._ids)

    def reset_persisted(self) -> None:
        """Treat every id as new (a full rewrite of the store)."""
        self._persisted = 0

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    @property
    def id_list(self) -> list[str]:
        """The live row -> id list (no copy; callers must not modify it): list building
        looks up tens of ids per user."""
        return self._ids
