#!/usr/bin/env bash
# Set up (see setup.sh), lint (ruff), type-check (mypy, on xfr/), then run the test suite.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -m "not slow"` for the fast unit tests only).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DVC_NO_ANALYTICS=1 YOLO_OFFLINE=1 MPLBACKEND=Agg
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
