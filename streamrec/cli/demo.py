"""``streamrec demo``: the whole system on one machine, telling its story as it runs.

A local broker (Apache Kafka by default) -> first 90 % of MovieLens 100K into
``interactions`` -> the worker (a real ``streamrec worker`` process) bootstraps on it -> the
lookup API (``streamrec serve``) -> the last 10 % replayed at a set rate, while two users'
lists are shown before and after.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import httpx
import typer
from rich.console import Console
from rich.table import Table

from streamrec.cli.options import (BrokerEngine, EngineOption, StateDir, setup_logging,
                                   wait_for_signal)
from streamrec.errors import StreamrecError
from streamrec.polling import wait_until
from streamrec.settings import Settings

if TYPE_CHECKING:
    from streamrec.broker import BrokerProcess
    from streamrec.movielens import MovieLens

console = Console(stderr=False)
SPLIT = 0.9


def demo(data: Annotated[Optional[Path], typer.Option(help="MovieLens 100K folder")] = None,
         rate: Annotated[float, typer.Option(help="replay rate of the last 10 %, events/s")] = 500,
         port: Annotated[int, typer.Option(help="HTTP port of the lookup API")] = 8000,
         bootstrap_servers: Annotated[Optional[str], typer.Option(
             "--bootstrap-servers", help="use this broker instead of starting one")] = None,
         engine: EngineOption = BrokerEngine.kafka,
         state_dir: StateDir = None,
         exit_after: Annotated[bool, typer.Option(
             help="stop after the replay instead of serving until Ctrl-C")] = False) -> None:
    """Everything on one machine: broker, bootstrap, worker, lookup API, MovieLens replay."""
    setup_logging(False)
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("librdkafka").setLevel(logging.ERROR)
    run_demo(data=data, rate=rate, http_port=port, bootstrap=bootstrap_servers,
             engine=engine.value, state_dir=state_dir, serve_forever=not exit_after)


# ----------------------------------------------------------------------------- the story
@dataclass
class Stack:
    """What the demo started (and stops at the end): a broker of its own, if any, and the
    worker and lookup processes."""

    broker: BrokerProcess | None = None
    broker_s: float = 0.0
    procs: list[subprocess.Popen] = field(default_factory=list)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.broker is not None:
            self.broker.stop()


def run_demo(data: Path | None = None, rate: float = 500, http_port: int = 8000,
             bootstrap: str | None = None, engine: str = "kafka",
             state_dir: Path | None = None, serve_forever: bool = True) -> dict:
    """Run the demo; returns what it measured (used by the bench and tests)."""
    from streamrec.movielens import find_movielens, load_movielens

    t_start = time.perf_counter()
    ml_path = find_movielens(data)
    ml = load_movielens(ml_path)
    split = ml.split_index(SPLIT)
    state_dir = state_dir or Path(tempfile.mkdtemp(prefix="streamrec-demo-"))
    stack = Stack()
    try:
        s = _start_system(stack, bootstrap, engine, state_dir, http_port, ml, ml_path, split)
        api = f"http://127.0.0.1:{http_port}"
        returning, new = pick_users(ml, split)
        _wait_for_lists(api, stack.procs, returning)
        t_ready = time.perf_counter()
        console.rule(f"before the last 10 % (ready after {t_ready - t_start:.0f} s)")
        before = show_users(ml, api, (returning, new), 0, split, "rated before")
        last_sent = replay_rest(s, ml, rate, len(ml) - split)
        for user in (returning, new):
            _wait_for_fresh_list(api, stack.procs, user, last_sent[user])
        console.rule("after the last 10 %")
        after = show_users(ml, api, (returning, new), split, len(ml), "rated in the last 10 %")
        wall = time.perf_counter() - t_start
        console.print(f"demo wall time {wall:.0f} s. The API is live: {api}/recommendations/"
                      f"{new}?n=10  |  {api}/metrics  |  {api}/docs")
        if serve_forever:
            serve_until_signal(stack.procs)
        return {"wall_s": wall, "ready_s": t_ready - t_start, "broker_s": stack.broker_s,
                "users": [returning, new], "before": before, "after": after}
    finally:
        stack.stop()
        console.print("demo stopped")


def _start_system(stack: Stack, bootstrap: str | None, engine: str, state_dir: Path,
                  http_port: int, ml: MovieLens, ml_path: Path, split: int) -> Settings:
    """Steps 1-3: the broker (unless given one), the first 90 % of the ratings and the
    metadata into the topics, then the worker and the lookup API as processes."""
    from producers.movielens import replay_movielens
    from streamrec.broker import ensure_topics

    if bootstrap is None:
        bootstrap = start_own_broker(stack, engine, state_dir)
    s = Settings(bootstrap_servers=bootstrap, state_dir=state_dir, http_port=http_port,
                 **(stack.broker.client_settings if stack.broker is not None else {}))
    ensure_topics(s)
    console.print(f"[bold]2.[/] sending the first 90 % of MovieLens 100K ({split:,} ratings "
                  f"from {ml_path}) and its users/items metadata")
    replay_movielens(s, ml, limit=split)
    console.print("[bold]3.[/] starting the worker (it trains on what is in the topic, "
                  "then streams) and the lookup API")
    stack.procs.append(_spawn(["worker"], s))
    stack.procs.append(_spawn(["serve", "--port", str(http_port)], s))
    return s


def start_own_broker(stack: Stack, engine: str, state_dir: Path) -> str:
    """Step 1: a local broker of the demo's own; returns its bootstrap address."""
    from streamrec.broker import start_broker

    t0 = time.perf_counter()
    stack.broker = start_broker(engine,  # type: ignore[arg-type]
                                data_dir=state_dir / "kafka" if engine == "kafka" else None)
    stack.broker_s = time.perf_counter() - t0
    name = "Apache Kafka (KRaft)" if engine == "kafka" else "embedded Tansu"
    console.print(f"[bold]1.[/] {name} broker on {stack.broker.bootstrap}, ready in "
                  f"{stack.broker_s:.1f} s")
    return stack.broker.bootstrap


def replay_rest(s: Settings, ml: MovieLens, rate: float, n: int) -> dict[str, float]:
    """Step 4: the last 10 % at ``rate`` events/s; returns when each user's last event was
    sent (their list must be newer than that)."""
    from producers.movielens import replay_movielens

    last_sent: dict[str, float] = {}
    console.print(f"[bold]4.[/] replaying the last 10 % ({n:,} ratings) at {rate:g}/s; "
                  "lists update as events arrive")
    replay_movielens(s, ml, skip_fraction=SPLIT, rate=rate, metadata=False,
                     on_event=lambda k, ev: last_sent.__setitem__(ev["user_id"], time.time()))
    return last_sent


def serve_until_signal(procs: list[subprocess.Popen]) -> None:
    """Keep the stack serving until Ctrl-C; a process that exits meanwhile ends the demo."""
    console.print("serving until Ctrl-C")
    wait_for_signal(every=lambda: _check_alive(procs, "serving"))


# ----------------------------------------------------------------------------- waiting
def _wait_for_lists(api: str, procs: list[subprocess.Popen], user: str) -> None:
    _wait(lambda: httpx.get(f"{api}/recommendations/{user}", timeout=2)
          .json()["source"] == "model", 600, "the bootstrap model's lists", procs)


def _wait_for_fresh_list(api: str, procs: list[subprocess.Popen], user: str,
                         sent: float) -> None:
    _wait(lambda: httpx.get(f"{api}/recommendations/{user}").json()["updated_at"] >= sent,
          60, f"{user}'s fresh list", procs)


def _wait(predicate: Callable[[], Any], timeout: float, what: str,
          procs: list[subprocess.Popen]) -> None:
    """Poll the lookup API; a demo process that exits, or the time running out, ends the
    demo with one line."""
    wait_until(predicate, timeout, what, interval=0.2, retry_on=(httpx.HTTPError,),
               check=lambda: _check_alive(procs, f"waiting for {what}"),
               error=StreamrecError)


def _check_alive(procs: list[subprocess.Popen], doing: str) -> None:
    for p in procs:
        if p.poll() is not None:
            raise StreamrecError(f"{' '.join(p.args[3:5])} exited with code {p.returncode} "
                                 f"while {doing}; see its output above")


def _spawn(args: list[str], settings: Settings, quiet: bool = False) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "streamrec.cli", *args]
    env = {**os.environ, **settings.as_env(), "STREAMREC_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL if quiet else None,
                            start_new_session=True)


# ----------------------------------------------------------------------------- showing
def pick_users(ml: MovieLens, split: int) -> tuple[str, str]:
    """A returning user and a user new in the last 10 %, each with many events there."""
    before = set(ml.users[:split].tolist())
    after = Counter(ml.users[split:].tolist())
    returning = next(u for u, _ in after.most_common() if u in before)
    new = next(u for u, _ in after.most_common() if u not in before)
    return returning, new


def show_users(ml: MovieLens, api: str, users: tuple[str, ...], lo: int, hi: int,
               rated: str) -> dict[str, dict]:
    """Each user's ratings in ``[lo, hi)`` and their list now; returns the lists."""
    lists = {}
    for user in users:
        show_history(ml, user, lo, hi, f"{user}: {rated}")
        lists[user] = httpx.get(f"{api}/recommendations/{user}").json()
        show_list(ml, lists[user], f"{user}: top 10 now")
    return lists


def _genres(ml: MovieLens, item: str) -> str:
    return ", ".join(ml.item_features.get(item, {}).get("genre", []))


def show_history(ml: MovieLens, user: str, lo: int, hi: int, title: str, limit: int = 8) -> None:
    idx = [k for k in range(lo, hi) if ml.users[k] == user]
    if not idx:
        console.print(f"[bold]{title}[/]: nothing yet — a new user (the API serves a "
                      "fallback list: popular, or from the user's demographics)")
        return
    t = Table(title=f"{title} ({len(idx)} ratings, showing {min(limit, len(idx))})")
    t.add_column("movie"), t.add_column("rating", justify="right"), t.add_column("genres")
    for k in idx[-limit:]:
        t.add_row(ml.titles.get(str(ml.items[k]), str(ml.items[k])), f"{ml.ratings[k]:.0f}",
                  _genres(ml, str(ml.items[k])))
    console.print(t)


def show_list(ml: MovieLens, doc: dict, title: str) -> None:
    t = Table(title=f"{title} — source={doc['source']}, model {doc['model_version']}")
    t.add_column("#", justify="right"), t.add_column("movie"), t.add_column("score",
                                                                           justify="right")
    t.add_column("genres")
    for rank, it in enumerate(doc["items"], 1):
        title = ml.titles.get(it["item_id"], it["item_id"])
        if it.get("reason") == "explore":
            title += " (explore)"  # an exploration slot; "[...]" would be rich markup
        t.add_row(str(rank), title, f"{it['score']:.3f}", _genres(ml, it["item_id"]))
    console.print(t)
