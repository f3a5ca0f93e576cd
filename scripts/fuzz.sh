#!/usr/bin/env bash
# A longer schemathesis pass than the one in `make test` (tests/integration/cluster/test_fuzz.py):
# the same real cluster, every check, all three services, more examples, a fresh seed.
#
#   scripts/fuzz.sh [EXAMPLES_PER_OPERATION] [SEED]     (defaults: 1000, random)
#
# Prints one line per service: requests it received, test cases, failures, errors, time.
# On a failure pytest shows schemathesis' report, with `curl` lines to reproduce each case
# and the seed to rerun the same pass.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
EXAMPLES="${1:-1000}"
SEED="${2:-$((RANDOM * 32768 + RANDOM))}"
echo "fuzz: ${EXAMPLES} examples per operation, seed ${SEED}"
SIMSEARCH_FUZZ_EXAMPLES="$EXAMPLES" SIMSEARCH_FUZZ_SEED="$SEED" \
SIMSEARCH_FUZZ_TIMEOUT_S="${SIMSEARCH_FUZZ_TIMEOUT_S:-3000}" \
  "$PY" -m pytest -p no:cacheprovider -q -s -o timeout=3600 tests/integration/cluster/test_fuzz.py
