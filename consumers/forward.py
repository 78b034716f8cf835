"""Forwarding a lookup request to the replica that owns the user: a small keep-alive client.

A partitioned lookup (``consumers/partitioned.py``) answers a request for a user another
replica owns by asking that replica. The peer is always our own uvicorn server, which
answers ``GET`` with a ``content-length`` body, so the client needs only that much HTTP/1.1:
one request line, a few headers, a status line and a sized body, on pooled keep-alive
connections. Measured against a lookup (uvloop, one connection / 8 at once): 52 / 28 µs of
the client's CPU a request, where httpx's ``AsyncClient`` took 820 µs (docs/scaling.md); that
CPU is the replicas' own. Anything unexpected (no answer in time, a refused connection, a broken
response) returns None and the caller serves the fallback list: a forward never turns into
an error for the client.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

FORWARDED = b"x-streamrec-forwarded"
"""Header of a forwarded request: its receiver answers itself and never forwards again."""

Reply = tuple[int, bytes, bytes]
"""(status, body, content type) of a forwarded request's answer."""


class Forwarder:
    """GET requests to peer lookups over pooled keep-alive connections."""

    def __init__(self, timeout_s: float = 1.0, max_idle: int = 64) -> None:
        self.timeout_s = timeout_s
        self.max_idle = max_idle
        self._idle: dict[str, list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}
        self._hosts: dict[str, tuple[str, int, bytes]] = {}

    def _host(self, base_url: str) -> tuple[str, int, bytes]:
        found = self._hosts.get(base_url)
        if found is None:
            parts = urlsplit(base_url)
            if parts.scheme != "http" or not parts.hostname:
                raise ValueError(f"lookup URL {base_url!r}: only http://host:port is supported")
            port = parts.port or 80
            found = self._hosts[base_url] = (parts.hostname, port,
                                             f"{parts.hostname}:{port}".encode())
        return found

    async def get(self, base_url: str, target: bytes,
                  authorization: bytes | None = None) -> Reply | None:
        """``GET target`` (path and query, as received) from the lookup at ``base_url``;
        None when it does not answer properly within ``timeout_s``."""
        try:
            host, port, host_header = self._host(base_url)
        except ValueError as exc:
            log.warning("cannot forward: %s", exc)
            return None
        request = b"".join((b"GET ", target, b" HTTP/1.1\r\nhost: ", host_header,
                            b"\r\n", FORWARDED, b": 1\r\n",
                            b"authorization: " + authorization + b"\r\n" if authorization
                            else b"", b"\r\n"))
        try:
            async with asyncio.timeout(self.timeout_s):
                pooled = self._idle.get(base_url)
                while pooled:          # a pooled connection may have been closed meanwhile
                    conn = pooled.pop()
                    reply = await self._exchange(base_url, conn, request)
                    if reply is not None:
                        return reply
                conn = await asyncio.open_connection(host, port)
                return await self._exchange(base_url, conn, request)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError) as exc:
            log.debug("forward to %s failed: %r", base_url, exc)
            return None

    async def _exchange(self, base_url: str,
                        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                        request: bytes) -> Reply | None:
        reader, writer = conn
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length, ctype, close = -1, b"application/json", False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"content-type":
                    ctype = value.strip()
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            if length < 0:
                raise ValueError("no content-length")
            body = await reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            writer.close()
            return None
        except BaseException:       # cancelled by the timeout: never pool a half-read one
            writer.close()
            raise
        if close:
            writer.close()
        else:
            self._release(base_url, conn)
        return status, body, ctype

    def _release(self, base_url: str,
                 conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        idle = self._idle.setdefault(base_url, [])
        if len(idle) < self.max_idle and not conn[1].is_closing():
            idle.append(conn)
        else:
            conn[1].close()

    def close(self) -> None:
        for conns in self._idle.values():
            for _, writer in conns:
                writer.close()
        self._idle.clear()
