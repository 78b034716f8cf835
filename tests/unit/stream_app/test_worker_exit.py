"""How the worker's Faust app ends: a signal is a clean stop, anything else a crash.

mode's ``exiting()`` turns every failure inside the app into ``SystemExit``, which used to
read as a clean stop: a crashed worker exited 0, so no supervisor restarted it. The app runs
here for real (Faust, its timers and the batch task), against a worker whose checkpoint
timer fails, and no broker (the batch ingest's librdkafka consumer never connects).
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from stream_app import app as worker_app
from stream_app.app import WorkerCrashed, _run_app
from streamrec.broker.base import free_port
from streamrec.settings import Settings


class _Engine:
    offsets: dict[str, int] = {}


class FakeWorker:
    """What the app calls on the worker; ``fail`` makes the checkpoint timer raise."""

    def __init__(self, fail: Exception | None) -> None:
        self.fail = fail
        self.engine = _Engine()
        self.on_checkpoint = None
        self.lag = None

    def maybe_cut(self) -> None:
        pass

    def maybe_checkpoint(self) -> None:
        if self.fail is not None:
            raise self.fail

    def watch_producer(self) -> None:
        pass

    def refresh_some(self, budget: int) -> int:
        return 0

    def publish_due(self, backlog: bool, budget_s: float | None = None) -> int:
        return 0

    def idle_timeout(self, longest: float) -> float:
        return 0.1


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(bootstrap_servers=f"127.0.0.1:{free_port()}", state_dir=tmp_path)


def test_an_exception_inside_the_app_is_a_crash(settings: Settings) -> None:
    with pytest.raises(WorkerCrashed, match=r"worker crashed \(RuntimeError: boom\).*Start it "
                                            "again"):
        _run_app(settings, FakeWorker(RuntimeError("boom")), "WARNING")


def test_a_broker_error_escaping_the_app_restarts_it(settings: Settings,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from confluent_kafka import KafkaError, KafkaException

    err = KafkaException(KafkaError(KafkaError._TRANSPORT))
    assert _run_app(settings, FakeWorker(err), "WARNING") == "broker"


def test_a_signal_is_a_clean_stop(settings: Settings) -> None:
    timer = threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        assert _run_app(settings, FakeWorker(None), "WARNING") == "stopped"
    finally:
        timer.cancel()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert worker_app.WorkerCrashed is WorkerCrashed


class StartingWorker:
    """``start`` fails with ``errors`` one after the other, then succeeds."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        if self.errors:
            raise self.errors.pop(0)


def test_a_start_meeting_a_leaderless_partition_is_retried(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A just-created topic's partition without a leader yet ("Not leader for partition",
    met by the bootstrap's watermark query on Apache Kafka) and a broker gone away are
    waited out; the start begins again instead of the worker exiting."""
    from confluent_kafka import KafkaError, KafkaException

    import streamrec.broker
    from streamrec.errors import BrokerUnavailable

    monkeypatch.setattr(streamrec.broker, "wait_for_broker", lambda *a, **k: None)
    worker = StartingWorker(KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION)),
                            BrokerUnavailable("away"))
    worker_app._start(worker, settings)
    assert worker.starts == 3


def test_a_start_failing_for_another_reason_raises(settings: Settings) -> None:
    worker = StartingWorker(ValueError("corrupt"))
    with pytest.raises(ValueError, match="corrupt"):
        worker_app._start(worker, settings)
    assert worker.starts == 1
