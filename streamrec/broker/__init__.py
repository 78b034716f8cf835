"""Local brokers (embedded Tansu, Apache Kafka from its jars) and topic creation.

Both engines return a :class:`~streamrec.broker.base.BrokerProcess`; everything else in
streamrec talks to any broker through ``bootstrap_servers`` and never cares which it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from streamrec.broker.base import BrokerProcess, free_port, wait_for_broker
from streamrec.broker.topics import ensure_topics

Engine = Literal["tansu", "kafka"]


def start_broker(engine: Engine = "tansu", port: int | None = None,
                 data_dir: Path | None = None) -> BrokerProcess:
    """Start a local broker on 127.0.0.1 and return once it answers requests."""
    port = port or free_port()
    if engine == "tansu":
        from streamrec.broker.tansu import TansuBroker
        broker: BrokerProcess = TansuBroker(port)
    elif engine == "kafka":
        from streamrec.broker.kafka import KafkaBroker
        broker = KafkaBroker(port, data_dir=data_dir)
    else:  # pragma: no cover - typer restricts the choice
        raise ValueError(engine)
    broker.start()
    return broker


__all__ = ["BrokerProcess", "Engine", "ensure_topics", "free_port", "start_broker",
           "wait_for_broker"]
