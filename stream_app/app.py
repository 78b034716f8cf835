"""The Faust app around the worker, and how the worker process runs, stops and fails.

One task (``ingest="batch"``, default) or agent (``"agent"``) micro-batches the worker's
topics into ``Worker.handle``; timers checkpoint and refresh lists. Records below the
offsets stored with the state are skipped, so a redelivery applies nothing twice.

Exit: a signal stops the worker cleanly (exit 0, state checkpointed). A broker that is not
up yet, goes away or restarts is waited for, never fatal. Anything else that escapes the
app is a crash: :class:`WorkerCrashed` (the CLI exits 1 with one line), no checkpoint of a
possibly half-applied batch; the next start restores the last checkpoint and the WAL.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import sys
from pathlib import Path

import faust
from aiokafka.errors import KafkaError
from faust.app.base import BootStrategy

from stream_app import metrics
from stream_app.health import serve_health
from stream_app.worker import Worker
from streamrec.errors import StreamrecError
from streamrec.kafka import broker_away, ssl_context
from streamrec.replay import Record
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
    # The same security as librdkafka's kafka_common(): SASL (with TLS for SASL_SSL) or TLS.
    protocol = settings.security_protocol
    context = ssl_context(settings) if protocol in ("SSL", "SASL_SSL") else None
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL") and settings.sasl_password is not None:
        opts["broker_credentials"] = faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password.get_secret_value(),
            mechanism=settings.sasl_mechanism, ssl_context=context)
    elif context is not None:
        opts["broker_credentials"] = faust.SSLCredentials(context)
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


class WorkerCrashed(StreamrecError):
    """Something other than a broker outage stopped the worker's app."""


def _recorded(failures: list[BaseException]):
    """Decorate an agent, task or timer body: remember what escapes it, so that the run
    loop can tell a crash from a stop (Faust turns both into ``SystemExit``)."""
    def wrap(fn):
        @functools.wraps(fn)
        async def body(*args, **kwargs):
            try:
                return await fn(*args, **kwargs)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures.append(exc)
                raise
        return body
    return wrap


def create_app(settings: Settings, worker: Worker,
               failures: list[BaseException] | None = None) -> faust.App:
    """A Faust app bound to a started ``Worker`` (restored or bootstrapped already);
    exceptions escaping its agent, task or timers are appended to ``failures``."""
    recorded = _recorded(failures if failures is not None else [])
    if settings.ingest == "agent":
        app = faust.App(settings.worker_group, autodiscover=False,
                        **faust_broker_options(settings))
    else:
        app = _BatchApp(f"{settings.worker_group}-app", autodiscover=False,
                        **faust_broker_options(settings))
    if settings.ingest == "agent":
        _add_agent(app, settings, worker, recorded)
    else:
        _add_batch_task(app, settings, worker, recorded)

    @app.timer(interval=1.0)
    @recorded
    async def checkpoint_when_due() -> None:
        worker.maybe_cut()   # sharded: an idle shard's last events reach the others too
        worker.maybe_checkpoint()
        worker.watch_producer()

    refresh_tick = 0.25   # a few wake-ups a second: the stack idles at ~3 % of a core

    @app.timer(interval=refresh_tick)
    @recorded
    async def refresh_lists_after_swap() -> None:
        worker.refresh_some(max(1, int(settings.refresh_rate * refresh_tick)))
        if settings.ingest == "agent":   # the batch task publishes between its polls
            worker.publish_due(backlog=False)

    return app


def _add_agent(app: faust.App, settings: Settings, worker: Worker, recorded) -> None:
    """``ingest="agent"``: the Faust way, one agent micro-batching with ``take_events``."""
    channel = app.topic(settings.topic_interactions, settings.topic_users, settings.topic_items,
                        settings.topic_released, settings.topic_control, key_type=bytes,
                        value_type=bytes)

    @app.agent(channel, name="learn")
    @recorded
    async def learn(stream: faust.StreamT) -> None:
        metrics.READY.set(1)
        async for events in stream.take_events(settings.max_batch,
                                               within=settings.batch_window_s):
            records = [Record(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)
                       for m in (e.message for e in events)]
            worker.handle(records, backlog=len(records) >= settings.max_batch)


def _add_batch_task(app: faust.App, settings: Settings, worker: Worker, recorded) -> None:
    """``ingest="batch"``: a Faust task reads whole fetch batches with librdkafka (in a
    thread) and applies them on the event loop, where the timers run too."""
    from stream_app.ingest import BatchConsumer, ConsumerStalled

    @app.task
    @recorded
    async def learn_batches() -> None:
        loop = asyncio.get_running_loop()
        consumer = BatchConsumer(settings, worker)  # READY once its partitions are assigned
        worker.on_checkpoint = consumer.commit
        try:
            while True:
                try:
                    records = await loop.run_in_executor(
                        None, consumer.poll_batch, settings.max_batch,
                        worker.idle_timeout(IDLE_POLL_S))
                except ConsumerStalled as exc:
                    log.warning("%s; starting a new consumer", exc)
                    consumer.close()
                    consumer = BatchConsumer(settings, worker)
                    worker.on_checkpoint = consumer.commit
                    continue
                if records:
                    worker.handle(records, backlog=consumer.behind(records,
                                                                   settings.max_batch))
                else:
                    worker.publish_due(backlog=False)
        finally:
            worker.on_checkpoint = None
            consumer.close()


def run_worker(settings: Settings, progress: bool = True, loglevel: str = "INFO") -> None:
    """Start (restore or bootstrap) the worker, then run the Faust app until a signal stops
    it. Broker outages are waited out; any other failure raises :class:`WorkerCrashed`."""
    from threadpoolctl import threadpool_limits

    from streamrec.broker import ensure_topics, wait_for_broker

    if settings.shards > 1 and settings.shard < 0:
        from stream_app.shards import run_supervisor

        run_supervisor(settings)   # runs each leased shard as this function, in a child
        return
    worker = Worker(settings, progress=progress)   # takes the state dir's lock first
    crashed = True
    try:
        if settings.worker_metrics_port:
            serve_health(settings.http_host, settings.worker_metrics_port, worker.readiness)
        wait_for_broker(settings.bootstrap_servers, settings.broker_wait_s,
                        settings.kafka_common(), what="worker")
        ensure_topics(settings, extra={settings.item_deltas_topic: 1}
                      if settings.shards > 1 else None)
        threadpool_limits(settings.blas_threads, user_api="blas")
        sys.setswitchinterval(settings.gil_switch_ms / 1000)   # see Settings.gil_switch_ms
        _start(worker, settings)
        # What start() built (model, registries, per-user state) lives as long as the
        # worker: move it out of the collector's way, so full collections stay short.
        gc.collect()
        gc.freeze()
        metrics.watch_gc()
        while _run_app(settings, worker, loglevel) == "broker":
            metrics.READY.set(0)
            wait_for_broker(settings.bootstrap_servers, 0, settings.kafka_common(),
                            what="worker")
        crashed = False
    finally:
        worker.close(checkpoint=not crashed)
        if worker.engine is not None and not crashed:
            log.info("worker stopped; state checkpointed at offsets %s", worker.engine.offsets)


def _start(worker: Worker, settings: Settings) -> None:
    """Restore or bootstrap; a broker that goes away meanwhile, or answers with a transient
    error (a partition of a just-created topic that has no leader yet: "Not leader for
    partition", seen on Apache Kafka), is waited for, then the start begins again (a
    bootstrap replay cannot resume half-way). Any other error is raised."""
    from tenacity import Retrying, retry_if_exception, stop_never, wait_exponential

    from streamrec.broker import wait_for_broker

    def interrupted(state) -> None:
        log.warning("worker start interrupted (%s); retrying when the broker answers",
                    state.outcome.exception())
        wait_for_broker(settings.bootstrap_servers, 0, settings.kafka_common(),
                        what="worker")

    retrying = Retrying(retry=retry_if_exception(_transient), stop=stop_never, reraise=True,
                        wait=wait_exponential(multiplier=0.2, max=5),
                        before_sleep=interrupted)
    retrying(worker.start)


def _run_app(settings: Settings, worker: Worker, loglevel: str) -> str:
    """Run the Faust app once: ``"stopped"`` after a signal, ``"broker"`` if the broker
    went away under it; raise :class:`WorkerCrashed` for anything else."""
    from faust.worker import Worker as FaustWorker

    asyncio.set_event_loop(asyncio.new_event_loop())
    failures: list[BaseException] = []
    app = create_app(settings, worker, failures)
    fw = FaustWorker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    # no terminal spinner (our progress bars say what happens): at WARNING and above faust
    # spins one on every log record and registers an atexit hook that prints to stdout,
    # which raised "I/O operation on closed file" at every exit under pytest
    fw.spinner = None
    try:
        fw.execute_from_commandline()
    except SystemExit as exc:
        cause = failures[0] if failures else (app.crash_reason or fw.crash_reason)
        if cause is None and exc.code in (0, None):
            return "stopped"
        if cause is not None and _transient(cause):
            log.warning("the app stopped on a broker error (%s); restarting it when the "
                        "broker answers", cause)
            return "broker"
        what = (f"{type(cause).__name__}: {cause}" if cause is not None
                else f"Faust exited with code {exc.code}")
        if cause is not None:
            log.error("worker crashed", exc_info=cause)
        raise WorkerCrashed(
            f"worker crashed ({what}); its state is safe up to the last checkpoint and WAL. "
            "Start it again (under systemd or Kubernetes, restart on failure does)") from None
    except (KafkaError, ConnectionError) as exc:
        log.warning("the app stopped (%s); restarting it when the broker answers", exc)
        return "broker"
    return "stopped"


def _transient(exc: BaseException) -> bool:
    """A broker outage seen by Faust's own clients (agent ingest) or by librdkafka."""
    return isinstance(exc, KafkaError) or broker_away(exc)
