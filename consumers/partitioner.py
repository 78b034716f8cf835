"""Which partition of a topic holds a key: Kafka's murmur2, as our producers partition.

Every producer of streamrec sets ``partitioner=murmur2_random`` (``streamrec.kafka``): a
keyed record goes to ``toPositive(murmur2(key)) % partitions``, the Java client's default, so
a user's events and their list sit in the partition this function names (per topic: the
same partition number when two topics have the same partition count). The partitioned
lookup (``consumers/partitioned.py``) uses it to find which replica owns a user, and the
sharding simulation (``bench/sharding.py``) to split users across shards.

Recent confluent-kafka releases (2.16 here) expose librdkafka's own function
(``confluent_kafka.murmur2``, 0.2 µs a key); older ones (the dependency allows >= 2.4) get
the same function in Python (a few µs a key). Both are tested on Kafka's own test vectors
(``tests/unit/test_partitioner.py``), and against a real broker's placement of our
producer's records (``tests/integration/test_scaling.py``).
"""

from __future__ import annotations

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2_hash(data: bytes) -> int:
    """Kafka's ``Utils.murmur2`` as a signed 32-bit int (the Java value)."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    end = length & ~3
    for i in range(0, end, 4):
        k = (data[i] | data[i + 1] << 8 | data[i + 2] << 16 | data[i + 3] << 24)
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length & 3
    if rest == 3:
        h ^= data[end + 2] << 16
    if rest >= 2:
        h ^= data[end + 1] << 8
    if rest >= 1:
        h ^= data[end]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def _python_partition(key: bytes, partitions: int) -> int:
    if partitions <= 0:
        raise ValueError("partitions must be at least 1")
    return (murmur2_hash(key) & 0x7FFFFFFF) % partitions


try:
    from confluent_kafka import murmur2 as _native
except ImportError:  # older confluent-kafka
    _native = None


def partition_of(key: bytes, partitions: int) -> int:
    """The partition a record keyed ``key`` goes to among ``partitions`` (murmur2, as every
    streamrec producer and the Java client partition keyed records)."""
    if _native is not None:
        return _native(key, partitions)
    return _python_partition(key, partitions)


def user_partition(user_id: str, partitions: int) -> int:
    """The partition of a user's records (keyed by the UTF-8 user id)."""
    return partition_of(user_id.encode("utf-8"), partitions)
