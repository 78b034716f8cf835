"""Helpers shared by the benchmarks: machine description, processes, results files."""

from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from streamrec.polling import wait_until

if TYPE_CHECKING:
    from streamrec.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_mb": mem, "python": sys.version.split()[0],
            "platform": platform.platform(), "when": time.strftime("%Y-%m-%d %H:%M:%S")}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(q / 100 * (len(values) - 1)))))
    return values[k]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2, default=float))
    return path


def print_table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [[f"{c:.4g}" if isinstance(c, float) else str(c)
                                            for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for k, r in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
        if k == 0:
            print("  ".join("-" * w for w in widths))


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "streamrec.cli", *args], env=env,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def child_env(settings: Any) -> dict[str, str]:
    """The environment of a benchmarked ``streamrec`` child process (quiet logs)."""
    return {**os.environ, **settings.as_env(), "STREAMREC_LOG_LEVEL": "WARNING"}


wait = functools.partial(wait_until, interval=0.05, retry_on=(httpx.HTTPError,),
                         error=RuntimeError)
"""``wait(predicate, timeout, what)``: poll ``predicate`` (HTTP errors count as 'not yet')
until truthy, RuntimeError when time runs out (:func:`streamrec.polling.wait_until`)."""


def fresh_settings(bootstrap: str, workdir: Path, **overrides: object) -> Settings:
    """Settings with topic names, group, state dir and ports nobody else uses; topics made."""
    import uuid

    from streamrec.broker import ensure_topics, free_port
    from streamrec.settings import Settings

    tag = uuid.uuid4().hex[:6]
    s = Settings(bootstrap_servers=bootstrap, state_dir=workdir / tag,
                 topic_interactions=f"i-{tag}", topic_users=f"u-{tag}",
                 topic_items=f"it-{tag}", topic_recommendations=f"r-{tag}",
                 topic_dlq=f"d-{tag}", topic_quarantine=f"q-{tag}",
                 topic_control=f"c-{tag}", topic_released=f"rel-{tag}",
                 worker_group=f"w-{tag}", http_port=free_port(),
                 worker_metrics_port=free_port(), **overrides)
    ensure_topics(s)
    return s
