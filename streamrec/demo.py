"""``streamrec demo``: the whole system on one machine, telling its story as it runs.

A local broker (Apache Kafka by default) -> first 90 % of MovieLens 100K into ``interactions`` -> the worker (a real
``streamrec worker`` process) bootstraps on it -> the lookup API (``streamrec serve``) ->
the last 10 % replayed at a set rate, while two users' lists are shown before and after.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from producers.movielens import replay_movielens
from streamrec.broker import ensure_topics, start_broker
from streamrec.errors import StreamrecError
from streamrec.movielens import MovieLens, find_movielens, load_movielens
from streamrec.settings import Settings

console = Console(stderr=False)
SPLIT = 0.9


def _spawn(args: list[str], settings: Settings, quiet: bool = False) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "streamrec.cli", *args]
    env = {**os.environ, **settings.as_env(), "STREAMREC_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL if quiet else None,
                            start_new_session=True)


def pick_users(ml: MovieLens, split: int) -> tuple[str, str]:
    """A returning user and a user new in the last 10 %, each with many events there."""
    before = set(ml.users[:split].tolist())
    after = Counter(ml.users[split:].tolist())
    returning = next(u for u, _ in after.most_common() if u in before)
    new = next(u for u, _ in after.most_common() if u not in before)
    return returning, new


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


def wait_for(predicate, timeout: float, what: str, procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise StreamrecError(f"{' '.join(p.args[3:5])} exited with code {p.returncode} "
                                     f"while waiting for {what}")
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise StreamrecError(f"timed out after {timeout:.0f} s waiting for {what}")


def run_demo(data: Path | None = None, rate: float = 500, http_port: int = 8000,
             bootstrap: str | None = None, engine: str = "kafka",
             state_dir: Path | None = None, serve_forever: bool = True) -> dict:
    """Run the demo; returns what it measured (used by the bench and tests)."""
    t_start = time.perf_counter()
    ml_path = find_movielens(data)
    ml = load_movielens(ml_path)
    split = ml.split_index(SPLIT)
    state_dir = state_dir or Path(tempfile.mkdtemp(prefix="streamrec-demo-"))
    broker = None
    broker_s = 0.0
    procs: list[subprocess.Popen] = []
    try:
        if bootstrap is None:
            t0 = time.perf_counter()
            broker = start_broker(engine,  # type: ignore[arg-type]
                                  data_dir=state_dir / "kafka" if engine == "kafka" else None)
            bootstrap = broker.bootstrap
            broker_s = time.perf_counter() - t0
            name = "Apache Kafka (KRaft)" if engine == "kafka" else "embedded Tansu"
            console.print(f"[bold]1.[/] {name} broker on {bootstrap}, ready in {broker_s:.1f} s")
        s = Settings(bootstrap_servers=bootstrap, state_dir=state_dir, http_port=http_port,
                     **(broker.client_settings if broker is not None else {}))
        ensure_topics(s)
        console.print(f"[bold]2.[/] sending the first 90 % of MovieLens 100K ({split:,} ratings "
                      f"from {ml_path}) and its users/items metadata")
        replay_movielens(s, ml, limit=split)
        console.print("[bold]3.[/] starting the worker (it trains on what is in the topic, "
                      "then streams) and the lookup API")
        procs.append(_spawn(["worker"], s))
        procs.append(_spawn(["serve", "--port", str(http_port)], s))
        api = f"http://127.0.0.1:{http_port}"
        returning, new = pick_users(ml, split)
        wait_for(lambda: httpx.get(f"{api}/recommendations/{returning}", timeout=2)
                 .json()["source"] == "model", 600, "the bootstrap model's lists", procs)
        t_ready = time.perf_counter()
        console.rule(f"before the last 10 % (ready after {t_ready - t_start:.0f} s)")
        before = {}
        for user in (returning, new):
            show_history(ml, user, 0, split, f"{user}: rated before")
            before[user] = httpx.get(f"{api}/recommendations/{user}").json()
            show_list(ml, before[user], f"{user}: top 10 now")
        last_sent: dict[str, float] = {}
        console.print(f"[bold]4.[/] replaying the last 10 % ({len(ml) - split:,} ratings) at "
                      f"{rate:g}/s; lists update as events arrive")
        replay_movielens(s, ml, skip_fraction=SPLIT, rate=rate, metadata=False,
                         on_event=lambda k, ev: last_sent.__setitem__(ev["user_id"], time.time()))
        for user in (returning, new):
            wait_for(lambda u=user: httpx.get(f"{api}/recommendations/{u}").json()["updated_at"]
                     >= last_sent[u], 60, f"{user}'s fresh list", procs)
        console.rule("after the last 10 %")
        after = {}
        for user in (returning, new):
            show_history(ml, user, split, len(ml), f"{user}: rated in the last 10 %")
            after[user] = httpx.get(f"{api}/recommendations/{user}").json()
            show_list(ml, after[user], f"{user}: top 10 now")
        wall = time.perf_counter() - t_start
        console.print(f"demo wall time {wall:.0f} s. The API is live: {api}/recommendations/"
                      f"{new}?n=10  |  {api}/metrics  |  {api}/docs")
        if serve_forever:
            console.print("serving until Ctrl-C")
            stop = threading.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            while not stop.wait(0.5):
                if any(p.poll() is not None for p in procs):
                    raise StreamrecError("a demo process exited; see its output above")
        return {"wall_s": wall, "ready_s": t_ready - t_start, "broker_s": broker_s, "users": [returning, new],
                "before": before, "after": after}
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        if broker is not None:
            broker.stop()
        console.print("demo stopped")
