"""The chaos suite, long version (issue #16): every scenario on a local Apache Kafka, under
1,000 events/s without ``event_id`` and 1,000 lookups/s; the table of docs/reliability.md.

    python bench/chaos.py [--short] [--only NAME ...] [--jvm-warmup 60]

Per scenario: events acknowledged by the broker, applied (the worker's own state), lost,
doubled, time to recover, users whose newest list the lookup did not serve, lookup reads,
5xx, failed reads outside outages, and the lookup's p50/p99 outside outages. Writes
bench/results/chaos.json (chaos-short.json with --short). Each scenario starts on a warm
broker: a just-started one (the suite's, or one a scenario restarted) first carries a minute
of throwaway traffic; what a scenario's own broker restart costs is in its numbers.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import print_table, write_results  # noqa: E402
from streamrec.broker import free_port  # noqa: E402
from streamrec.broker.kafka import KafkaBroker  # noqa: E402
from tests.chaos.harness import warm_broker  # noqa: E402
from tests.chaos.scenarios import LONG, SHORT, run  # noqa: E402


def markdown(rows: list[dict]) -> str:
    """The table of docs/reliability.md."""
    head = ("| scenario | events produced | applied | lost | doubled | time to recover | "
            "stale lists | lookups | 5xx | failed reads* | lookup p50 / p99* |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        rec = r["recover_s"]
        recover = (f"{min(rec):.1f}–{max(rec):.1f} s" if len(rec) > 1 else
                   f"{rec[0]:.1f} s" if rec else "–")
        lines.append(f"| {r['scenario']} | {r['produced']:,} | {r['applied']:,} | {r['lost']} | "
                     f"{r['doubled']} | {recover} | {r['stale_lists']} | {r['reads']:,} | "
                     f"{r['5xx']} | {r['errors_outside_outages']} | "
                     f"{r['p50_ms']:.2f} / {r['p99_ms']:.1f} ms |")
    return head + "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--short", action="store_true", help="the CI version of each scenario")
    ap.add_argument("--only", nargs="*", default=None, help="scenario names (substrings)")
    ap.add_argument("--jvm-warmup", type=float, default=60.0,
                    help="seconds of traffic on a just-started broker before a scenario "
                    "(its JIT compiles the hot paths; a deployment's broker is long warm)")
    args = ap.parse_args()
    # a SIGTERM (timeout, Ctrl-C from a wrapper) still stops the broker and the stack
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    scenarios = SHORT if args.short else LONG
    if args.only:
        scenarios = {k: v for k, v in scenarios.items() if any(o in k for o in args.only)}
    work = Path(tempfile.mkdtemp(prefix="chaos-"))
    if os.environ.get("STREAMREC_KAFKA_DEBUG"):   # this process's clients: the stream
        logging.basicConfig(filename=work / "bench-librdkafka.log", level=logging.DEBUG,
                            format="%(asctime)s %(threadName)s %(message)s")
    broker = KafkaBroker(free_port(), data_dir=work / "kafka")
    rows = []
    warm = None     # the broker process last warmed: a scenario may restart the broker
    try:
        for name, faults in scenarios.items():
            if not broker.alive():
                broker.start()
            if broker.proc is not warm and args.jvm_warmup > 0:
                print(f"--- warming the broker's JVM for {args.jvm_warmup:.0f} s", flush=True)
                warm_broker(broker.bootstrap, args.jvm_warmup)
                warm = broker.proc
            print(f"--- {name}", flush=True)
            result = run(name, broker, work, faults, long=not args.short)
            rows.append(result.row())
            print(result.row(), flush=True)
    finally:
        broker.stop()
    print_table(["scenario", "produced", "applied", "lost", "doubled", "recover s (max)",
                 "stale lists", "reads", "5xx", "failed reads", "p50 ms", "p99 ms"],
                [[r["scenario"], r["produced"], r["applied"], r["lost"], r["doubled"],
                  r["recover_s_max"] if r["recover_s_max"] is not None else "-",
                  r["stale_lists"], r["reads"], r["5xx"], r["errors_outside_outages"],
                  r["p50_ms"], r["p99_ms"]] for r in rows])
    print(markdown(rows))
    name = "chaos-short" if args.short else "chaos"
    print(f"wrote {write_results(name, {'scenarios': rows})}")
    if any(r["lost"] or r["doubled"] or r["stale_lists"] or r["5xx"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
