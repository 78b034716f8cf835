"""The Python client for apps against the real lookup API in process (no broker): a user's own
list, the fallback flag for an unknown user, a bad ``n``, timeouts and an absent or silent
lookup, the bearer token, and the async twin."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import uvicorn

import streamrec
from consumers.api import create_api
from consumers.store import ListStore
from streamrec.client import (AsyncLookupClient, LookupClient, RecommendedItem,
                              Recommendations)
from streamrec.errors import LookupFailed, StreamrecError
from streamrec.schema import FALLBACK_KEY
from streamrec.settings import Settings

TOP_N = 20


def _list(user: str, items: list[str], source: str = "model",
          reasons: dict[str, str] | None = None) -> bytes:
    entries = []
    for k, item in enumerate(items):
        entry: dict = {"item_id": item, "score": round(1.0 - k / 40, 3)}
        if reasons and item in reasons:
            entry["reason"] = reasons[item]
        entries.append(entry)
    return orjson.dumps({"user_id": user, "items": entries, "model_version": "v7",
                         "updated_at": 1700000000.5, "source": source})


@pytest.fixture
def app(tmp_path: Path):
    store = ListStore(tmp_path)
    store.apply([(b"u1", _list("u1", [f"m{k}" for k in range(TOP_N)], reasons={"m5": "explore"})),
                 (FALLBACK_KEY.encode(), _list(FALLBACK_KEY, ["pop1", "pop2", "pop3"],
                                               source="fallback"))], {"0": 2})
    yield create_api(Settings(state_dir=tmp_path, top_n=TOP_N), store, start_consumer=False)
    store.close()


class Served(str):
    """The base URL of a lookup API on a real loopback socket, plus the client addresses
    (host, port) its requests came from: one port per TCP connection."""

    peers: set


@pytest.fixture
def server(app) -> Iterator[Served]:
    """The lookup API on a real loopback socket (uvicorn in a thread), as apps reach it."""
    peers: set = set()

    async def recording(scope, receive, send) -> None:
        if scope["type"] == "http":
            peers.add(tuple(scope["client"]))
        await app(scope, receive, send)

    config = uvicorn.Config(recording, host="127.0.0.1", port=0, log_level="warning",
                            access_log=False, lifespan="off")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    url = Served(f"http://127.0.0.1:{srv.servers[0].sockets[0].getsockname()[1]}")
    url.peers = peers
    yield url
    srv.should_exit = True
    thread.join(5)


def test_own_list_is_typed_and_cut_to_n(server: str) -> None:
    with LookupClient(server) as lookup:
        recs = lookup.get("u1", n=6)
    assert isinstance(recs, Recommendations) and recs.user_id == "u1"
    assert recs.item_ids == ["m0", "m1", "m2", "m3", "m4", "m5"]
    assert recs.items[0] == RecommendedItem("m0", 1.0, None)
    assert recs.items[5].reason == "explore"
    assert (recs.model_version, recs.updated_at, recs.source) == ("v7", 1700000000.5, "model")
    assert not recs.fallback
    with pytest.raises(AttributeError):
        recs.source = "fallback"  # type: ignore[misc]  # frozen: a result cannot be altered


def test_unknown_user_gets_the_fallback_flag(server: str) -> None:
    with LookupClient(server) as lookup:
        recs = lookup.get("never-seen", n=2)
        numeric = lookup.get(42)  # integer ids are sent as their decimal string
    assert recs.fallback and recs.source == "fallback" and recs.user_id == "never-seen"
    assert recs.item_ids == ["pop1", "pop2"]
    assert numeric.user_id == "42" and numeric.fallback


def test_one_connection_serves_many_requests(server: Served) -> None:
    with LookupClient(server) as lookup:
        for _ in range(5):
            lookup.get("u1", n=1)
        lookup.health()
    assert len(server.peers) == 1, server.peers


@pytest.mark.parametrize("n", [0, TOP_N + 1, -3])
def test_bad_n_raises_a_lookup_failed_that_says_what_to_ask(server: str, n: int) -> None:
    with LookupClient(server) as lookup, pytest.raises(LookupFailed) as info:
        lookup.get("u1", n=n)
    assert info.value.status_code == 422
    assert "HTTP 422" in str(info.value) and "ask for n from 1" in str(info.value)
    assert isinstance(info.value, StreamrecError)


def test_bad_user_id_is_refused_before_any_request() -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    with LookupClient(transport=httpx.MockTransport(fail)) as lookup:
        for bad in ("", "x" * 257):
            with pytest.raises(LookupFailed, match="non-empty string of at most 256"):
                lookup.get(bad)


def test_ids_with_reserved_characters_are_escaped() -> None:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        return httpx.Response(200, content=_list("a b?c", ["m1"]))

    with LookupClient(transport=httpx.MockTransport(answer)) as lookup:
        assert lookup.get("a b?c", n=1).user_id == "a b?c"
    assert seen == ["/recommendations/a%20b%3Fc?n=1"]


def test_timeouts_are_configured_and_bounded() -> None:
    default = LookupClient()
    assert (default.timeout.connect, default.timeout.read) == (1.0, 2.0)
    custom = LookupClient(timeout=0.25)
    assert custom.timeout.connect == custom.timeout.read == custom.timeout.pool == 0.25
    default.close()
    custom.close()


def test_a_silent_lookup_costs_the_timeout_and_a_clear_error() -> None:
    # A listening socket that never accepts: TCP connects, no HTTP answer ever comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = "http://127.0.0.1:%d" % silent.getsockname()[1]
        with LookupClient(url, timeout=0.3) as lookup:
            started = time.monotonic()
            with pytest.raises(LookupFailed, match="did not answer in time") as info:
                lookup.get("u1")
            assert time.monotonic() - started < 2
            assert info.value.status_code is None
            assert not lookup.health()


def test_an_absent_lookup_says_how_to_start_one() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = "http://127.0.0.1:%d" % s.getsockname()[1]
    with LookupClient(url, timeout=1) as lookup:
        with pytest.raises(LookupFailed, match="could not be reached.*streamrec serve"):
            lookup.get("u1")
        assert lookup.health() is False and lookup.ready() is False


def test_health_and_ready(server: str) -> None:
    with LookupClient(server) as lookup:
        assert lookup.health() is True
        assert isinstance(lookup.ready(), bool)  # /readyz: True once the lookup is caught up


def test_bearer_token_is_sent_and_a_refusal_says_which_token(monkeypatch) -> None:
    def guarded(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != "Bearer s3cret":
            return httpx.Response(401, json={"detail": "missing or wrong bearer token"})
        return httpx.Response(200, content=_list("u1", ["m1"]))

    transport = httpx.MockTransport(guarded)
    monkeypatch.delenv("STREAMREC_API_TOKEN", raising=False)
    with LookupClient(token="s3cret", transport=transport) as lookup:
        assert lookup.get("u1").item_ids == ["m1"]
    with LookupClient(transport=transport) as lookup, \
            pytest.raises(LookupFailed, match="pass token= or set STREAMREC_API_TOKEN") as info:
        lookup.get("u1")
    assert info.value.status_code == 401
    monkeypatch.setenv("STREAMREC_API_TOKEN", "s3cret")  # the lookup's own variable
    with LookupClient(transport=transport) as lookup:
        assert lookup.get("u1").item_ids == ["m1"]


def test_a_body_that_is_not_a_list_is_reported() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json={"hello": "world"}))
    with LookupClient(transport=transport) as lookup, \
            pytest.raises(LookupFailed, match="not a recommendation list"):
        lookup.get("u1")


def test_async_client_does_the_same(app) -> None:
    async def go() -> None:
        transport = httpx.ASGITransport(app=app)
        async with AsyncLookupClient("http://lookup", transport=transport,
                                     timeout=0.5) as lookup:
            own = await lookup.get("u1", n=3)
            unknown = await lookup.get("stranger", n=3)
            assert own.item_ids == ["m0", "m1", "m2"] and not own.fallback
            assert unknown.fallback and unknown.item_ids == ["pop1", "pop2", "pop3"]
            with pytest.raises(LookupFailed) as info:
                await lookup.get("u1", n=TOP_N + 1)
            assert info.value.status_code == 422
            assert await lookup.health() is True
            assert lookup.timeout.read == 0.5

    asyncio.run(go())


def test_async_client_reports_an_absent_lookup() -> None:
    async def go() -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            url = "http://127.0.0.1:%d" % s.getsockname()[1]
        async with AsyncLookupClient(url, timeout=1) as lookup:
            with pytest.raises(LookupFailed, match="could not be reached"):
                await lookup.get("u1")
            assert await lookup.ready() is False

    asyncio.run(go())


def test_public_api_is_reexported_lazily() -> None:
    assert streamrec.LookupClient is LookupClient
    assert streamrec.AsyncLookupClient is AsyncLookupClient
    assert streamrec.Settings is Settings
    from producers.events import EventProducer
    assert streamrec.EventProducer is EventProducer
    with pytest.raises(AttributeError):
        streamrec.NoSuchThing  # noqa: B018
