"""Sending a file of JSON-lines events; invalid lines are reported with their line number."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson

from producers.events import DeliveryReport, EventProducer, Pacer
from streamrec.errors import InvalidEvent
from streamrec.schema import validate_interaction
from streamrec.kafka import replay_linger
from streamrec.settings import Settings

log = logging.getLogger(__name__)


def produce_jsonl(settings: Settings, path: Path, rate: float | None = None,
                  event_time: bool = False) -> tuple[DeliveryReport, list[str]]:
    """Send every valid line of ``path``; returns the report and one message per bad line.
    ``event_time``: backfilled events carry their own time as record timestamp
    (:class:`~producers.events.EventProducer`)."""
    problems: list[str] = []
    pacer = Pacer(rate)
    with EventProducer(settings, event_time=event_time, **replay_linger(rate)) as producer, \
            open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                producer.send(validate_interaction(orjson.loads(line)))
            except orjson.JSONDecodeError as exc:
                producer.report.invalid += 1
                problems.append(f"{path}:{lineno}: not valid JSON: {exc}")
            except InvalidEvent as exc:
                producer.report.invalid += 1
                problems.append(f"{path}:{lineno}: {exc.reason}")
            pacer.tick()
    return producer.report, problems
