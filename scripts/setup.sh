#!/usr/bin/env bash
# Install whatever Loom is missing on this machine: the Python virtual environment with the
# pinned packages, Debian's chromium for the browser tests (only with --dev), and the web editor's
# npm packages and bundle. Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=0
[ "${1:-}" = "--dev" ] && DEV=1
PY=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
. .venv/bin/activate
REQ=requirements.txt
[ "$DEV" = 1 ] && REQ=requirements-dev.txt
stamp=".venv/.loom-installed-$(cat "$REQ" requirements.txt requirements-ray.txt constraints.txt 2>/dev/null | sha256sum | cut -c1-16)-$DEV"
if [ ! -f "$stamp" ]; then
  echo "setup: installing Python packages from $REQ (pinned by constraints.txt)"
  python -m pip install -q --upgrade pip
  python -m pip install -q -r "$REQ" -c constraints.txt
  # invisible-watermark's declared dependencies (opencv-python, onnx, onnxruntime) are not what it needs.
  python -m pip install -q --no-deps -c constraints.txt invisible-watermark
  if [ "$DEV" = 1 ]; then
    # k-diffusion is a test oracle only; its full dependency set (clip, wandb, ...) is not needed.
    python -m pip install -q --no-deps -c constraints.txt k-diffusion
  fi
  touch "$stamp"
fi

if [ "$DEV" = 1 ] && [ ! -x /usr/bin/chromium ]; then
  echo "setup: installing Debian's chromium for the browser tests"
  SUDO=""; [ "$(id -u)" != 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

if [ -f web/package.json ]; then
  if [ ! -d web/node_modules ] || [ web/package-lock.json -nt web/node_modules/.package-lock.json ]; then
    echo "setup: installing the editor's npm packages"
    (cd web && npm install --no-audit --no-fund --loglevel=error)
  fi
  if [ ! -f web/dist/index.html ] || [ -n "$(find web/src web/index.html web/package.json -newer web/dist/index.html 2>/dev/null | head -1)" ]; then
    echo "setup: building the editor"
    (cd web && npm run build --silent)
  fi
fi
