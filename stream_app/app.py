"""The Faust app: one agent micro-batches the worker's topics into ``Worker.handle``.

Reads ``interactions``, ``users`` and ``items`` through one agent, so metadata and events go
through the same batch path and the same offset bookkeeping. Offsets Faust commits are only
ever of records already in the worker's write-ahead log, so a crash loses nothing; records
below the offsets stored with the state are skipped, so a redelivery applies nothing twice.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path

import faust
from aiokafka.errors import KafkaError
from faust.app.base import BootStrategy

from stream_app import metrics

from stream_app.worker import Worker
from streamrec.settings import Settings

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.5
"""How long the batch ingest waits for a record when nothing else is due. librdkafka returns
the moment one arrives, so this costs no freshness; shorter only adds idle wake-ups."""


def faust_broker_options(settings: Settings) -> dict:
    """Faust/aiokafka settings. Short session and rebalance timeouts: group joins on Tansu
    take about half the session timeout (45 s by default), and one worker needs no grace."""
    session = settings.session_timeout_ms / 1000.0
    opts: dict = {
        "broker": [f"kafka://{h.strip()}" for h in settings.bootstrap_servers.split(",")],
        "broker_session_timeout": session,
        "broker_heartbeat_interval": max(0.5, session / 4),
        "broker_rebalance_timeout": session,
        "broker_request_timeout": max(40.0, session + 5),
        "broker_max_poll_records": max(settings.max_batch, 500),
        "consumer_auto_offset_reset": "earliest",
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "stream_wait_empty": False,
        "store": "memory://",
        "datadir": str(Path(settings.state_dir) / "faust"),   # not the current directory
        "web_enabled": False,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    if settings.sasl_mechanism and settings.sasl_username and settings.sasl_password:
        opts["broker_credentials"] = faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password.get_secret_value(),
            mechanism=settings.sasl_mechanism)
    return opts


class _NoKafkaBoot(BootStrategy):
    """``ingest="batch"`` reads and writes Kafka with librdkafka only, so Faust starts no
    consumer, producer, leader assignor or topic conductor of its own: no group join, no
    ``__assignor-__leader`` topic to create while a broker is still starting, no second set
    of connections (and security settings) to keep right, no idle fetches."""

    enable_kafka = False
    enable_web = False
    enable_sensors = False


class _BatchApp(faust.App):
    BootStrategy = _NoKafkaBoot


def create_app(settings: Settings, worker: Worker) -> faust.App:
    """A Faust app bound to a started ``Worker`` (restored or bootstrapped already)."""
    if settings.ingest == "agent":
        app = faust.App(settings.worker_group, autodiscover=False,
                        **faust_broker_options(settings))
    else:
        app = _BatchApp(f"{settings.worker_group}-app", autodiscover=False,
                        **faust_broker_options(settings))
    if settings.ingest == "agent":
        _add_agent(app, settings, worker)
    else:
        _add_batch_task(app, settings, worker)

    @app.timer(interval=1.0)
    async def checkpoint_when_due() -> None:
        worker.maybe_checkpoint()

    refresh_tick = 0.1

    @app.timer(interval=refresh_tick)
    async def refresh_lists_after_swap() -> None:
        worker.refresh_some(max(1, int(settings.refresh_rate * refresh_tick)))
        if settings.ingest == "agent":   # the batch task publishes between its polls
            worker.publish_due(backlog=False)

    return app


def _add_agent(app: faust.App, settings: Settings, worker: Worker) -> None:
    """``ingest="agent"``: the Faust way, one agent micro-batching with ``take_events``."""
    channel = app.topic(settings.topic_interactions, settings.topic_users, settings.topic_items,
                        settings.topic_released, settings.topic_control, key_type=bytes,
                        value_type=bytes)

    @app.agent(channel, name="learn")
    async def learn(stream: faust.StreamT) -> None:
        metrics.READY.set(1)
        async for events in stream.take_events(settings.max_batch,
                                               within=settings.batch_window_s):
            records = [(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)
                       for m in (e.message for e in events)]
            worker.handle(records, backlog=len(records) >= settings.max_batch)


def _add_batch_task(app: faust.App, settings: Settings, worker: Worker) -> None:
    """``ingest="batch"``: a Faust task reads whole fetch batches with librdkafka (in a
    thread) and applies them on the event loop, where the timers run too."""
    from stream_app.ingest import BatchConsumer

    @app.task
    async def learn_batches() -> None:
        loop = asyncio.get_running_loop()
        consumer = BatchConsumer(settings, worker)  # READY once its partitions are assigned
        worker.on_checkpoint = consumer.commit
        try:
            while True:
                records = await loop.run_in_executor(
                    None, consumer.poll_batch, settings.max_batch,
                    worker.idle_timeout(IDLE_POLL_S))
                if records:
                    worker.handle(records, backlog=consumer.behind(records,
                                                                   settings.max_batch))
                else:
                    worker.publish_due(backlog=False)
        finally:
            worker.on_checkpoint = None
            consumer.close()


def run_worker(settings: Settings, progress: bool = True, loglevel: str = "INFO") -> None:
    """Start (restore or bootstrap) the worker, then run the Faust app until stopped."""
    from faust.worker import Worker as FaustWorker

    from streamrec.broker import ensure_topics, wait_for_broker

    wait_for_broker(settings.bootstrap_servers, settings.broker_wait_s, settings.kafka_common())
    ensure_topics(settings)
    if settings.worker_metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.worker_metrics_port, addr=settings.http_host)
    from threadpoolctl import threadpool_limits

    threadpool_limits(settings.blas_threads, user_api="blas")
    worker = Worker(settings, progress=progress)
    worker.start()
    # What start() built (model, registries, per-user state) lives as long as the worker:
    # move it out of the collector's way, so full collections stay short (GC_PAUSE).
    gc.collect()
    gc.freeze()
    metrics.watch_gc()
    try:
        while True:
            asyncio.set_event_loop(asyncio.new_event_loop())
            app = create_app(settings, worker)
            try:
                FaustWorker(app, loglevel=loglevel, quiet=True,
                            redirect_stdouts=False).execute_from_commandline()
            except SystemExit:
                return  # stopped by a signal (or Faust's own clean exit)
            except (KafkaError, ConnectionError, OSError) as exc:
                # The broker went away while Faust was (re)connecting: our state is intact
                # (WAL + checkpoint), so wait for the broker and start the app again.
                metrics.READY.set(0)
                log.warning("Faust app stopped (%s); restarting it when the broker answers",
                            exc)
                wait_for_broker(settings.bootstrap_servers, 3600, settings.kafka_common())
    finally:
        worker.close()
        log.info("worker stopped; state checkpointed at offsets %s", worker.engine.offsets)
