"""Running ``streamrec worker`` / ``streamrec serve`` as real processes in tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from streamrec.settings import Settings


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


def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               procs: tuple[Proc, ...] = (), interval: float = 0.1) -> Any:
    """Poll ``predicate`` until truthy; fail with the processes' logs if time runs out."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        for p in procs:
            if not p.alive():
                raise AssertionError(
                    f"{p.args[0]} died while waiting for {what}:\n{p.log()[-3000:]}")
        try:
            value = predicate()
            if value:
                return value
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            last_exc = exc
        time.sleep(interval)
    logs = "\n".join(f"--- {p.args[0]}:\n{p.log()[-3000:]}" for p in procs)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} ({last_exc})\n{logs}")


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
