"""Running and watching a benchmarked worker: fresh topic names, its metrics, its memory.

Shared by ``bench/retrain_speed.py``, ``bench/memory.py``, ``bench/scale.py``,
``bench/pipeline.py`` and ``bench/load_curve.py``.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench.common import fresh_settings  # noqa: F401 (re-exported)
from streamrec.settings import Settings

MB = 1024 * 1024


def worker_metrics(s: Settings) -> dict[str, float]:
    """The worker's unlabelled Prometheus samples (name -> value)."""
    text = httpx.get(f"http://127.0.0.1:{s.worker_metrics_port}/metrics", timeout=5).text
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def applied(s: Settings) -> float:
    """Interaction events the worker's state holds (0 while it is not answering yet)."""
    try:
        return worker_metrics(s).get("streamrec_worker_state_applied_events", 0.0)
    except httpx.HTTPError:
        return 0.0


def ready(s: Settings) -> bool:
    try:
        return worker_metrics(s).get("streamrec_worker_ready", 0.0) == 1.0
    except httpx.HTTPError:
        return False


@dataclass(frozen=True)
class Histogram:
    """A Prometheus histogram's cumulative buckets ``(upper bound, count)``, +Inf last."""

    buckets: tuple[tuple[float, float], ...]
    sum: float
    count: float

    def __sub__(self, before: "Histogram") -> "Histogram":
        """What was observed between two scrapes of the same histogram."""
        old = dict(before.buckets)
        return Histogram(tuple((le, n - old.get(le, 0.0)) for le, n in self.buckets),
                         self.sum - before.sum, self.count - before.count)

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else float("nan")

    def bucket(self, q: float, cap: float = math.inf) -> tuple[float, float]:
        """Bounds ``(lower, upper]`` of the bucket that holds quantile ``q``; values are known
        to be <= ``cap`` (e.g. the worker's ``max_batch``), which tightens the upper bound."""
        rank = q * self.count
        lower, below = 0.0, 0.0
        for le, n in self.buckets:
            if n >= rank and n > below:
                return min(lower, cap), min(le, cap)
            lower, below = le, n
        return min(lower, cap), cap

    def quantile(self, q: float, cap: float = math.inf) -> float:
        """Rough quantile: linear inside its bucket (as Prometheus' ``histogram_quantile``),
        the bucket's upper bound when it is the first one; bounds capped at ``cap``."""
        if not self.count:
            return float("nan")
        rank = q * self.count
        lower, below = 0.0, 0.0
        for k, (le, n) in enumerate(self.buckets):
            if n >= rank and n > below:
                upper = min(le, cap)
                if k == 0:
                    return upper
                if math.isinf(upper):
                    return lower
                return lower + (upper - lower) * (rank - below) / (n - below)
            lower, below = le, n
        return min(lower, cap)


class Metrics:
    """One scrape of a Prometheus endpoint, read with prometheus_client's text parser."""

    def __init__(self, text: str) -> None:
        self.samples = [x for f in text_string_to_metric_families(text) for x in f.samples]

    def value(self, name: str, default: float | None = None, **labels: str) -> float | None:
        """The sample ``name`` (as exposed: ``..._total``, ``..._count``) with these labels;
        summed over other labels; ``default`` if no such sample is exposed."""
        hits = [x.value for x in self.samples if x.name == name
                and all(x.labels.get(k) == v for k, v in labels.items())]
        return sum(hits) if hits else default

    def histogram(self, name: str, **labels: str) -> Histogram | None:
        """The histogram ``name`` with these labels (e.g. ``phase="snapshot"``)."""
        buckets = sorted((float(x.labels["le"]), x.value) for x in self.samples
                         if x.name == f"{name}_bucket"
                         and all(x.labels.get(k) == v for k, v in labels.items()))
        if not buckets:
            return None
        return Histogram(tuple(buckets), self.value(f"{name}_sum", 0.0, **labels),
                         self.value(f"{name}_count", 0.0, **labels))


def scrape(s: Settings) -> Metrics:
    """The worker's metrics endpoint, parsed (labelled samples and histograms included)."""
    return Metrics(httpx.get(f"http://127.0.0.1:{s.worker_metrics_port}/metrics",
                             timeout=5).text)


def checkpoint_stats(after: Metrics, before: Metrics | None = None) -> dict:
    """The worker's checkpoints (between two scrapes, or since start): per phase, how many,
    mean and the upper bound of the slowest one's bucket, in ms. ``snapshot`` runs on the
    event loop (it delays lists), ``write`` in the background thread."""
    out = {}
    for phase in ("snapshot", "write"):
        h = after.histogram(CHECKPOINT_SECONDS, phase=phase)
        old = before.histogram(CHECKPOINT_SECONDS, phase=phase) if before else None
        if h is None:
            continue
        if old is not None:
            h = h - old
        out[phase] = {"count": h.count, "mean_ms": 1e3 * h.mean if h.count else None,
                      "max_le_ms": 1e3 * h.bucket(1.0)[1] if h.count else None}
    return out


CHECKPOINT_SECONDS = "streamrec_worker_checkpoint_seconds"
APPLIED = "streamrec_worker_state_applied_events"
LISTS_PENDING = "streamrec_worker_lists_pending"
"""Users whose newest applied events are not in a published list yet (0: lists are out)."""


def phase_stats(before: Metrics, after: Metrics, max_batch: float = math.inf) -> dict:
    """The worker's micro-batches and lists between two scrapes: batch sizes from the
    ``streamrec_worker_batch_records`` histogram (mean exact; median rough, interpolated in
    its bucket, and that bucket's bounds: 1, 5, 10, 50, 100, 500, 1000, 5000, 10000, capped
    at ``max_batch``), wall time per batch, lists published per applied event."""
    out: dict = {}
    sizes, walls = (after.histogram(n) for n in ("streamrec_worker_batch_records",
                                                  "streamrec_worker_batch_seconds"))
    if sizes is not None:
        d = sizes - before.histogram("streamrec_worker_batch_records")
        out.update(batches=d.count, batch_mean=d.mean,
                   batch_median=d.quantile(0.5, max_batch),
                   batch_median_bucket=d.bucket(0.5, max_batch) if d.count else None,
                   batch_p90=d.quantile(0.9, max_batch))
    if walls is not None:
        d = walls - before.histogram("streamrec_worker_batch_seconds")
        out["batch_ms_mean"] = 1e3 * d.mean
    delay = after.histogram("streamrec_worker_ingest_delay_seconds")
    if delay is not None:
        d = delay - before.histogram("streamrec_worker_ingest_delay_seconds")
        out["ingest_delay_ms_p50"] = 1e3 * d.quantile(0.5)
    events = after.value(APPLIED, 0.0) - before.value(APPLIED, 0.0)
    lists = (after.value("streamrec_worker_lists_published_total", 0.0)
             - before.value("streamrec_worker_lists_published_total", 0.0))
    out.update(applied=events, lists_published=lists,
               lists_per_event=lists / events if events else float("nan"))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far; nan if it is gone."""
    try:
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except psutil.Error:
        return float("nan")


def run_delay_seconds(pid: int) -> float:
    """Seconds the process's main thread (a Python worker's event loop) spent runnable but
    waiting for a CPU (``/proc/PID/schedstat``); nan if unavailable."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return float("nan")


class CpuMeter:
    """CPU % (100 = one core) over a window: of named processes, of the whole machine, and
    of everything else on it (``others``: other people's jobs on a shared box). ``waited``
    after :meth:`read`: % of the window each process's main thread was runnable but had no
    CPU: high means CPU-starved, not waiting for the broker."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.t0 = time.perf_counter()
        self.own0 = {k: cpu_seconds(p) for k, p in pids.items()}
        self.delay0 = {k: run_delay_seconds(p) for k, p in pids.items()}
        self.machine0 = psutil.cpu_times()
        self.waited: dict[str, float] = {}

    @staticmethod
    def _busy(t) -> float:
        return sum(t) - t.idle - getattr(t, "iowait", 0.0)

    def read(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        out = {k: 100 * (cpu_seconds(p) - self.own0[k]) / wall for k, p in self.pids.items()}
        self.waited = {k: 100 * (run_delay_seconds(p) - self.delay0[k]) / wall
                       for k, p in self.pids.items()}
        out["machine"] = 100 * (self._busy(psutil.cpu_times()) - self._busy(self.machine0)) / wall
        out["others"] = out["machine"] - sum(v for k, v in out.items()
                                             if k != "machine" and v == v)
        return out


def peak_rss_mb(pid: int) -> float:
    """The kernel's high-water mark of the process's resident memory (VmHWM), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return float("nan")


class RssSampler:
    """Samples a process's RSS every ``interval`` s in a thread: (seconds since start, MiB).

    The peak between samples is not lost: :meth:`peak_mb` reads the kernel's VmHWM.
    """

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "RssSampler":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic() - self._t0,
                                     self.proc.memory_info().rss / MB))
            except psutil.Error:
                return
            self._stop.wait(self.interval)

    def now_mb(self) -> float:
        return self.proc.memory_info().rss / MB

    def mark(self) -> float:
        """Seconds since the sampler started (to cut the series into phases)."""
        return time.monotonic() - self._t0

    def between(self, t0: float, t1: float) -> list[float]:
        return [mb for t, mb in self.samples if t0 <= t <= t1]

    def peak_mb(self) -> float:
        hwm = peak_rss_mb(self.pid)
        sampled = max((mb for _, mb in self.samples), default=float("nan"))
        return hwm if hwm == hwm else sampled

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
