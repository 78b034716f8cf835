"""Backfilled real histories on a real broker (issue #18): power users' histories replayed
at full speed train, whether the worker bootstraps from them or they arrive while it runs;
a bot forging a spread-out past is held once its account passes the history budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamrec_eval.synthetic import generate
from tests.integration.processes import (applied, quarantined, ready, send, start_worker,
                                         wait_until)
from streamrec.settings import Settings

pytestmark = pytest.mark.integration


def history_events(seed: int = 5) -> list[dict]:
    """Two power users (2,500 and 2,000 ratings, sessions of 100+ a few seconds apart) among
    80 users, in time order, as an app's backfill sends them."""
    h = generate(seed, n_users=80, n_items=4000, power_users=(2500, 2000))
    return [{"user_id": u, "item_id": i, "event_type": "rating", "rating": float(r),
             "timestamp": float(t), "event_id": f"bf-{k}"}
            for k, (u, i, r, t) in enumerate(zip(h.users.tolist(), h.items.tolist(),
                                                 h.ratings.tolist(), h.timestamps.tolist()))]


def test_backfills_of_power_users_train_and_a_forged_past_is_bounded(settings: Settings,
                                                                      tmp_path: Path) -> None:
    s = settings.model_copy(update={"guard_history_max_events": 3000})
    events = history_events()
    half = len(events) // 2
    send(s, events[:half])                  # in the topic before the worker starts
    worker = start_worker(s, tmp_path)
    try:
        wait_until(lambda: ready(s), 300, "bootstrap", (worker,))
        send(s, events[half:])              # the rest while it streams, as fast as it goes
        wait_until(lambda: applied(s) + quarantined(s) >= len(events), 120,
                   "backfill processed", (worker,))
        assert quarantined(s) == 0
        assert applied(s) == len(events)
        forged = [{"user_id": "forger", "item_id": f"x{k}", "event_type": "click",
                   "timestamp": 1_500_000_000.0 + 60.0 * k} for k in range(4000)]
        send(s, forged)
        wait_until(lambda: applied(s) + quarantined(s) >= len(events) + len(forged), 120,
                   "forged history processed", (worker,))
        held = quarantined(s)
        print(f"forged past: {held:.0f} of {len(forged)} held "
              f"(history budget {s.guard_history_max_events})")
        assert len(forged) - held <= 3000
        assert held >= 1000
    finally:
        worker.stop()
