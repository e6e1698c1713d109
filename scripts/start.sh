#!/usr/bin/env bash
# Install whatever is missing, then start Loom (API and editor on http://127.0.0.1:8188).
# Extra arguments go to main.py, e.g. scripts/start.sh --port 8189 --lowvram
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python main.py "$@"
