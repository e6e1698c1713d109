#!/usr/bin/env bash
# Install whatever is missing (test oracles and chromium included), then run the whole test
# suite, slow tests included: the editor's unit tests and pytest. Extra arguments go to pytest,
# e.g. scripts/test.sh -m "not slow" for the fast layer only.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
if [ -f web/package.json ]; then
  (cd web && npm test --silent)
fi
exec .venv/bin/python -m pytest "$@"
