"""What the commands share: common options, the settings they build, logging, signals."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from streamrec.settings import Settings

Bootstrap = Annotated[Optional[str], typer.Option(
    "--bootstrap-servers", envvar="KAFKA_BOOTSTRAP_SERVERS",
    help="Kafka bootstrap servers [default: localhost:9092]")]
StateDir = Annotated[Optional[Path], typer.Option(
    "--state-dir", envvar="STREAMREC_STATE_DIR", help="where state lives [default: .streamrec]")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")]


class LossName(str, Enum):
    """LightFM losses (``STREAMREC_LOSS``)."""

    warp = "warp"
    bpr = "bpr"
    logistic = "logistic"
    warp_kos = "warp-kos"


LossOption = Annotated[Optional[LossName], typer.Option(
    help="LightFM loss [default: warp, or STREAMREC_LOSS]")]


class BrokerEngine(str, Enum):
    """Local broker engines: Apache Kafka (default, durable) or Tansu (in memory)."""

    kafka = "kafka"
    tansu = "tansu"


EngineOption = Annotated[BrokerEngine, typer.Option(
    help="kafka: Apache Kafka 3.9 KRaft from its jars, durable (first start downloads ~46 MB); "
         "tansu: embedded, in memory, quick but slows as it runs (README, Brokers)")]


def settings_from(bootstrap: str | None, state_dir: Path | None, **more: object) -> Settings:
    """The settings (environment, defaults) with the command's flags on top."""
    return Settings().with_overrides(bootstrap_servers=bootstrap, state_dir=state_dir, **more)


def setup_logging(verbose: bool = False) -> None:
    """Log lines to stderr at STREAMREC_LOG_LEVEL (INFO), DEBUG with --verbose; chatty
    libraries at WARNING (librdkafka's debug with STREAMREC_KAFKA_DEBUG)."""
    level = "DEBUG" if verbose else os.environ.get("STREAMREC_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    logging.getLogger("librdkafka").setLevel(
        logging.DEBUG if os.environ.get("STREAMREC_KAFKA_DEBUG") else logging.WARNING)
    for noisy in ("aiokafka", "faust", "mode", "kafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def wait_for_signal(every: Callable[[], None] | None = None) -> None:
    """Block until SIGINT or SIGTERM (a foreground process's Ctrl-C, a supervisor's stop);
    ``every`` runs twice a second meanwhile and may raise to stop waiting."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        if every is not None:
            every()
