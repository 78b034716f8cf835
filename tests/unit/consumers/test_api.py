"""The lookup HTTP API of the contract, in process (no broker): lists, fallback, bad ``n``,
headers, and that the fast path for the hot request answers exactly as the FastAPI route."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import orjson
import pytest

from consumers.api import ListBodies, create_api
from consumers.store import ListStore
from streamrec.schema import FALLBACK_KEY
from streamrec.settings import Settings

TOP_N = 20


def _list(user: str, version: str, n: int = TOP_N, source: str = "model") -> bytes:
    return orjson.dumps({"user_id": user, "items": [{"item_id": f"{version}-m{k}",
                                                     "score": 1.0 - k / 40} for k in range(n)],
                         "model_version": version, "updated_at": 1.5, "source": source,
                         "future_key": 1})


@pytest.fixture
def store(tmp_path: Path):
    s = ListStore(tmp_path)
    s.apply([(b"u1", _list("u1", "v1")), (b"u2", _list("u2", "v1"))], {"0": 2})
    yield s
    s.close()


@pytest.fixture
def app(store: ListStore, tmp_path: Path):
    return create_api(Settings(state_dir=tmp_path, top_n=TOP_N), store, start_consumer=False)


def get(app, url: str, method: str = "GET") -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.request(method, url)
    return asyncio.run(go())


def slow(url: str) -> str:
    """The same request, sent through FastAPI's route (an extra query key skips the fast path;
    FastAPI ignores keys it does not declare)."""
    return url + ("&" if "?" in url else "?") + "x=1"


def test_stored_list_is_served_cut_to_n(app) -> None:
    r = get(app, "/recommendations/u1?n=3")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    assert [i["item_id"] for i in doc["items"]] == ["v1-m0", "v1-m1", "v1-m2"]
    assert doc["source"] == "model" and doc["future_key"] == 1  # unknown keys pass through
    assert len(get(app, "/recommendations/u1").json()["items"]) == 10  # default n
    assert len(get(app, f"/recommendations/u1?n={TOP_N}").json()["items"]) == TOP_N


def test_unknown_user_gets_the_fallback_list(app, store: ListStore) -> None:
    doc = get(app, "/recommendations/nobody").json()
    assert doc == {"user_id": "nobody", "items": [], "model_version": "none",
                   "updated_at": 0.0, "source": "fallback"}
    store.apply([(FALLBACK_KEY.encode(), _list(FALLBACK_KEY, "pop", source="model"))], {})
    doc = get(app, "/recommendations/nobody?n=2").json()
    assert doc["user_id"] == "nobody" and doc["source"] == "fallback"
    assert [i["item_id"] for i in doc["items"]] == ["pop-m0", "pop-m1"]


@pytest.mark.parametrize("bad", ["0", "-1", str(TOP_N + 1), "100", "ten", "", "1e1"])
def test_bad_n_gets_422_with_fastapi_detail(app, bad: str) -> None:
    r = get(app, f"/recommendations/u1?n={bad}")
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["query", "n"]


def test_too_long_user_id_gets_422_and_other_requests_keep_fastapi_answers(app) -> None:
    r = get(app, "/recommendations/" + "x" * 257)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "user_id"]
    assert get(app, "/recommendations/" + "x" * 256).json()["source"] == "fallback"
    assert get(app, "/recommendations/").status_code == 404
    assert get(app, "/recommendations/a%2Fb").status_code == 404
    assert get(app, "/recommendations/u1/").status_code == 307  # FastAPI's slash redirect
    for method in ("POST", "HEAD"):
        r = get(app, "/recommendations/u1", method)
        assert r.status_code == 405 and r.headers["allow"] == "GET"


@pytest.mark.parametrize("url", [
    "/recommendations/u1", "/recommendations/u1?n=1", "/recommendations/u1?n=7",
    f"/recommendations/u1?n={TOP_N}", "/recommendations/nobody", "/recommendations/nobody?n=4",
    "/recommendations/%C3%A9l%C3%A8ve%20x?n=2", "/recommendations/" + "y" * 256,
])
def test_fast_path_answers_exactly_as_the_route(app, store: ListStore, url: str) -> None:
    store.apply([(FALLBACK_KEY.encode(), _list(FALLBACK_KEY, "pop"))], {})
    for _ in range(2):  # first rendered, then from the cache
        fast, route = get(app, url), get(app, slow(url))
        assert fast.status_code == route.status_code == 200
        assert fast.content == route.content
        assert fast.headers.multi_items() == route.headers.multi_items()


def test_unusual_but_valid_n_is_left_to_fastapi(app) -> None:
    for url in ("/recommendations/u1?n=05", "/recommendations/u1?n=2&n=5",
                "/recommendations/u1?n=%205"):
        assert len(get(app, url).json()["items"]) == 5


def test_a_new_list_replaces_the_cached_one(app, store: ListStore) -> None:
    assert get(app, "/recommendations/u1?n=2").json()["model_version"] == "v1"
    assert get(app, "/recommendations/u3").json()["source"] == "fallback"
    store.apply([(b"u1", _list("u1", "v2")), (b"u3", _list("u3", "v2"))], {"0": 4})
    assert get(app, "/recommendations/u1?n=2").json()["model_version"] == "v2"
    assert get(app, "/recommendations/u3").json()["source"] == "model"
    store.apply([(b"u1", None)], {"0": 5})  # tombstone: the user falls back
    assert get(app, "/recommendations/u1?n=2").json()["source"] == "fallback"
    store.apply([(FALLBACK_KEY.encode(), _list(FALLBACK_KEY, "pop2"))], {"0": 6})
    assert get(app, "/recommendations/u1?n=2").json()["model_version"] == "pop2"


def test_a_list_written_while_rendering_is_not_cached_stale(store: ListStore) -> None:
    bodies = ListBodies(store)
    read = store.get

    def get_then_write(user_id: str) -> bytes | None:
        raw = read(user_id)  # the old list ...
        store.get = read
        store.apply([(b"u1", _list("u1", "v2"))], {"0": 3})  # ... then the new one lands
        return raw

    store.get = get_then_write
    assert orjson.loads(bodies.get("u1", 2))["model_version"] == "v1"
    assert orjson.loads(bodies.get("u1", 2))["model_version"] == "v2"


def test_readers_racing_a_writer_end_on_the_last_list(store: ListStore) -> None:
    import threading

    bodies = ListBodies(store)
    done = threading.Event()

    def write() -> None:
        for v in range(200):
            store.apply([(b"u1", _list("u1", f"w{v}", n=3)),
                         (FALLBACK_KEY.encode(), _list(FALLBACK_KEY, f"f{v}", n=3))], {})
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    while not done.is_set():
        bodies.get("u1", 2)
        bodies.get("nobody", 2)
    writer.join()
    assert orjson.loads(bodies.get("u1", 2))["model_version"] == "w199"
    assert orjson.loads(bodies.get("nobody", 2))["model_version"] == "f199"


def test_the_cache_is_bounded(store: ListStore) -> None:
    bodies = ListBodies(store, max_users=2)
    for user in ("u1", "u2", "a", "b", "c"):
        bodies.get(user, 3)
    assert len(bodies._own) <= 2 and len(bodies._fallback) <= 2


def test_openapi_documents_the_route_and_metrics_count_by_source(app) -> None:
    spec = get(app, "/openapi.json").json()
    params = {p["name"]: p for p in spec["paths"]["/recommendations/{user_id}"]["get"]
              ["parameters"]}
    assert params["n"]["schema"]["maximum"] == TOP_N and params["n"]["schema"]["minimum"] == 1
    assert params["user_id"]["schema"]["maxLength"] == 256

    def count(source: str) -> float:
        text = get(app, "/metrics").text
        line = f'streamrec_lookup_requests_total{{source="{source}"}} '
        return next((float(x.split()[-1]) for x in text.splitlines() if x.startswith(line)), 0)

    model, fallback = count("model"), count("fallback")
    get(app, "/recommendations/u1")
    get(app, "/recommendations/u1")  # cached: counted all the same
    get(app, slow("/recommendations/u1"))
    get(app, "/recommendations/somebody-new")
    assert count("model") == model + 3 and count("fallback") == fallback + 1
    assert get(app, "/healthz").json() == {"status": "ok", "consumer_ready": False,
                                           "consumer_error": None, "lag": None}
