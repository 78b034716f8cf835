"""Read users' recommendation lists from the lookup API (``streamrec serve``), for apps.

One client per process, kept open: it reuses its HTTP connections (a lookup answers in well
under a millisecond, so a fresh TCP connection per request would dominate), and every request
has a timeout, so a slow or absent lookup costs the app a bounded wait and a
:class:`~streamrec.errors.LookupFailed` it can catch, never a hang::

    from streamrec import LookupClient

    with LookupClient() as lookup:                   # http://127.0.0.1:8000
        recs = lookup.get("u42", n=10)
    print(recs.item_ids, "(popular fallback)" if recs.fallback else "")

:class:`AsyncLookupClient` is the same for asyncio apps (``await lookup.get(...)``).
The bearer token, when the lookup requires one, is ``token=`` or else the environment
variable ``STREAMREC_API_TOKEN``, the one the lookup itself reads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from streamrec.errors import LookupFailed
from streamrec.schema import MAX_ID_LEN, RecommendationList

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(2.0, connect=1.0)
"""Seconds: 1 to connect, 2 for the rest (a lookup takes well under a millisecond; seconds
mean the lookup or the network is in trouble, and the app should use its own fallback)."""
TOKEN_ENV = "STREAMREC_API_TOKEN"

__all__ = ["AsyncLookupClient", "LookupClient", "RecommendedItem", "Recommendations"]


@dataclass(frozen=True, slots=True)
class RecommendedItem:
    """One entry of a list, best first. ``reason`` is ``"explore"`` for an exploration slot
    (an item the model is unsure about, placed on purpose), else ``None``."""

    item_id: str
    score: float
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Recommendations:
    """A user's list as the lookup served it (the contract's recommendation list).

    ``source`` is ``"model"`` for the user's own list and ``"fallback"`` for a user the model
    does not know yet (popular items); ``updated_at`` is when the worker computed the list
    (epoch seconds, 0 when there is no list at all yet)."""

    user_id: str
    items: tuple[RecommendedItem, ...]
    model_version: str
    updated_at: float
    source: str

    @property
    def fallback(self) -> bool:
        """True when the user got the popular-items fallback, not a list of their own."""
        return self.source == "fallback"

    @property
    def item_ids(self) -> list[str]:
        return [item.item_id for item in self.items]

    @classmethod
    def from_json(cls, body: bytes | str) -> Recommendations:
        """Parse a lookup response or a ``recommendations`` record value (unknown keys are
        ignored, as the contract asks of readers); raises ``pydantic.ValidationError``."""
        doc = RecommendationList.model_validate_json(body)
        return cls(user_id=doc.user_id,
                   items=tuple(RecommendedItem(i.item_id, i.score, i.reason) for i in doc.items),
                   model_version=doc.model_version, updated_at=doc.updated_at, source=doc.source)


class _Requests:
    """What the sync and async clients share: building requests and reading answers."""

    def __init__(self, base_url: str, token: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def client_options(self, timeout: float | httpx.Timeout) -> dict[str, Any]:
        return {"base_url": self.base_url, "headers": self.headers, "timeout": timeout}

    @staticmethod
    def list_path(user_id: str | int) -> str:
        if isinstance(user_id, int) and not isinstance(user_id, bool):
            user_id = str(user_id)  # as the contract normalises integer ids in events
        if not isinstance(user_id, str) or not 0 < len(user_id) <= MAX_ID_LEN:
            raise LookupFailed(f"user_id must be a non-empty string of at most {MAX_ID_LEN} "
                               f"characters, got {user_id!r}")
        return "/recommendations/" + quote(user_id, safe="")

    def unreachable(self, exc: httpx.HTTPError) -> LookupFailed:
        if isinstance(exc, httpx.TimeoutException):
            what = f"did not answer in time ({type(exc).__name__})"
        else:
            what = f"could not be reached ({type(exc).__name__}: {exc})"
        return LookupFailed(f"lookup API at {self.base_url} {what}; start it with "
                            "'streamrec serve' or pass the right base_url, and serve your own "
                            "fallback meanwhile")

    def recommendations(self, response: httpx.Response) -> Recommendations:
        if response.status_code != 200:
            raise self.refused(response)
        try:
            return Recommendations.from_json(response.content)
        except ValidationError as exc:
            raise LookupFailed(f"lookup API at {self.base_url} answered a body that is not a "
                               f"recommendation list ({exc.error_count()} errors, first: "
                               f"{exc.errors()[0]['msg']}); is base_url a streamrec lookup?",
                               response.status_code) from exc

    def refused(self, response: httpx.Response) -> LookupFailed:
        status = response.status_code
        url = f"{self.base_url}{response.request.url.raw_path.decode()}"
        if status in (401, 403):
            hint = (f"pass token= or set {TOKEN_ENV} to the token the lookup was started with"
                    if not self.headers else "the token is not the one the lookup was "
                    f"started with ({TOKEN_ENV} on its side)")
        elif status == 422:
            hint = f"ask for n from 1 to the lookup's list length ({_detail(response)})"
        elif status == 404:
            hint = "is base_url a streamrec lookup (GET /recommendations/{user_id})?"
        else:
            hint = f"see the lookup's /healthz and its log ({_detail(response)})"
        return LookupFailed(f"lookup API refused GET {url}: HTTP {status}; {hint}", status)


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    if isinstance(detail, list):  # FastAPI's validation errors
        detail = "; ".join(str(d.get("msg", d)) for d in detail if isinstance(d, dict))
    return str(detail)[:300]


class LookupClient:
    """Blocking client of the lookup API; thread-safe, one per process is enough.

    ``timeout`` is seconds for the whole request or an ``httpx.Timeout``; ``transport`` is
    for tests (``httpx.MockTransport``, ``httpx.WSGITransport``)."""

    def __init__(self, base_url: str = DEFAULT_BASE_URL, *, token: str | None = None,
                 timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._requests = _Requests(base_url, token)
        self._http = httpx.Client(transport=transport, **self._requests.client_options(timeout))

    @property
    def timeout(self) -> httpx.Timeout:
        return self._http.timeout

    def get(self, user_id: str | int, n: int = 10) -> Recommendations:
        """``user_id``'s best ``n`` items (an unknown user gets the fallback list, see
        :attr:`Recommendations.fallback`); raises :class:`LookupFailed` if there is no answer."""
        path = self._requests.list_path(user_id)
        try:
            response = self._http.get(path, params={"n": n})
        except httpx.HTTPError as exc:
            raise self._requests.unreachable(exc) from exc
        return self._requests.recommendations(response)

    def health(self) -> bool:
        """True when the lookup answers ``/healthz`` with 200 (serving); False otherwise,
        including when it cannot be reached."""
        return self._ok("/healthz")

    def ready(self) -> bool:
        """True when the lookup answers ``/readyz`` with 200 (caught up with the lists)."""
        return self._ok("/readyz")

    def _ok(self, path: str) -> bool:
        try:
            return self._http.get(path).status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LookupClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class AsyncLookupClient:
    """The asyncio twin of :class:`LookupClient` (``await get(...)``; ``async with``).
    ``transport`` is for tests (``httpx.ASGITransport(app)`` runs the lookup in process)."""

    def __init__(self, base_url: str = DEFAULT_BASE_URL, *, token: str | None = None,
                 timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._requests = _Requests(base_url, token)
        self._http = httpx.AsyncClient(transport=transport,
                                       **self._requests.client_options(timeout))

    @property
    def timeout(self) -> httpx.Timeout:
        return self._http.timeout

    async def get(self, user_id: str | int, n: int = 10) -> Recommendations:
        """See :meth:`LookupClient.get`."""
        path = self._requests.list_path(user_id)
        try:
            response = await self._http.get(path, params={"n": n})
        except httpx.HTTPError as exc:
            raise self._requests.unreachable(exc) from exc
        return self._requests.recommendations(response)

    async def health(self) -> bool:
        """See :meth:`LookupClient.health`."""
        return await self._ok("/healthz")

    async def ready(self) -> bool:
        """See :meth:`LookupClient.ready`."""
        return await self._ok("/readyz")

    async def _ok(self, path: str) -> bool:
        try:
            return (await self._http.get(path)).status_code == 200
        except httpx.HTTPError:
            return False

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncLookupClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()
