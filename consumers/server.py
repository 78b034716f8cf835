"""Running the lookup API under uvicorn with limits that resist abuse.

uvicorn closes idle keep-alive connections, but a connection that never finishes sending
its request headers (slowloris) is held forever: it arms no timer until a response has been
sent. :class:`HeaderTimeoutProtocol` is uvicorn's own httptools protocol with one timer
more: request headers must be complete within ``http_header_timeout_s`` of the request's
first byte (of the connection, for the first request), else the connection is closed. A
concurrency limit answers 503 beyond ``http_max_connections`` connections or requests in
flight (uvicorn's ``limit_concurrency``), and the process's open-files limit is raised to
its hard limit so that many idle sockets do not starve new clients.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import sys

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from streamrec.settings import Settings

log = logging.getLogger(__name__)


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol; a request's headers must arrive within a deadline."""

    header_timeout_s = 10.0

    def __init__(self, config: Config, server_state: ServerState, app_state: dict,
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def _raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %d: %s", soft, exc)


def serve(app, settings: Settings) -> None:
    """uvicorn with the header deadline, keep-alive timeout and concurrency limit."""
    import uvicorn

    _raise_open_files_limit()
    sys.setswitchinterval(settings.gil_switch_ms / 1000)   # the consumer thread yields sooner
    protocol = type("LookupHttpProtocol", (HeaderTimeoutProtocol,),
                    {"header_timeout_s": settings.http_header_timeout_s})
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, http=protocol,
                loop="auto", limit_concurrency=settings.http_max_connections,
                timeout_keep_alive=settings.http_keepalive_s, backlog=2048,
                log_level="warning", access_log=False)
