#!/usr/bin/env bash
# Set up (or update) .venv with inferwatch and its embedded broker, then run the demo.
# Usage: bash scripts/demo.sh [inferwatch demo args...]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[demo]'
exec .venv/bin/inferwatch demo "$@"
