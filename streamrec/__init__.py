"""streamrec: an event-streaming incremental recommender.

Data flows one way: ``producers`` -> ``interactions`` topic -> ``stream_app`` (the worker) ->
``recommendations`` topic -> ``consumers`` (the lookup API). This package holds what every
part shares: settings, errors, the event schema, broker helpers and the command line.

The public API for apps::

    from streamrec import EventProducer, LookupClient, AsyncLookupClient, Settings

``EventProducer`` publishes interaction events (``producers.events``); ``LookupClient`` and
``AsyncLookupClient`` read users' lists from the lookup API (``streamrec.client``).
They are imported on first use, so ``import streamrec`` stays cheap (no Kafka client,
pydantic or httpx until asked for) and no import cycle runs through this file.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "EventProducer": "producers.events",
    "LookupClient": "streamrec.client",
    "AsyncLookupClient": "streamrec.client",
    "Recommendations": "streamrec.client",
    "RecommendedItem": "streamrec.client",
    "Settings": "streamrec.settings",
    "StreamrecError": "streamrec.errors",
    "LookupFailed": "streamrec.errors",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports on demand
    from producers.events import EventProducer
    from streamrec.client import (AsyncLookupClient, LookupClient, RecommendedItem,
                                  Recommendations)
    from streamrec.errors import LookupFailed, StreamrecError
    from streamrec.settings import Settings


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'streamrec' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
