"""The HTTP API of the contract: lists by user, fallback for unknown users, health, metrics.

The hot request, ``GET /recommendations/{user_id}`` with no query or a plain in-range
``?n=K``, is answered ahead of FastAPI's machinery from a cache of encoded bodies; every
other request (a bad or unusual ``n``, a too-long id, other methods and paths) goes through
the FastAPI route, which still declares the endpoint for ``/openapi.json`` and produces the
validation errors. Both paths build bodies with the same ``ListBodies``.
"""

# No `from __future__ import annotations`: FastAPI reads the Query bounds from live objects.
import hmac
import logging
import threading
import time
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Path, Query, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.types import Receive, Scope, Send

from consumers.lookup import LookupConsumer
from consumers.store import ListStore
from streamrec.schema import FALLBACK_KEY, MAX_ID_LEN, RecommendationList
from streamrec.settings import Settings

log = logging.getLogger(__name__)

REQUESTS = Counter("streamrec_lookup_requests_total", "recommendation lookups", ["source"])
REQUEST_SECONDS = Histogram("streamrec_lookup_request_seconds",
                            "Time to answer a recommendation lookup inside the process (the "
                            "socket and HTTP parsing not included)",
                            buckets=(.00001, .000025, .00005, .0001, .00025, .0005, .001,
                                     .0025, .005, .01, .025, .1))
BAD_STORED = Counter("streamrec_lookup_bad_stored_total",
                     "stored lists that could not be read and were served as the fallback")

PREFIX = "/recommendations/"
CACHED_USERS = 50_000
"""Users whose encoded bodies are kept (per side: own list / fallback); ~0.5 kB each for one n."""


def _json(body: bytes, status: int = 200) -> Response:
    return Response(content=body, status_code=status, media_type="application/json")


def _empty_fallback(user_id: str) -> dict:
    return {"user_id": user_id, "items": [], "model_version": "none", "updated_at": 0.0,
            "source": "fallback"}


def _stored(raw: bytes | None) -> dict | None:
    """A stored list as a dict; a record the store should never have taken (written by an
    older version, or by hand) counts as missing, so the user is served the fallback and
    never a 500."""
    if raw is None:
        return None
    try:
        doc = orjson.loads(raw)
        if isinstance(doc, dict) and isinstance(doc.get("items"), list):
            return doc
    except orjson.JSONDecodeError:
        pass
    BAD_STORED.inc()
    return None


Entry = tuple[bytes, Counter]
"""An encoded body and the request counter of its ``source``."""


class ListBodies:
    """Encoded response bodies by (user id, n), read through from the list store.

    A body is dropped when the lookup consumer writes that user's key; bodies of users served
    the fallback list carry the fallback's version, which a write of the fallback key bumps
    (O(1) on the writer's thread; stale ones are replaced when next asked for). So a cached
    body is never older than the store. A body rendered while a write was being applied is
    served but not kept: the generation counter tells the reader that its ``get`` may predate
    the write. Bounded: when a side holds ``max_users`` users the oldest inserted is dropped.
    """

    def __init__(self, store: ListStore, max_users: int = CACHED_USERS) -> None:
        self.store = store
        self.max_users = max_users
        self._own: dict[str, dict[int, Entry]] = {}
        self._fallback: dict[str, tuple[int, dict[int, Entry]]] = {}
        self._fallback_version = 0
        self._generation = 0
        self._lock = threading.Lock()
        self._counters: dict[str, Counter] = {}
        store.on_change(self._drop)

    def get(self, user_id: str, n: int) -> bytes:
        """The body for ``user_id`` with at most ``n`` items (validated by the caller); counts
        the request by its ``source``."""
        entry = self._cached(user_id, n)
        if entry is None:
            entry = self._render(user_id, n)
        entry[1].inc()
        return entry[0]

    def _cached(self, user_id: str, n: int) -> Entry | None:
        bodies = self._own.get(user_id)
        if bodies is None:
            tagged = self._fallback.get(user_id)
            if tagged is None or tagged[0] != self._fallback_version:
                return None
            bodies = tagged[1]
        return bodies.get(n)

    def _render(self, user_id: str, n: int) -> Entry:
        generation = self._generation
        doc = _stored(self.store.get(user_id))
        own = doc is not None
        if not own:
            doc = _stored(self.store.get(FALLBACK_KEY)) or _empty_fallback(user_id)
            doc["user_id"] = user_id
            doc["source"] = "fallback"
        doc["items"] = doc["items"][:n]
        entry = (orjson.dumps(doc), self._counter(doc["source"]))
        with self._lock:
            if generation == self._generation:
                self._bodies(user_id, own)[n] = entry
        return entry

    def _bodies(self, user_id: str, own: bool) -> dict[int, Entry]:
        """The user's bodies on its side, made (and room made) if missing or stale."""
        side: dict = self._own if own else self._fallback
        found = side.get(user_id)
        if own and found is not None:
            return found
        if not own and found is not None and found[0] == self._fallback_version:
            return found[1]
        if found is None and len(side) >= self.max_users:
            del side[next(iter(side))]
        bodies: dict[int, Entry] = {}
        side[user_id] = bodies if own else (self._fallback_version, bodies)
        return bodies

    def _counter(self, source: str) -> Counter:
        counter = self._counters.get(source)
        if counter is None:
            counter = self._counters[source] = REQUESTS.labels(source)
        return counter

    def _drop(self, keys: list[bytes]) -> None:
        with self._lock:
            self._generation += 1
            for key in keys:
                user_id = key.decode("utf-8", "replace")
                if user_id == FALLBACK_KEY:
                    self._fallback_version += 1
                self._own.pop(user_id, None)
                self._fallback.pop(user_id, None)


class LookupAPI(FastAPI):
    """FastAPI, except that ``GET /recommendations/{user_id}[?n=K]`` is answered before
    FastAPI's routing, validation and middleware: in process that request costs ~80 µs through
    FastAPI and ~5 µs here (uvicorn and the socket add ~25 µs; docs/benchmarks.md).

    Only requests whose answer is certain take that path: method GET, one non-empty path
    segment of at most 256 characters, and a query that is empty or exactly ``n=`` followed by
    digits (no leading zero) within 1..max_n. Anything else — every request that gets a 4xx,
    a redirect or an error — goes through FastAPI unchanged, so status codes and error bodies
    stay FastAPI's; the declared route still documents the endpoint in ``/openapi.json``. The
    hot response has the same status and headers as the route's.
    """

    def __init__(self, bodies: ListBodies, default_n: int, max_n: int,
                 token: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bodies = bodies
        self.default_n = default_n
        self.max_n = max_n
        self.token = f"Bearer {token}".encode() if token else None
        self.owner_hook = None
        """Partitioned mode (``consumers/partitioned.py``): answers requests for users this
        replica does not serve, before the paths below; None in replica mode."""

    def _n(self, query: bytes) -> int | None:
        if not query:
            return self.default_n
        if query[:2] != b"n=" or not 3 <= len(query) <= 5:
            return None
        digits = query[2:]
        if not digits.isdigit() or digits[0] == 48:  # ascii digits only, no leading "0"
            return None
        n = int(digits)
        return n if n <= self.max_n else None

    def _hot_body(self, scope: Scope) -> bytes | None:
        if scope["method"] != "GET" or scope.get("root_path"):
            return None
        path: str = scope["path"]
        if not path.startswith(PREFIX):
            return None
        user_id = path[len(PREFIX):]
        if not user_id or len(user_id) > MAX_ID_LEN or "/" in user_id:
            return None
        n = self._n(scope["query_string"])
        if n is None:
            return None
        try:
            return self.bodies.get(user_id, n)
        except Exception:  # let FastAPI's route fail the same way and answer 500 as before
            return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        if self.token is not None and scope["path"] not in OPEN_PATHS and \
                not self._authorised(scope):
            await _send(send, 401, _UNAUTHORISED, [(b"www-authenticate", b"Bearer")])
            return
        if self.owner_hook is not None and await self.owner_hook(scope, receive, send):
            return
        t0 = time.perf_counter()
        body = self._hot_body(scope)
        if body is None:
            await super().__call__(scope, receive, send)
            return
        await _send(send, 200, body)
        REQUEST_SECONDS.observe(time.perf_counter() - t0)

    def _authorised(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                return hmac.compare_digest(value, self.token)
        return False


_UNAUTHORISED = orjson.dumps({"detail": "missing or wrong bearer token (Authorization: Bearer "
                                        "<STREAMREC_API_TOKEN>)"})
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
"""What answers without the bearer token: probes of supervisors and load balancers."""


async def _send(send: Send, status: int, body: bytes,
                headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(body)).encode()),
                            (b"content-type", b"application/json"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def create_api(settings: Settings, store: ListStore | None = None,
               start_consumer: bool = True) -> FastAPI:
    """The lookup API; with ``start_consumer`` it also runs the topic -> store thread."""
    store = store or ListStore(settings.state_dir)
    consumer_class = LookupConsumer
    if settings.lookup_mode == "partitioned":
        from consumers.partitioned import PartitionedLookup as consumer_class
    consumer = consumer_class(settings, store) if start_consumer else None
    bodies = ListBodies(store)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if consumer is not None:
            consumer.start()
        yield
        if consumer is not None:
            consumer.stop()
            consumer.join(5)
        store.close()

    token = settings.api_token.get_secret_value() if settings.api_token else None
    app = LookupAPI(bodies, settings.default_n, settings.top_n, token=token,
                    title="streamrec lookup API", version="1",
                    description="Fresh top-N recommendations, as published by the stream worker.",
                    lifespan=lifespan)
    if consumer is not None and settings.lookup_mode == "partitioned":
        app.owner_hook = consumer.router(app)
    app.state.store = store
    app.state.consumer = consumer
    app.state.bodies = bodies
    max_n = settings.top_n

    @app.get("/recommendations/{user_id}", response_model=RecommendationList,
             responses={422: {"description": "n out of range"}})
    async def recommendations(user_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_LEN)],
                              n: Annotated[int, Query(ge=1, le=max_n)] = settings.default_n
                              ) -> Response:
        return _json(bodies.get(user_id, n))

    @app.get("/healthz")
    async def healthz() -> Response:
        """200 while the API serves (from the store, even with no broker): liveness."""
        return _json(orjson.dumps({"status": "ok", **_consumer_state(consumer)}))

    @app.get("/readyz", responses={503: {"description": "not caught up with the topic yet"}})
    async def readyz() -> Response:
        """200 once the store has caught up with the recommendations topic, else 503."""
        state = _consumer_state(consumer)
        ok = consumer is None or state["consumer_ready"]
        return _json(orjson.dumps({"status": "ready" if ok else "not ready", **state}),
                     200 if ok else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(content=generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def _consumer_state(consumer: LookupConsumer | None) -> dict[str, Any]:
    if consumer is None:
        return {"consumer_ready": False, "consumer_error": None, "lag": None}
    return {"consumer_ready": consumer.ready.is_set(), "consumer_error": consumer.error,
            "lag": sum(consumer.lag.values()) if consumer.lag else 0}


def run_api(settings: Settings) -> None:
    """Serve the lookup API (and run its consumer) until a signal stops it."""
    from consumers.server import serve

    serve(create_api(settings), settings)
