"""What every local broker process offers, and how to tell that a broker answers."""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic
from tenacity import (RetryCallState, Retrying, retry_if_exception_type, stop_after_delay,
                      stop_never, wait_exponential)

from streamrec.errors import BrokerUnavailable, ConfigError

log = logging.getLogger(__name__)

READY_TOPIC = "__streamrec_ready"
"""A one-partition topic a local broker must be able to create (and lead) to count as ready."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _NotYet(Exception):
    """The broker answered without brokers in its metadata (still starting)."""


def wait_for_broker(bootstrap: str, timeout: float | None = 0, extra: dict | None = None,
                    what: str = "streamrec") -> None:
    """Block until a metadata request to ``bootstrap`` succeeds; ``timeout`` 0 or None: wait
    as long as it takes (a broker not up yet, or restarting, is normal, never fatal).

    Retries with exponential backoff (0.1 s up to 5 s) and says so in the log: the first
    miss and then every 30 s, with what to do. With a finite ``timeout`` it raises
    :class:`BrokerUnavailable` with the next step spelled out.

    Wrong credentials or a broker certificate that does not verify are not waited out:
    :class:`ConfigError` at once, saying which settings to check.
    """
    conf = {"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000,
            "log_level": 0, "logger": logging.getLogger("librdkafka.admin")}
    conf.update(extra or {})
    errors: list[KafkaError] = []
    conf["error_cb"] = errors.append
    admin = AdminClient(conf)
    start = time.monotonic()
    said = [0.0]

    def answers() -> None:
        try:
            if not admin.list_topics(timeout=2.0).brokers:
                raise _NotYet("no brokers in metadata")
        except KafkaException:
            errors.clear()
            admin.poll(0)   # serves error_cb: why the connection failed
            _fail_fast(errors, bootstrap, conf)
            raise

    def note(state: RetryCallState) -> None:
        waited = time.monotonic() - start
        if said[0] == 0.0 or waited - said[0] >= 30:
            said[0] = max(waited, 1e-9)
            why = errors[0].str() if errors else state.outcome.exception()
            log.warning("%s: broker at %s not answering yet (%s; waited %.0f s); retrying. "
                        'Start one with "streamrec broker" or set KAFKA_BOOTSTRAP_SERVERS',
                        what, bootstrap, why, waited)

    retrying = Retrying(stop=stop_after_delay(timeout) if timeout else stop_never,
                        wait=wait_exponential(multiplier=0.1, max=5), reraise=True,
                        retry=retry_if_exception_type((KafkaException, _NotYet)),
                        before_sleep=note)
    try:
        retrying(answers)
    except (KafkaException, _NotYet) as exc:
        why = errors[0].str() if errors else exc
        raise BrokerUnavailable(
            f"broker at {bootstrap} did not answer within {timeout:.0f} s ({why}); start one "
            'with "streamrec broker" or set KAFKA_BOOTSTRAP_SERVERS') from None
    if said[0]:
        log.warning("%s: broker at %s answers after %.1f s", what, bootstrap,
                    time.monotonic() - start)


def _fail_fast(errors: list[KafkaError], bootstrap: str, conf: dict) -> None:
    """Raise :class:`ConfigError` for connection errors that waiting cannot heal."""
    for err in errors:
        if err.code() == KafkaError._AUTHENTICATION:
            raise ConfigError(
                f"authentication failed for user {conf.get('sasl.username')} at {bootstrap} "
                f"(SASL {conf.get('sasl.mechanism')}): check STREAMREC_SASL_USERNAME/PASSWORD "
                "and STREAMREC_SASL_MECHANISM")
        if err.code() == KafkaError._SSL and "certificate verify failed" in err.str():
            raise ConfigError(
                f"the TLS certificate of the broker at {bootstrap} could not be verified: "
                "check STREAMREC_SSL_CA_LOCATION (the CA that signed it) and that it names "
                "the host in KAFKA_BOOTSTRAP_SERVERS (STREAMREC_SSL_ENDPOINT_IDENTIFICATION=none "
                f"skips that check). librdkafka: {err.str()}")


def broker_serves(bootstrap: str, timeout: float = 5.0, extra: dict | None = None) -> str | None:
    """None if the broker answers metadata, creates a topic and leads its partition; else
    what is still missing. An open port or a metadata answer is not enough: right after
    start Kafka refuses topic creation (``All brokers are currently fenced``) for seconds."""
    conf = {"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000,
            "log_level": 0, "logger": logging.getLogger("librdkafka.admin")}
    conf.update(extra or {})
    admin = AdminClient(conf)
    try:
        md = admin.list_topics(timeout=timeout)
        if not md.brokers:
            return "no brokers in metadata"
        if READY_TOPIC not in md.topics:
            fut = admin.create_topics([NewTopic(READY_TOPIC, 1, 1)],
                                      operation_timeout=timeout)[READY_TOPIC]
            try:
                fut.result(timeout)
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc):
                    return f"cannot create a topic yet: {exc}"
        topic = admin.list_topics(READY_TOPIC, timeout=timeout).topics.get(READY_TOPIC)
        if topic is None or topic.error is not None or not topic.partitions:
            return f"topic {READY_TOPIC} not in metadata yet"
        if any(p.leader < 0 for p in topic.partitions.values()):
            return "partitions have no leader yet"
        return None
    except Exception as exc:  # KafkaException, futures timing out while it starts
        return f"{type(exc).__name__}: {exc}"


class BrokerProcess:
    """A broker running as a child process on 127.0.0.1:``port``.

    Subclasses fill in ``command()``; this class owns start, readiness, logs and stop.
    """

    name = "broker"
    client_settings: dict[str, object] = {}
    """Settings every streamrec process should use with this broker (``STREAMREC_*``)."""

    def __init__(self, port: int, log_path: Path | None = None) -> None:
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self._log_file = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        return None

    def prepare(self) -> None:
        """One-time work before the first start (e.g. formatting storage)."""

    def start(self, timeout: float = 60.0) -> None:
        self.prepare()
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "ab")
            out = self._log_file
        else:
            out = subprocess.DEVNULL
        log.info("starting %s on %s", self.name, self.bootstrap)
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT,
                                     env=self.env(), start_new_session=True)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        """Ready means serving (:func:`broker_serves`), not a port that opened."""
        deadline = time.monotonic() + timeout
        missing = "no answer"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise BrokerUnavailable(
                    f"{self.name} exited with code {self.proc.returncode} before it answered"
                    + (f"; see {self.log_path}" if self.log_path else ""))
            missing = broker_serves(self.bootstrap, timeout=2.0) or ""
            if not missing:
                return
            time.sleep(0.1)
        where = f"; see {self.log_path}" if self.log_path else ""
        raise BrokerUnavailable(f"{self.name} on {self.bootstrap} was not ready within "
                                f"{timeout:.0f} s ({missing}){where}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit within ``timeout``."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> "BrokerProcess":
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
