"""Issue #17 against a real broker: forged control messages, reserved ids, bad stored
lists, the bearer token, and slowloris. Each of these used to go wrong (see the issue)."""

from __future__ import annotations

import selectors
import socket
import time
from pathlib import Path

import httpx
import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streamrec.control import sign
from streamrec.kafka import consumer_config, producer_config
from streamrec.settings import Settings
from tests.integration.processes import (WORKER_START_S, Proc, applied, cli, get_list, metric,
                                         ready, seed_events, send, start_lookup, start_worker,
                                         wait_until)

pytestmark = pytest.mark.integration

KEY = "operators-only"


def _dlq_reasons(s: Settings, n: int) -> list[str]:
    c = Consumer(consumer_config(s, "dlq-reader"))
    c.assign([TopicPartition(s.topic_dlq, 0, 0)])
    out: list[str] = []
    deadline = time.monotonic() + 30
    while len(out) < n and time.monotonic() < deadline:
        m = c.poll(1)
        if m is not None and m.error() is None:
            out.append(dict(m.headers() or [])["error"].decode())
    c.close()
    return out


def test_forged_control_messages_are_refused_and_signed_ones_work(settings: Settings,
                                                                 tmp_path: Path) -> None:
    """With control_key set: an unsigned model message naming an unrelated folder, a badly
    typed one (used to stop the worker), one signed with another key, a signed one naming a
    folder outside STATE_DIR/retrain/, and an unsigned release all go to the DLQ with a
    reason; the worker keeps running and nothing is created or deleted outside its state
    dir. A signed retrain from `streamrec retrain` then swaps as before."""
    s = settings.model_copy(update={"control_key": KEY})
    outside = tmp_path / "unrelated"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    worker = start_worker(s, tmp_path)
    try:
        wait_until(lambda: ready(s), WORKER_START_S, "worker up", (worker,))
        send(s, seed_events(n_users=20, per_user=5))
        wait_until(lambda: applied(s) == 100, WORKER_START_S, "events applied", (worker,))
        forged = [
            orjson.dumps({"type": "model", "version": "x", "path": str(outside)}),
            orjson.dumps({"type": "model", "path": 1}),
            sign({"type": "model", "version": "x", "path": str(outside)}, "another key"),
            sign({"type": "model", "version": "x", "path": str(outside)}, KEY),
            orjson.dumps({"type": "release", "kind": "user", "id": "u1"}),
            b"not json",
        ]
        p = Producer(producer_config(s))
        for value in forged:
            p.produce(s.topic_control, key=b"model", value=value)
        assert p.flush(10) == 0
        reasons = _dlq_reasons(s, len(forged))
        assert len(reasons) == len(forged), reasons
        assert sum("unsigned" in r for r in reasons) == 2, reasons
        assert any("bad signature" in r for r in reasons), reasons
        assert any("not inside" in r for r in reasons), reasons
        assert any("path" in r and "Input should be a valid string" in r for r in reasons), \
            reasons
        assert metric(s.worker_metrics_port, "streamrec_worker_control_refused_total") == 6
        assert worker.alive()
        assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]
        r = cli(["retrain"], s, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        wait_until(lambda: metric(s.worker_metrics_port, "streamrec_worker_model_swaps_total",
                                  '{result="ok"}') == 1, 60, "the signed swap", (worker,))
    finally:
        assert worker.stop() == 0


def test_reserved_ids_go_to_the_dlq(settings: Settings, tmp_path: Path) -> None:
    """Events by user __fallback__ used to be trained on, and that user's personal list was
    published under the key every unknown user is served."""
    worker, lookup = start_worker(settings, tmp_path), start_lookup(settings, tmp_path)
    try:
        wait_until(lambda: ready(settings), WORKER_START_S, "worker up", (worker,))
        send(settings, seed_events(n_users=10, per_user=5))
        p = Producer(producer_config(settings))
        for k in range(30):
            p.produce(settings.topic_interactions, key=b"__fallback__",
                      value=orjson.dumps({"user_id": "__fallback__", "item_id": f"i{k}"}))
        p.produce(settings.topic_interactions, key=b"u1",
                  value=orjson.dumps({"user_id": "u1", "item_id": "__streamrec_x"}))
        assert p.flush(10) == 0
        reasons = _dlq_reasons(settings, 31)
        assert len(reasons) == 31 and all("reserved" in r for r in reasons), reasons[:3]
        wait_until(lambda: applied(settings) == 50, 30, "the valid events", (worker,))
        doc = wait_until(lambda: (d := get_list(settings, "somebody-new"))["items"] and d, 20,
                         "the fallback list", (lookup,))
        assert doc["source"] == "fallback"
    finally:
        worker.stop()
        lookup.stop()


def test_bad_stored_lists_are_skipped_and_never_a_500(settings: Settings,
                                                     tmp_path: Path) -> None:
    """Invalid records on recommendations (a producer bug, or a forger) are counted and
    skipped by the lookup; users keep their last good list or get the fallback."""
    s = settings.model_copy(update={"api_token": "reader-token"})
    lookup = Proc(["serve"], s, tmp_path / "serve.log").start()
    auth = {"Authorization": "Bearer reader-token"}
    good = {"user_id": "u1", "items": [{"item_id": "m1", "score": 1.0}], "model_version": "v1",
            "updated_at": time.time(), "source": "model"}
    fallback = {**good, "user_id": "__fallback__", "source": "fallback"}
    p = Producer(producer_config(s))
    p.produce(s.topic_recommendations, key=b"u1", value=orjson.dumps(good))
    p.produce(s.topic_recommendations, key=b"__fallback__", value=orjson.dumps(fallback))
    for key, value in [(b"u1", b"{not json"), (b"u2", b'{"items": 5}'),
                       (b"__fallback__", b'{"user_id": "x", "items": [], "source": "evil"}'),
                       (b"u3", orjson.dumps({**good, "user_id": "u3",
                                             "items": [{"item_id": 1, "score": "x"}]}))]:
        p.produce(s.topic_recommendations, key=key, value=value)
    assert p.flush(10) == 0
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{s.http_port}", timeout=5) as client:
            wait_until(lambda: client.get("/readyz").status_code == 200, 60, "lookup ready",
                       (lookup,))
            wait_until(lambda: client.get("/metrics", headers=auth).status_code == 200 and
                       "streamrec_lookup_invalid_records_total 4.0" in
                       client.get("/metrics", headers=auth).text, 20, "4 invalid counted",
                       (lookup,))
            assert client.get("/recommendations/u1").status_code == 401
            assert client.get("/metrics").status_code == 401
            assert client.get("/healthz").status_code == 200
            for user in ("u1", "u2", "u3", "nobody"):
                r = client.get(f"/recommendations/{user}", headers=auth)
                assert r.status_code == 200, r.text
                assert r.json()["items"] == [{"item_id": "m1", "score": 1.0}]
            assert client.get("/recommendations/u2", headers=auth).json()["source"] == \
                "fallback"
    finally:
        lookup.stop()


def test_slowloris_connections_are_closed_while_clients_are_served(settings: Settings,
                                                                  tmp_path: Path) -> None:
    """2,000 requests that never finish their headers used to be held forever; now each is
    closed within the header deadline, while a normal client is answered meanwhile."""
    s = settings.model_copy(update={"http_header_timeout_s": 5.0})
    lookup = Proc(["serve"], s, tmp_path / "serve.log").start()
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{s.http_port}/healthz").status_code
                   == 200, 60, "lookup up", (lookup,))
        sel = selectors.DefaultSelector()
        socks = []
        for _ in range(2000):
            sock = socket.create_connection(("127.0.0.1", s.http_port))
            sock.sendall(b"GET /recommendations/x HTTP/1.1\r\nHost: a\r\nX-Slow: 1")
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ)
            socks.append(sock)
        timings = []
        with httpx.Client(timeout=2) as client:
            for _ in range(20):
                t0 = time.perf_counter()
                r = client.get(f"http://127.0.0.1:{s.http_port}/recommendations/u1")
                timings.append(time.perf_counter() - t0)
                assert r.status_code == 200
        open_ = set(socks)
        deadline = time.monotonic() + 30
        while open_ and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1):
                try:
                    data = key.fileobj.recv(4096)
                except (ConnectionResetError, BlockingIOError):
                    data = b""
                if not data:
                    sel.unregister(key.fileobj)
                    open_.discard(key.fileobj)
        assert not open_, f"{len(open_)} half-sent connections still open after 30 s"
        print(f"normal client during the attack: median {sorted(timings)[10] * 1e3:.1f} ms, "
              f"max {max(timings) * 1e3:.1f} ms")
        for sock in socks:
            sock.close()
        assert lookup.alive()
    finally:
        lookup.stop()
