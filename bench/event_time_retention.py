"""What Apache Kafka does with a backfill whose record timestamps are the events' own times.

    python bench/event_time_retention.py [--minutes 8]

Starts a local Apache Kafka 3.9 (broker defaults: ``retention.ms`` 7 days, retention check
every 5 minutes), creates two topics with 1 MiB segments, sends MovieLens 100K's ratings
(1997-98) to both with ``EventProducer``: one with ``event_time=True`` (record timestamp =
rating time), one without (record timestamp = send time), then watches each topic's first
offset (log start) until ``--minutes`` pass. Writes ``event_time_retention.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_results  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    from producers.events import EventProducer
    from producers.movielens import rating_event
    from streamrec.broker import start_broker
    from streamrec.movielens import find_movielens, load_movielens
    from streamrec.settings import Settings

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=8.0)
    args = p.parse_args(argv)
    ml = load_movielens(find_movielens(download=False))
    broker = start_broker("kafka")
    try:
        s = Settings(bootstrap_servers=broker.bootstrap)
        admin = AdminClient({"bootstrap.servers": s.bootstrap_servers})
        topics = {"event_time": f"bf-event-{uuid.uuid4().hex[:6]}",
                  "send_time": f"bf-send-{uuid.uuid4().hex[:6]}"}
        futs = admin.create_topics([NewTopic(t, 1, 1, config={"segment.bytes": str(1 << 20)})
                                    for t in topics.values()])
        for f in futs.values():
            f.result()
        for mode, topic in topics.items():
            with EventProducer(s.model_copy(update={"topic_interactions": topic}),
                               event_time=(mode == "event_time")) as prod:
                for k in range(len(ml)):
                    prod.send(rating_event(ml, k))
        consumer = Consumer({"bootstrap.servers": s.bootstrap_servers, "group.id": "x"})
        t0 = time.time()
        samples = []
        while True:
            row = {"seconds": round(time.time() - t0)}
            for mode, topic in topics.items():
                lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
                row[mode] = {"first_offset": lo, "end_offset": hi}
            samples.append(row)
            print(row, flush=True)
            if time.time() - t0 > args.minutes * 60:
                break
            time.sleep(30)
        consumer.close()
        path = write_results("event_time_retention", {
            "events": len(ml), "segment_bytes": 1 << 20, "broker": "Apache Kafka 3.9, defaults",
            "samples": samples,
            "lost": {m: samples[-1][m]["first_offset"] for m in topics}})
        print(f"wrote {path}")
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
