"""The command line against a real broker: broker, produce, recommend, demo, API documents."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest

from streamrec.broker import free_port
from streamrec.movielens import find_movielens, load_movielens
from streamrec.replay import read_topics
from streamrec.settings import Settings
from tests.integration.processes import Proc, cli, get_list, wait_until

pytestmark = pytest.mark.integration


def test_produce_movielens_replays_in_time_order(settings: Settings) -> None:
    r = cli(["produce", "movielens", str(find_movielens()), "--limit", "200",
             "--skip-fraction", "0.9"], settings)
    assert r.returncode == 0, r.stderr
    assert "sent 200" in r.stdout
    recs = [rec for c in read_topics(settings, [settings.topic_interactions]) for rec in c]
    assert len(recs) == 200
    events = [orjson.loads(rec.value) for rec in recs]
    ts = [e["timestamp"] for e in events]
    assert ts == sorted(ts)
    assert all(e["event_type"] == "rating" and 1 <= e["rating"] <= 5 for e in events)
    assert all(rec.key.decode() == e["user_id"] for rec, e in zip(recs, events))
    ml = load_movielens(find_movielens())
    assert events[0]["user_id"] == ml.users[ml.split_index(0.9)]
    users = [r for c in read_topics(settings, [settings.topic_users]) for r in c]
    items = [r for c in read_topics(settings, [settings.topic_items]) for r in c]
    assert len(users) == 943 and len(items) == 1682
    assert "genre" in orjson.loads(items[0][4])["features"]


def test_produce_jsonl_reports_bad_lines_and_sends_the_rest(settings: Settings,
                                                           tmp_path: Path) -> None:
    f = tmp_path / "events.jsonl"
    f.write_text('{"user_id": "a", "item_id": "x"}\n'
                 '{"user_id": "a"}\n'
                 'garbage\n'
                 '\n'
                 '{"user_id": "b", "item_id": "y", "event_type": "purchase"}\n')
    r = cli(["produce", "jsonl", str(f)], settings)
    assert r.returncode == 1
    assert "events.jsonl:2" in r.stderr and "events.jsonl:3" in r.stderr
    assert "sent 2" in r.stdout and "invalid 2" in r.stdout
    recs = [rec for c in read_topics(settings, [settings.topic_interactions]) for rec in c]
    assert [orjson.loads(rec.value)["user_id"] for rec in recs] == ["a", "b"]


def test_recommend_reads_the_topic_when_no_api(settings: Settings) -> None:
    from confluent_kafka import Producer

    from streamrec.kafka import producer_config
    p = Producer(producer_config(settings))
    for version in (1, 2):
        doc = {"user_id": "u1", "items": [{"item_id": f"m{version}", "score": 1.0},
                                          {"item_id": "m9", "score": 0.5}],
               "model_version": f"v{version}", "updated_at": 1.0, "source": "model"}
        p.produce(settings.topic_recommendations, key=b"u1", value=orjson.dumps(doc))
    p.flush(10)
    r = cli(["recommend", "u1", "-n", "1", "--api", f"http://127.0.0.1:{free_port()}"], settings)
    assert r.returncode == 0, r.stderr
    out = orjson.loads(r.stdout)
    assert out["model_version"] == "v2" and [i["item_id"] for i in out["items"]] == ["m2"]
    r = cli(["recommend", "nobody", "--api", f"http://127.0.0.1:{free_port()}"], settings)
    assert orjson.loads(r.stdout)["source"] == "fallback"


def test_api_documents_health_metrics_and_bad_n(settings: Settings, tmp_path: Path) -> None:
    lookup = Proc(["serve"], settings, tmp_path / "serve.log").start()
    try:
        base = f"http://127.0.0.1:{settings.http_port}"
        wait_until(lambda: httpx.get(f"{base}/healthz").status_code == 200, 30, "serve",
                   (lookup,))
        spec = httpx.get(f"{base}/openapi.json").json()
        assert "/recommendations/{user_id}" in spec["paths"]
        assert "streamrec_lookup" in httpx.get(f"{base}/metrics").text
        for bad in ("0", "-1", str(settings.top_n + 1), "ten"):
            assert httpx.get(f"{base}/recommendations/u1", params={"n": bad}).status_code == 422
        doc = get_list(settings, "unknown-user")
        assert doc["source"] == "fallback" and doc["user_id"] == "unknown-user"
    finally:
        lookup.stop()


def _small_movielens(tmp_path: Path, n: int = 4000) -> Path:
    """The first ``n`` ratings (time order) of ML-100K in its own folder: a quick demo."""
    src = find_movielens()
    dst = tmp_path / "ml-small"
    dst.mkdir()
    lines = (src / "u.data").read_text().splitlines()
    lines.sort(key=lambda l: int(l.split("\t")[3]))
    (dst / "u.data").write_text("\n".join(lines[:n]) + "\n")
    for name in ("u.item", "u.user", "u.genre"):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


@pytest.mark.tansu
def test_demo_runs_end_to_end_and_lists_change(broker, tmp_path: Path) -> None:
    """The demo starts its own broker: Apache Kafka by default (Tansu in the Tansu run)."""
    from streamrec.cli.demo import run_demo

    out = run_demo(data=_small_movielens(tmp_path), rate=2000, http_port=free_port(),
                   engine="tansu" if broker.engine == "tansu" else "kafka",
                   state_dir=tmp_path / "state", serve_forever=False)
    assert out["broker_s"] > 0
    returning, new = out["users"]
    assert out["before"][new]["source"] == "fallback"
    assert out["after"][new]["source"] == "model"
    assert out["after"][returning]["items"] != out["before"][returning]["items"]
    assert len(out["after"][returning]["items"]) == 10
