"""What librdkafka's ``produce()`` of one list costs the worker, idle and beside busy work.

    python bench/produce_cost.py [--records 600] [--busy 0 2 3] [--linger 0 1]

A local Apache Kafka; a confluent-kafka producer with streamrec's settings
(``producer_config``) sends a 900-byte record (a list's size) every 4 ms, and each
``produce()`` call is timed on its own. ``--busy N`` runs N processes that spin on the CPU
meanwhile (this box has 2 cores: what a worker sharing its cores with the broker, the lookup
and the load generator meets). confluent-kafka keeps the interpreter lock inside
``produce()``, so a call that blocks stalls the whole worker (docs/benchmarks.md, "Event →
list, hop by hop"). Prints p50 / p90 / p99 / mean per (busy, linger); writes
``produce_cost.json``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import percentile, print_table, write_results  # noqa: E402


def _spin(stop) -> None:
    while not stop.is_set():
        sum(range(10_000))


def time_produce(s, linger: float, n: int) -> list[float]:
    """Seconds per ``produce()`` call, one record every 4 ms."""
    from confluent_kafka import Producer

    from streamrec.kafka import producer_config
    p = Producer(producer_config(s, **{"linger.ms": linger}))
    p.produce(s.topic_recommendations, key=b"warm", value=b"x")
    p.flush(30)
    out = []
    for k in range(n):
        t0 = time.perf_counter()
        p.produce(s.topic_recommendations, key=str(k).encode(), value=b"x" * 900,
                  on_delivery=lambda err, msg: None)
        out.append(time.perf_counter() - t0)
        p.poll(0)
        time.sleep(0.004)
    p.flush(30)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=600)
    ap.add_argument("--busy", type=int, nargs="+", default=[0, 2, 3])
    ap.add_argument("--linger", type=float, nargs="+", default=[0, 1])
    args = ap.parse_args()
    from streamrec.broker import ensure_topics, free_port
    from streamrec.broker.kafka import KafkaBroker
    from streamrec.settings import Settings

    broker = KafkaBroker(free_port(), data_dir=Path(tempfile.mkdtemp(prefix="produce-cost-")))
    broker.start()
    rows, results = [], []
    try:
        s = Settings(bootstrap_servers=broker.bootstrap)
        ensure_topics(s)
        for busy in args.busy:
            stop = mp.Event()
            spinners = [mp.Process(target=_spin, args=(stop,)) for _ in range(busy)]
            for proc in spinners:
                proc.start()
            try:
                for linger in args.linger:
                    t = [v * 1e6 for v in time_produce(s, linger, args.records)]
                    row = {"busy": busy, "linger_ms": linger, "p50_us": percentile(t, 50),
                           "p90_us": percentile(t, 90), "p99_us": percentile(t, 99),
                           "mean_us": statistics.mean(t)}
                    results.append(row)
                    rows.append(list(row.values()))
            finally:
                stop.set()
                for proc in spinners:
                    proc.join()
    finally:
        broker.stop()
    print_table(["busy processes", "linger ms", "p50 us", "p90 us", "p99 us", "mean us"], rows)
    print(f"wrote {write_results('produce_cost', {'runs': results, 'args': vars(args)})}")


if __name__ == "__main__":
    main()
