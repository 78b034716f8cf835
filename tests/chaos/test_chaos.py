"""The short chaos suite on Apache Kafka (issue #16): every scenario under a steady 1,000
events/s stream without ``event_id`` and 1,000 lookups/s. After each, from the worker's own
state: every acknowledged event applied exactly once; every touched user's newest list is
what the lookup serves; no lookup answered 5xx. The long version: ``python bench/chaos.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streamrec.broker import free_port
from streamrec.broker.kafka import KafkaBroker
from tests.chaos.scenarios import SHORT, run

pytestmark = [pytest.mark.integration, pytest.mark.kafka_only, pytest.mark.chaos,
              pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A broker of its own, stopped and restarted by some scenarios."""
    broker = KafkaBroker(free_port(), data_dir=tmp_path_factory.mktemp("chaos-kafka"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.mark.parametrize("name", list(SHORT))
def test_scenario_loses_and_doubles_nothing(kafka: KafkaBroker, tmp_path: Path,
                                            name: str) -> None:
    if not kafka.alive():   # a scenario before this one failed with the broker stopped
        kafka.start()
    result = run(name, kafka, tmp_path, SHORT[name])
    a = result.account
    assert a.produced > 5000, result.row()
    assert (a.lost, a.doubled) == (0, 0), (a.lost_examples, result.row())
    assert not result.stale_lists, (result.stale_lists[:5], result.row())
    assert result.reads["5xx"] == 0, result.row()
    assert result.reads["errors_outside_outages"] == 0, result.row()
    # a clean stop: the worker exits 0; uvicorn shuts down gracefully, then re-raises SIGTERM
    assert result.exit_codes["worker"] == 0 and result.exit_codes["lookup"] in (0, -15), \
        result.row()
    print(result.row())
