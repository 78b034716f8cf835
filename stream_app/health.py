"""The worker's HTTP side door: Prometheus metrics, liveness and readiness on one port.

``/metrics`` is prometheus_client's WSGI app; ``/healthz`` answers 200 while the process
serves at all (liveness: a supervisor restarts it when this stops answering); ``/readyz``
answers 200 only when the worker streams and its input lag is within one micro-batch,
else 503, both with a JSON body saying why (readiness: dashboards, load balancers, compose
healthchecks). The server runs in a daemon thread (wsgiref's, as prometheus_client's own
``start_http_server``), so it answers while the worker bootstraps or waits for a broker.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import orjson
from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from streamrec.errors import ConfigError

log = logging.getLogger(__name__)

Readiness = Callable[[], tuple[bool, dict[str, Any]]]
"""Returns (ready, details) for ``/readyz``."""


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass


def health_app(readiness: Readiness) -> Callable:
    """The WSGI app: ``/healthz``, ``/readyz``, everything else Prometheus metrics."""
    metrics_app = make_wsgi_app()

    def app(environ: dict, start_response: Callable) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/healthz", "/readyz"):
            if path == "/healthz":
                ok, body = True, {"status": "ok"}
            else:
                ok, details = readiness()
                body = {"status": "ready" if ok else "not ready", **details}
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "application/json")])
            return [orjson.dumps(body)]
        return metrics_app(environ, start_response)

    return app


def serve_health(host: str, port: int, readiness: Readiness) -> ThreadingWSGIServer:
    """Serve :func:`health_app` on ``host:port`` in a daemon thread; a port in use is one
    clear error (another worker, or another program, holds it)."""
    try:
        httpd = make_server(host, port, health_app(readiness), ThreadingWSGIServer,
                            handler_class=_QuietHandler)
    except OSError as exc:
        raise ConfigError(f"worker metrics port {host}:{port} cannot be opened ({exc.strerror}):"
                          " is another worker running? Stop it, or set "
                          "STREAMREC_WORKER_METRICS_PORT to a free port (0: no metrics)") from None
    threading.Thread(target=httpd.serve_forever, name="health", daemon=True).start()
    log.info("metrics, /healthz and /readyz on http://%s:%d", host, port)
    return httpd
