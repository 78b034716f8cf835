"""Running and watching a benchmarked worker: fresh topic names, its metrics, its memory.

Shared by ``bench/retrain_speed.py``, ``bench/memory.py`` and ``bench/scale.py``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import psutil

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
