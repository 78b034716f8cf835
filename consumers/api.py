"""The HTTP API of the contract: lists by user, fallback for unknown users, health, metrics."""

# No `from __future__ import annotations`: FastAPI reads the Query bounds from live objects.
import logging
from contextlib import asynccontextmanager
from typing import Annotated

import orjson
from fastapi import FastAPI, Path, Query, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from consumers.lookup import LookupConsumer
from consumers.store import ListStore
from streamrec.schema import FALLBACK_KEY, RecommendationList
from streamrec.settings import Settings

log = logging.getLogger(__name__)

REQUESTS = Counter("streamrec_lookup_requests_total", "recommendation lookups", ["source"])


def _json(body: bytes, status: int = 200) -> Response:
    return Response(content=body, status_code=status, media_type="application/json")


def _empty_fallback(user_id: str) -> dict:
    return {"user_id": user_id, "items": [], "model_version": "none", "updated_at": 0.0,
            "source": "fallback"}


def create_api(settings: Settings, store: ListStore | None = None,
               start_consumer: bool = True) -> FastAPI:
    """The lookup API; with ``start_consumer`` it also runs the topic -> store thread."""
    store = store or ListStore(settings.state_dir)
    consumer = LookupConsumer(settings, store) if start_consumer else None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if consumer is not None:
            consumer.start()
        yield
        if consumer is not None:
            consumer.stop()
            consumer.join(5)
        store.close()

    app = FastAPI(title="streamrec lookup API", version="1",
                  description="Fresh top-N recommendations, as published by the stream worker.",
                  lifespan=lifespan)
    app.state.store = store
    app.state.consumer = consumer
    max_n = settings.top_n

    @app.get("/recommendations/{user_id}", response_model=RecommendationList,
             responses={422: {"description": "n out of range"}})
    async def recommendations(user_id: Annotated[str, Path(min_length=1, max_length=256)],
                        n: Annotated[int, Query(ge=1, le=max_n)] = settings.default_n
                        ) -> Response:
        raw = store.get(user_id)
        if raw is None:
            fb = store.get(FALLBACK_KEY)
            doc = orjson.loads(fb) if fb is not None else _empty_fallback(user_id)
            doc["user_id"] = user_id
            doc["source"] = "fallback"
        else:
            doc = orjson.loads(raw)
        doc["items"] = doc["items"][:n]
        REQUESTS.labels(doc["source"]).inc()
        return _json(orjson.dumps(doc))

    @app.get("/healthz")
    async def healthz() -> Response:
        if consumer is not None and (consumer.error or not consumer.is_alive()):
            return _json(orjson.dumps({"status": "error",
                                       "error": consumer.error or "consumer not running"}), 503)
        return _json(orjson.dumps({"status": "ok",
                                   "consumer_ready": bool(consumer and consumer.ready.is_set())}))

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(content=generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def run_api(settings: Settings) -> None:
    import uvicorn

    uvicorn.run(create_api(settings), host=settings.http_host, port=settings.http_port,
                log_level="warning", access_log=False)
