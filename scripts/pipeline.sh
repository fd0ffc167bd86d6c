#!/usr/bin/env bash
# Set up (see setup.sh) and run the whole replication pipeline with DVC. Extra arguments go to
# `dvc repro` (e.g. `bash scripts/pipeline.sh -s verification`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DVC_NO_ANALYTICS=1 YOLO_OFFLINE=1 MPLBACKEND=Agg PYTHONDONTWRITEBYTECODE=1
export PATH="$PWD/.venv/bin:$PATH"  # stages call `python -m xfr.pipeline`
.venv/bin/dvc repro "$@"
