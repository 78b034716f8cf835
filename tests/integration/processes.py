"""The integration tests' helpers, in one module: ``streamrec`` subcommands as real
processes (:class:`Proc`, :func:`start_worker`, :func:`start_lookup`, :func:`cli`), waiting
on them (:func:`wait_until`), reading their metrics and lists, and the events they are fed
(:func:`seed_events`, :func:`send`)."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx

from producers import EventProducer
from streamrec.polling import wait_until as poll
from streamrec.settings import Settings

T = TypeVar("T")

WORKER_START_S = 60  # Faust worker start + group join, generous for a loaded 2-core CI box


def settings_env(s: Settings) -> dict[str, str]:
    """The settings as STREAMREC_* environment variables, for a child process."""
    env = {**os.environ, **s.as_env(), "STREAMREC_LOG_LEVEL": "INFO"}
    return env


class Proc:
    """A streamrec subcommand in its own process; its output goes to a log file."""

    def __init__(self, args: list[str], s: Settings, log_path: Path) -> None:
        self.args, self.settings, self.log_path = args, s, log_path
        self.p: subprocess.Popen | None = None

    def start(self) -> "Proc":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.p = subprocess.Popen([sys.executable, "-m", "streamrec.cli", *self.args],
                                  env=settings_env(self.settings), stdout=self._log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.p is not None and self.p.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.p is None:
            return None
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)
        self._log.close()
        return self.p.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_until(predicate: Callable[[], T], timeout: float, what: str,
               procs: tuple[Proc, ...] = (), interval: float = 0.1) -> T:
    """Poll ``predicate`` until truthy and return its value; fail at once if one of
    ``procs`` dies, and with their logs if time runs out. HTTP errors and a missing key or
    value in an answer count as "not yet"."""
    def check() -> None:
        for p in procs:
            if not p.alive():
                raise AssertionError(
                    f"{p.args[0]} died while waiting for {what}:\n{p.log()[-3000:]}")

    def timed_out(message: str) -> AssertionError:
        logs = "\n".join(f"--- {p.args[0]}:\n{p.log()[-3000:]}" for p in procs)
        return AssertionError(f"{message}\n{logs}")

    return poll(predicate, timeout, what, interval=interval,
                retry_on=(httpx.HTTPError, KeyError, ValueError), check=check, error=timed_out)


def metric(port: int, name: str, labels: str = "") -> float:
    """A value from a Prometheus text endpoint on 127.0.0.1:port (0.0 if absent)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    pat = re.compile(rf"^{re.escape(name)}{re.escape(labels)}\s+([0-9.e+-]+)$", re.M)
    m = pat.search(text)
    return float(m.group(1)) if m else 0.0


def get_list(s: Settings, user: str, n: int | None = None) -> dict:
    params = {"n": n} if n else {}
    r = httpx.get(f"http://127.0.0.1:{s.http_port}/recommendations/{user}", params=params,
                  timeout=2)
    r.raise_for_status()
    return r.json()


def start_worker(s: Settings, tmp_path: Path, name: str = "worker") -> Proc:
    return Proc(["worker", "--no-progress"], s, tmp_path / f"{name}.log").start()


def start_lookup(s: Settings, tmp_path: Path, name: str = "serve") -> Proc:
    return Proc(["serve"], s, tmp_path / f"{name}.log").start()


def cli(args: list[str], s: Settings, timeout: float = 120) -> subprocess.CompletedProcess:
    """``streamrec ARGS`` to the end, with these settings; its output captured as text."""
    return subprocess.run([sys.executable, "-m", "streamrec.cli", *args], env=settings_env(s),
                          capture_output=True, text=True, timeout=timeout)


def applied(s: Settings) -> float:
    """Events in the worker's state (its metric)."""
    return metric(s.worker_metrics_port, "streamrec_worker_state_applied_events")


def ready(s: Settings) -> bool:
    """The worker restored or bootstrapped its state and streams."""
    return metric(s.worker_metrics_port, "streamrec_worker_ready") == 1


def quarantined(s: Settings) -> float:
    """Events the worker's guard held back."""
    return metric(s.worker_metrics_port, "streamrec_worker_events_total",
                  '{outcome="quarantined"}')


def seed_events(n_users: int = 30, n_items: int = 60, per_user: int = 8,
                seed: int = 7) -> list[dict]:
    """A small community: users in two taste groups over two halves of the catalogue."""
    rng = random.Random(seed)
    events = []
    for u in range(n_users):
        lo = 0 if u % 2 == 0 else n_items // 2
        for i in rng.sample(range(lo, lo + n_items // 2), per_user):
            events.append({"user_id": f"u{u}", "item_id": f"i{i}", "event_type": "click"})
    return events


def send(s: Settings, events: list[dict]) -> None:
    with EventProducer(s) as p:
        for ev in events:
            p.send(ev)
