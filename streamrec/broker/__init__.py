"""Local brokers (Apache Kafka from its jars by default, the quick in-memory Tansu on request)
and topic creation.

Both engines return a :class:`~streamrec.broker.base.BrokerProcess`; everything else in
streamrec talks to any broker through ``bootstrap_servers`` and never cares which it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from streamrec.broker.base import BrokerProcess, broker_serves, free_port, wait_for_broker
from streamrec.broker.topics import ensure_topics

Engine = Literal["tansu", "kafka"]


def start_broker(engine: Engine = "kafka", port: int | None = None,
                 data_dir: Path | None = None) -> BrokerProcess:
    """Start a local broker on 127.0.0.1 and return once it serves (creates and leads a
    topic). ``kafka`` (the default) is Apache Kafka from its jars, durable in ``data_dir``
    (a temp dir if None); ``tansu`` the quick in-memory broker."""
    port = port or free_port()
    if engine == "tansu":
        from streamrec.broker.tansu import TansuBroker
        broker: BrokerProcess = TansuBroker(port)
    elif engine == "kafka":
        from streamrec.broker.kafka import KafkaBroker
        broker = KafkaBroker(port, data_dir=data_dir)
    else:
        raise ValueError(f"unknown broker engine {engine!r}; use kafka or tansu")
    broker.start()
    return broker


__all__ = ["BrokerProcess", "Engine", "broker_serves", "ensure_topics", "free_port", "start_broker",
           "wait_for_broker"]
