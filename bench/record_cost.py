"""What ``Record`` as a NamedTuple costs the ingest path, against the plain 6-tuple it was.

    python bench/record_cost.py [--records 200000] [--repeat 7]

Two steps of every record's way into the worker, timed per record (best of ``--repeat``):

1. **build**: the read loop's conversion of a fetched message into a record (its six
   accessor calls and the timestamp rule, as ``streamrec/replay.py`` and the worker's
   batch ingest do), as a plain tuple, as ``Record(...)`` and as ``Record._make``-free
   ``tuple.__new__(Record, ...)``;
2. **apply**: ``stream_app.batch.process_records`` over micro-batches of 2,000 such records
   (parse, route, registries, history; ``train=False``, so the model's fit, which costs far
   more, is left out), tuples against Records.

Prints a table and writes ``bench/results/record_cost.json``.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import timeit
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import print_table, write_results  # noqa: E402
from stream_app.batch import process_records  # noqa: E402
from stream_app.engine import Engine  # noqa: E402
from streamrec.replay import Record  # noqa: E402
from streamrec.settings import Settings  # noqa: E402

BATCH = 2000


class Message:
    """What librdkafka hands the read loop: accessor methods, like ``confluent_kafka.Message``."""

    __slots__ = ("_t", "_p", "_o", "_k", "_v", "_ts")

    def __init__(self, t: str, p: int, o: int, k: bytes, v: bytes, ts: int) -> None:
        self._t, self._p, self._o, self._k, self._v, self._ts = t, p, o, k, v, ts

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes:
        return self._k

    def value(self) -> bytes:
        return self._v

    def timestamp(self) -> tuple[int, int]:
        return 1, self._ts


def messages(n: int) -> list[Message]:
    out = []
    for k in range(n):
        user, item = f"u{k % 5000}", f"i{(k * 7) % 2000}"
        doc = {"user_id": user, "item_id": item, "event_type": "click"}
        out.append(Message("interactions", 0, k, user.encode(), orjson.dumps(doc),
                           1_700_000_000_000 + k))
    return out


def build_tuple(msgs: list[Message]) -> list:
    now = time.time()
    out = []
    for m in msgs:
        _, ts = m.timestamp()
        out.append((m.topic(), m.partition(), m.offset(), m.key(), m.value(),
                    ts / 1000.0 if ts and ts > 0 else now))
    return out


def build_record(msgs: list[Message]) -> list:
    now = time.time()
    out = []
    for m in msgs:
        _, ts = m.timestamp()
        out.append(Record(m.topic(), m.partition(), m.offset(), m.key(), m.value(),
                          ts / 1000.0 if ts and ts > 0 else now))
    return out


def build_record_new(msgs: list[Message]) -> list:
    now, new = time.time(), tuple.__new__
    out = []
    for m in msgs:
        _, ts = m.timestamp()
        out.append(new(Record, (m.topic(), m.partition(), m.offset(), m.key(), m.value(),
                                ts / 1000.0 if ts and ts > 0 else now)))
    return out


def apply_all(records: list) -> None:
    s = Settings(guard_enabled=False, padding_min=6000)
    engine = Engine(s)
    for k in range(0, len(records), BATCH):
        process_records(engine, records[k:k + BATCH], s, train=False)


def per_record_ns(fn, arg, n: int, repeat: int) -> float:
    gc.collect()
    return min(timeit.repeat(lambda: fn(arg), number=1, repeat=repeat)) / n * 1e9


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--repeat", type=int, default=7)
    args = p.parse_args(argv)
    msgs = messages(args.records)
    n, r = args.records, args.repeat
    res = {"records": n,
           "build_tuple_ns": per_record_ns(build_tuple, msgs, n, r),
           "build_record_ns": per_record_ns(build_record, msgs, n, r),
           "build_record_new_ns": per_record_ns(build_record_new, msgs, n, r),
           "apply_tuples_ns": per_record_ns(apply_all, build_tuple(msgs), n, max(2, r // 3)),
           "apply_records_ns": per_record_ns(apply_all, build_record(msgs), n, max(2, r // 3))}
    print_table(["step", "tuple ns/record", "Record ns/record", "difference"], [
        ["build (read loop)", res["build_tuple_ns"], res["build_record_ns"],
         res["build_record_ns"] - res["build_tuple_ns"]],
        ["build, tuple.__new__", res["build_tuple_ns"], res["build_record_new_ns"],
         res["build_record_new_ns"] - res["build_tuple_ns"]],
        ["apply (process_records, no fit)", res["apply_tuples_ns"], res["apply_records_ns"],
         res["apply_records_ns"] - res["apply_tuples_ns"]]])
    print(f"wrote {write_results('record_cost', res)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
