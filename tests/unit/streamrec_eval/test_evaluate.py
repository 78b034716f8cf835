"""The runs of ``streamrec evaluate`` (streamrec_eval/evaluate.py)."""

from __future__ import annotations

import json

import numpy as np

from streamrec_eval.adapters import engine_settings
from streamrec_eval.evaluate import run_exploration
from streamrec_eval.stream import Stream


def test_exploration_curve_reports_price_and_gain_per_share(tmp_path):
    rng = np.random.default_rng(0)
    users = [f"u{k % 12}" for k in range(240)]
    items = [f"i{int(x)}" for x in rng.integers(0, 40, 240)]
    stream = Stream.from_triples(users, items, rng.integers(3, 6, 240).tolist())
    tiny = engine_settings(padding_min=10, no_components=4, epochs_bootstrap=2,
                           epochs_per_batch=1)
    rows = run_exploration(stream, tmp_path, tiny, shares=(0.0, 0.3), temperatures=(1.0, 2.0),
                           split=0.5, progress=False)
    assert [(r["explore_share"], r["temperature"]) for r in rows] == \
        [(0.0, 1.0), (0.3, 1.0), (0.3, 2.0)]                # share 0 once: T is moot there
    assert rows[1]["coverage"] >= rows[0]["coverage"]
    assert json.loads((tmp_path / "exploration.json").read_text())["points"][0]["hit@10"] == \
        rows[0]["hit@10"]
    assert (tmp_path / "exploration.png").stat().st_size > 0
