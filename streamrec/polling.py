"""Waiting for something to become true: the one polling loop of the demo, the benches and
the tests.

Each caller waits for a different thing and fails its own way (the demo with a one-line
:class:`~streamrec.errors.StreamrecError`, a test with an ``AssertionError`` carrying the
processes' logs, a bench with a ``RuntimeError``), so what differs is a parameter, not a
copy of the loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, what: str, *,
               interval: float = 0.1,
               retry_on: tuple[type[BaseException], ...] = (),
               check: Callable[[], None] | None = None,
               error: Callable[[str], BaseException] = TimeoutError) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns something truthy, and
    return that; after ``timeout`` seconds raise ``error(message)``.

    ``retry_on``: exceptions of ``predicate`` that mean "not yet" (an HTTP endpoint that
    does not answer yet); the last one is named in the timeout message. ``check`` runs
    before every poll and raises to stop waiting at once (a process it waits on died).
    ``error``: the exception class (or a factory of one, given the message) raised on
    timeout.
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        if check is not None:
            check()
        try:
            value = predicate()
            if value:
                return value
        except retry_on as exc:
            last = exc
        time.sleep(interval)
    because = f" (last error: {last})" if last is not None else ""
    raise error(f"timed out after {timeout:.0f} s waiting for {what}{because}")
