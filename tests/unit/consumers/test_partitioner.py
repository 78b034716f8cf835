"""The partition of a key is Kafka's: murmur2, positive, modulo the partition count."""

from __future__ import annotations

import random

import pytest

from consumers import partitioner
from consumers.partitioner import _python_partition, murmur2_hash, partition_of, user_partition

# Kafka's own vectors (clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java)
JAVA = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971, b"abc": 479470107}


@pytest.mark.parametrize("key,expected", sorted(JAVA.items()))
def test_python_murmur2_is_kafkas(key: bytes, expected: int) -> None:
    assert murmur2_hash(key) == expected


@pytest.mark.parametrize("partitions", [1, 2, 3, 12, 1000])
def test_partition_matches_the_java_client(partitions: int) -> None:
    for key, h in JAVA.items():
        assert partition_of(key, partitions) == (h & 0x7FFFFFFF) % partitions
        assert _python_partition(key, partitions) == (h & 0x7FFFFFFF) % partitions


def test_native_and_python_agree_on_random_keys() -> None:
    rng = random.Random(3)
    keys = [bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40))) for _ in range(2000)]
    keys += [f"u{k}".encode() for k in range(2000)] + ["ünïcode-ユーザー".encode()]
    for key in keys:
        for n in (1, 4, 7, 48):
            assert _python_partition(key, n) == partition_of(key, n)


def test_users_spread_over_partitions() -> None:
    counts = [0] * 8
    for u in range(8000):
        counts[user_partition(f"u{u}", 8)] += 1
    assert min(counts) > 800


def test_bad_partition_count_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(partitioner, "_native", None)
    with pytest.raises(ValueError):
        partition_of(b"x", 0)
