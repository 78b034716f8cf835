"""A Faust agent that does nothing but count: Faust's own per-record pace on this machine.

    STREAMREC_*=... python bench/faust_noop.py --skip 40000 --count 50000 --out noop.json

The yardstick of issue #4 ("worker events/s >= 0.5 x a no-op Faust agent reading the same
topic in the same run"); ``bench/pipeline.py`` runs it after its throughput phase. Settings
come from ``STREAMREC_*`` environment variables as for ``streamrec worker``, and the app is
built with the worker's own ``faust_broker_options(settings)``; its app id (and so its consumer
group) is ``noop-<random>``, so it reads ``topic_interactions`` from the beginning. The agent
iterates ``async for value in stream`` and counts.

Rate = (count - 1) / (time of record ``skip + count`` - time of record ``skip + 1``): Faust's
start-up, the group join and the ``skip`` records before them are not in it (both times are
taken in the agent, when Faust hands it those records). Writes one JSON object to ``--out``
(rate, wall from process start, first record after, CPU % of this process, of the machine
and of everything else over the timed span) and stops the Faust worker with SIGTERM, its
normal clean shutdown.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import orjson
import psutil

T_START = time.perf_counter()

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faust  # noqa: E402
from faust.worker import Worker as FaustWorker  # noqa: E402

from stream_app.app import faust_broker_options  # noqa: E402
from streamrec.settings import Settings  # noqa: E402


class Count:
    """Record counter with the times of the first, the (skip+1)th and the (skip+count)th."""

    def __init__(self, skip: int, count: int) -> None:
        self.skip, self.count = skip, count
        self.first, self.last = skip + 1, skip + count
        self.n = 0
        self.t_any = self.t_first = self.t_last = None
        self.cpu_first = self.cpu_last = None  # (own CPU s, machine busy CPU s)

    @staticmethod
    def cpu() -> tuple[float, float]:
        t = psutil.cpu_times()
        return time.process_time(), sum(t) - t.idle - getattr(t, "iowait", 0.0)

    def cpu_pct(self, span: float | None) -> dict | None:
        """CPU % (100 = one core) over the timed span: this process, the machine, the rest."""
        if not span or not self.cpu_first or not self.cpu_last:
            return None
        own, machine = ((b - a) * 100 / span for a, b in zip(self.cpu_first, self.cpu_last))
        return {"noop": own, "machine": machine, "others": machine - own}

    def result(self, timed_out: bool = False) -> dict:
        span = (self.t_last - self.t_first) if self.t_last and self.t_first else None
        return {"records_seen": self.n, "skip": self.skip, "count": self.count,
                "timed_out": timed_out,
                "records_per_s": (self.count - 1) / span if span else None,
                "first_record_after_s": self.t_any - T_START if self.t_any else None,
                "span_s": span,
                "wall_from_start_s": self.t_last - T_START if self.t_last else None,
                "cpu_pct": self.cpu_pct(span),
                "definition": "(count - 1) / (time of record skip+count - time of record "
                              "skip+1), both seen by the agent; start-up and group join "
                              "excluded"}


def build_app(settings: Settings, counter: Count, out: Path, timeout: float) -> faust.App:
    app = faust.App(f"noop-{uuid.uuid4().hex[:8]}", autodiscover=False,
                    **faust_broker_options(settings))
    topic = app.topic(settings.topic_interactions, key_type=bytes, value_type=bytes)

    def finish(timed_out: bool) -> None:
        if out.exists():
            return
        out.write_bytes(orjson.dumps(counter.result(timed_out)))
        os.kill(os.getpid(), signal.SIGTERM)

    @app.agent(topic, name="count")
    async def count(stream: faust.StreamT) -> None:
        c = counter
        async for _value in stream:
            c.n += 1
            if c.n == 1:
                c.t_any = time.perf_counter()
            if c.n == c.first:
                c.t_first = time.perf_counter()
                c.cpu_first = c.cpu()
            if c.n == c.last:
                c.t_last = time.perf_counter()
                c.cpu_last = c.cpu()
                finish(False)

    @app.timer(interval=1.0)
    async def give_up() -> None:
        if counter.t_last is None and time.perf_counter() - T_START > timeout:
            finish(True)

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--skip", type=int, default=0, help="records before the timed ones")
    ap.add_argument("--count", type=int, required=True, help="records timed")
    ap.add_argument("--out", type=Path, required=True, help="JSON result file")
    ap.add_argument("--timeout", type=float, default=300, help="give up after this many s")
    args = ap.parse_args()
    settings = Settings()
    counter = Count(args.skip, args.count)
    app = build_app(settings, counter, args.out, args.timeout)
    try:
        FaustWorker(app, loglevel="WARNING", quiet=True,
                    redirect_stdouts=False).execute_from_commandline()
    except SystemExit:
        pass


if __name__ == "__main__":
    main()
