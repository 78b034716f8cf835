"""Full retrain by replay and hot swap into a running worker, under a steady event stream."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest

from producers import EventProducer
from streamrec.settings import Settings
from tests.integration.processes import (WORKER_START_S, applied, cli, get_list, metric, ready,
                                         seed_events, send, start_lookup, start_worker,
                                         wait_until)

pytestmark = pytest.mark.integration


def test_retrain_swaps_without_losing_or_repeating_events(settings: Settings,
                                                          tmp_path: Path) -> None:
    base = seed_events(n_users=40, per_user=10)
    worker = start_worker(settings, tmp_path)
    lookup = start_lookup(settings, tmp_path)
    stop = threading.Event()
    sent = [0]
    errors: list[str] = []

    def stream() -> None:  # a steady 100 events/s, no event_ids: a repeat would be counted
        rng = random.Random(5)
        with EventProducer(settings) as p:
            while not stop.is_set():
                p.send({"user_id": f"u{rng.randrange(40)}", "item_id": f"i{rng.randrange(60)}"})
                sent[0] += 1
                time.sleep(0.01)

    def poll_api() -> None:
        client = httpx.Client(timeout=5)
        while not stop.is_set():
            for u in ("u1", "u2", "nobody"):
                r = client.get(f"http://127.0.0.1:{settings.http_port}/recommendations/{u}")
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text[:200]}")
            time.sleep(0.02)

    try:
        wait_until(lambda: ready(settings), WORKER_START_S,
                   "worker up", (worker,))
        send(settings, base)
        wait_until(lambda: applied(settings) == len(base), WORKER_START_S, "base applied",
                   (worker,))
        old_version = wait_until(lambda: (d := get_list(settings, "u1"))["source"] == "model"
                                 and d["model_version"], 15, "u1 list", (lookup,))
        threads = [threading.Thread(target=stream), threading.Thread(target=poll_api)]
        for t in threads:
            t.start()
        time.sleep(2)
        r = cli(["retrain"], settings, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        result = orjson.loads(r.stdout)
        assert result["announced"] is True
        retrained = result["model_version"].rsplit("-", 1)[0]   # the model's creation stamp
        old_model = old_version.rsplit("-", 1)[0]
        assert retrained != old_model
        wait_until(lambda: metric(settings.worker_metrics_port,
                                  "streamrec_worker_model_swaps_total", '{result="ok"}') >= 1,
                   60, "the swap", (worker,))
        time.sleep(2)
        stop.set()
        for t in threads:
            t.join(30)
        total = len(base) + sent[0]
        wait_until(lambda: applied(settings) == total, 30, "every event applied", (worker,))
        time.sleep(1.5)
        assert applied(settings) == total, "an event was lost or applied twice"
        new_version = wait_until(
            lambda: (v := get_list(settings, "u1")["model_version"]).rsplit("-", 1)[0] !=
            old_model and v, 30, "u1's list from another model", (lookup,))
        # the list comes from the retrained model (caught up since), not from any other
        assert new_version.rsplit("-", 1)[0] == retrained, (new_version, retrained)
        assert not errors, errors[:5]
    finally:
        stop.set()
        worker.stop()
        lookup.stop()


def test_retrain_dry_run_reports_holdout_and_announces_nothing(settings: Settings) -> None:
    send(settings, seed_events(n_users=40, per_user=10))
    r = cli(["retrain", "--dry-run", "--holdout", "0.1"], settings, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = orjson.loads(r.stdout)
    assert out["announced"] is False and out["interactions"] == 400
    assert 0 <= out["holdout"]["precision_at_k"] <= 1
    assert not (settings.state_dir / "retrain").exists()
