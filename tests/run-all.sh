#!/usr/bin/env bash
# The whole suite on Apache Kafka 3.9 (local KRaft from its jars), then the integration tests
# again on the embedded Tansu broker (the demo's broker). Both must pass.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "=== unit + integration tests on Apache Kafka 3.9 ==="
STREAMREC_TEST_BROKER=kafka python3 -m pytest tests -q -p no:cacheprovider "$@"
echo "=== integration tests on embedded Tansu ==="
STREAMREC_TEST_BROKER=tansu python3 -m pytest tests/integration -q -p no:cacheprovider \
  -m "integration and not kafka_only" "$@"
