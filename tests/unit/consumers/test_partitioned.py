"""Partitioned lookups (Mode B) in process: who owns a partition, and what a request for a
user this replica does not serve gets (forwarded answer, or the fallback list, never an
error). The group and the members topic run on a real broker in
tests/integration/test_scaling.py."""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import httpx
import orjson
import pytest

from consumers.api import create_api
from consumers.forward import Forwarder
from consumers.partitioned import (FORWARD, READY, RESTORING, UNKNOWN, MemberDirectory,
                                   Ownership, PartitionRouter, advertised_url)
from consumers.partitioner import user_partition
from consumers.store import ListStore
from streamrec.schema import FALLBACK_KEY
from streamrec.settings import Settings

PARTS = 4


def _list(user: str, source: str = "model") -> bytes:
    return orjson.dumps({"user_id": user, "items": [{"item_id": f"m{k}", "score": 1.0 - k / 40}
                                                    for k in range(20)],
                         "model_version": "v1", "updated_at": 1.0, "source": source})


def _user_in(partition: int) -> str:
    return next(f"u{k}" for k in range(10_000) if user_partition(f"u{k}", PARTS) == partition)


# --------------------------------------------------------------------------- ownership
def test_latest_claim_owns_a_partition() -> None:
    d = MemberDirectory()
    d.update(b"http://a", orjson.dumps({"url": "http://a", "partitions": [0, 1]}), 10)
    d.update(b"http://b", orjson.dumps({"url": "http://b", "partitions": [2, 3]}), 11)
    assert d.owners() == {0: "http://a", 1: "http://a", 2: "http://b", 3: "http://b"}
    # a dies; b is given its partitions and says so later in the topic
    d.update(b"http://b", orjson.dumps({"url": "http://b", "partitions": [0, 1, 2, 3]}), 12)
    assert set(d.owners().values()) == {"http://b"}
    d.update(b"http://b", None, 13)                   # b leaves: tombstone
    assert d.owners() == {0: "http://a", 1: "http://a"}
    d.update(b"junk", b"not json", 14)                 # skipped, nothing breaks
    assert len(d.records) == 1


def test_route_by_partition_state() -> None:
    own = Ownership("http://me")
    assert own.route("u1")[0] == UNKNOWN             # no partition count yet
    own.partitions = PARTS
    users = {p: _user_in(p) for p in range(PARTS)}
    own.states = {0: READY, 1: RESTORING}
    own.owners = {0: "http://me", 1: "http://me", 2: "http://other", 3: "http://me"}
    assert own.route(users[0]) == (READY, None)
    assert own.route(users[1]) == (RESTORING, None)
    assert own.route(users[2]) == (FORWARD, "http://other")
    assert own.route(users[3]) == (UNKNOWN, None)    # a stale claim of ours: not served here


def test_advertised_url_defaults_to_host_and_port() -> None:
    assert advertised_url(Settings(http_host="0.0.0.0", http_port=8001)) == \
        "http://127.0.0.1:8001"
    assert advertised_url(Settings(lookup_advertised_url="http://lookup-2:8000/")) == \
        "http://lookup-2:8000"


# --------------------------------------------------------------------------- requests
class Peer:
    """Another replica: answers every GET with a canned list and records what it got."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[tuple[str, dict]] = []
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                peer.requests.append((self.path, {k.lower(): v for k, v in
                                                  self.headers.items()}))
                body = _list("from-peer") if status == 200 else b'{"detail":"x"}'
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def setup(tmp_path: Path):
    store = ListStore(tmp_path)
    users = {p: _user_in(p) for p in range(PARTS)}
    store.apply([(users[p].encode(), _list(users[p])) for p in range(PARTS)] +
                [(FALLBACK_KEY.encode(), _list(FALLBACK_KEY, "fallback"))], {"0": 1})
    settings = Settings(state_dir=tmp_path, top_n=20, lookup_forward_timeout_s=0.5,
                        api_token="secret")
    app = create_api(settings, store, start_consumer=False)
    own = Ownership("http://me")
    own.partitions = PARTS
    own.states = {0: READY, 1: RESTORING}
    fake = SimpleNamespace(ownership=own, store=store, settings=settings)
    app.owner_hook = PartitionRouter(fake, app)
    yield app, own, users
    store.close()


def get(app, url: str, headers: dict | None = None) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.get(url, headers={"authorization": "Bearer secret",
                                                  **(headers or {})})
    return asyncio.run(go())


def test_own_ready_partition_is_served_here(setup) -> None:
    app, _, users = setup
    doc = get(app, f"/recommendations/{users[0]}?n=3").json()
    assert doc["source"] == "model" and doc["user_id"] == users[0] and len(doc["items"]) == 3


def test_restoring_partition_gets_the_fallback(setup) -> None:
    app, _, users = setup
    r = get(app, f"/recommendations/{users[1]}?n=5")
    assert r.status_code == 200
    doc = r.json()
    assert doc["source"] == "fallback" and doc["user_id"] == users[1] and len(doc["items"]) == 5
    assert get(app, f"/recommendations/{users[1]}?n=0").status_code == 422   # bad n: 422
    assert get(app, f"/recommendations/{users[1]}?n=4&x=1").json()["source"] == "fallback"


def test_other_replicas_user_is_forwarded_with_the_token(setup) -> None:
    app, own, users = setup
    peer = Peer()
    try:
        own.owners = {2: peer.url}
        r = get(app, f"/recommendations/{users[2]}?n=7")
        assert r.status_code == 200 and r.json()["user_id"] == "from-peer"
        path, headers = peer.requests[-1]
        assert path == f"/recommendations/{users[2]}?n=7"
        assert headers["x-streamrec-forwarded"] == "1"
        assert headers["authorization"] == "Bearer secret"
        # a request that was forwarded already is never forwarded again
        r = get(app, f"/recommendations/{users[2]}", {"x-streamrec-forwarded": "1"})
        assert r.json()["source"] == "fallback" and len(peer.requests) == 1
    finally:
        peer.close()


@pytest.mark.parametrize("peer_status", [None, 503])
def test_owner_away_or_failing_gets_the_fallback(setup, peer_status: int | None) -> None:
    app, own, users = setup
    peer = Peer(peer_status) if peer_status else None
    try:
        # nobody listens on port 9 (discard) of localhost: connection refused at once
        own.owners = {2: peer.url if peer else "http://127.0.0.1:9"}
        r = get(app, f"/recommendations/{users[2]}?n=2")
        assert r.status_code == 200
        assert r.json()["source"] == "fallback" and len(r.json()["items"]) == 2
    finally:
        if peer:
            peer.close()


def test_unknown_owner_gets_the_fallback_and_partitions_are_described(setup) -> None:
    app, _, users = setup
    assert get(app, f"/recommendations/{users[3]}").json()["source"] == "fallback"
    doc = get(app, "/lookup/partitions").json()
    assert doc == {"url": "http://me", "partitions": PARTS, "owned": {"0": READY,
                                                                      "1": RESTORING},
                   "owners": {}}


def test_forwarder_reuses_connections() -> None:
    peer = Peer()

    async def go() -> list:
        fw = Forwarder(timeout_s=1.0)
        out = [await fw.get(peer.url, b"/recommendations/u1") for _ in range(3)]
        idle = len(fw._idle[peer.url])
        fw.close()
        return out + [idle]
    try:
        *replies, idle = asyncio.run(go())
        assert all(r is not None and r[0] == 200 for r in replies) and idle == 1
    finally:
        peer.close()
