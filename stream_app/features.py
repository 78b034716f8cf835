"""Feature columns that never change width: hashed metadata buckets plus identity columns.

Column layout per side: ``[0, buckets)`` hashed ``name=value`` features, then one identity
column per row slot. Identity columns sit last so growing the padding only appends columns
(and model rows), never shifts existing ones.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp

FeatureMap = Mapping[str, "str | float | int | list[str]"]


def feature_tokens(features: FeatureMap) -> list[tuple[str, float]]:
    """``name=value`` tokens with a weight: strings and list elements weigh 1, numbers their
    value (callers should scale numeric features to about [-1, 1])."""
    out: list[tuple[str, float]] = []
    for name, value in features.items():
        if isinstance(value, str):
            out.append((f"{name}={value}", 1.0))
        elif isinstance(value, list):
            out.extend((f"{name}={v}", 1.0) for v in value)
        else:
            out.append((name, float(value)))
    return out


def hash_column(token: str, buckets: int) -> int:
    """A stable column for a token (crc32: the same across processes and machines)."""
    return zlib.crc32(token.encode("utf-8")) % buckets


class FeatureSpace:
    """Per-row metadata of one side (users or items) and the CSR matrix LightFM needs.

    The matrix is rebuilt lazily, only after metadata changed or capacity grew; between
    those a micro-batch reuses it as is.
    """

    def __init__(self, buckets: int, capacity: int, feature_weight: float) -> None:
        self.buckets = buckets
        self.capacity = capacity
        self.feature_weight = feature_weight
        self._meta: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._raw: dict[int, dict] = {}
        self._matrix: sp.csr_matrix | None = None
        self.dirty_rows: set[int] = set()

    @property
    def n_columns(self) -> int:
        return self.buckets + self.capacity

    def set(self, row: int, features: FeatureMap) -> bool:
        """Set a row's metadata; returns True if it changed."""
        raw = dict(features)
        if self._raw.get(row) == raw:
            return False
        tokens = feature_tokens(raw)
        if tokens:
            cols = np.array([hash_column(t, self.buckets) for t, _ in tokens], dtype=np.int32)
            vals = np.array([w for _, w in tokens], dtype=np.float32)
            # Equal share of the metadata weight per token, so a row's metadata total is
            # ``feature_weight`` whether it has one genre or five.
            vals *= self.feature_weight / len(tokens)
            self._meta[row] = (cols, vals)
        else:
            self._meta.pop(row, None)
        self._raw[row] = raw
        self._matrix = None
        self.dirty_rows.add(row)
        return True

    def get(self, row: int) -> dict | None:
        return self._raw.get(row)

    def items(self) -> list[tuple[int, dict]]:
        return list(self._raw.items())

    def grow(self, capacity: int) -> None:
        if capacity > self.capacity:
            self.capacity = capacity
            self._matrix = None

    def matrix(self) -> sp.csr_matrix:
        """(capacity x buckets+capacity) CSR float32: identity 1 plus hashed metadata."""
        if self._matrix is None:
            self._matrix = self._build()
        return self._matrix

    def _build(self) -> sp.csr_matrix:
        n = self.capacity
        counts = np.ones(n, dtype=np.int64)
        for row, (cols, _) in self._meta.items():
            counts[row] += len(cols)
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        indices = np.empty(indptr[-1], dtype=np.int32)
        data = np.empty(indptr[-1], dtype=np.float32)
        indices[indptr[:-1]] = self.buckets + np.arange(n, dtype=np.int32)
        data[indptr[:-1]] = 1.0
        for row, (cols, vals) in self._meta.items():
            start = indptr[row] + 1
            indices[start:start + len(cols)] = cols
            data[start:start + len(cols)] = vals
        m = sp.csr_matrix((data, indices, indptr), shape=(n, self.n_columns))
        m.sum_duplicates()
        return m
