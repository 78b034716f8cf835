"""DeliveringProducer: a stuck librdkafka producer is replaced and nothing it held is lost
or sent twice (the broker itself is simulated: no broker answers this producer, while the
"fresh client" of the watch is told the broker answers)."""

from __future__ import annotations

import pytest

from streamrec import delivery
from streamrec.broker.base import free_port
from streamrec.delivery import DeliveringProducer
from streamrec.settings import Settings


def test_a_stuck_producer_is_replaced_and_keeps_every_record(
        monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings(bootstrap_servers=f"127.0.0.1:{free_port()}")   # nothing listens there
    p = DeliveringProducer(s, **{"message.timeout.ms": 600_000})
    seen: list[tuple[bytes, object]] = []
    for k in range(50):
        p.produce("t", value=b"%d" % k, key=b"u", on_delivery=lambda e, m: seen.append((m, e)))
    first = p._producer
    p.watch()
    assert p.replaced == 0, "not stuck yet: acknowledged recently"
    p._acked_at -= delivery.STALL_S + 1
    p._probed_at -= delivery.STALL_S + 1
    monkeypatch.setattr(delivery, "end_offsets", lambda *a, **k: None)
    p.watch()
    assert p.replaced == 0, "a broker that answers nobody is an outage, not a stuck producer"
    p._probed_at -= delivery.STALL_S + 1
    monkeypatch.setattr(delivery, "end_offsets", lambda *a, **k: {("t", 0): 0})
    p.watch()
    assert p.replaced == 1 and p._producer is not first
    assert len(p) == 50 and len(p._producer) >= 50, "every record moved to the new producer"
    assert seen == [], "the caller hears of each record once, when it is finally delivered"
    p._producer.purge()   # the test's end: fail them for good
    p._producer.poll(0)
