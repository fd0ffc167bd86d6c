#!/usr/bin/env bash
# Set up a fresh clone: virtual environment (.venv), the package with its test and jobs (Ray) extras, and data/
# assembled from the offline mirror ($XFR_MIRROR, or ../shared beside the checkout).
# Idempotent: reinstalls only when pyproject.toml or constraints.txt changed (constraints.txt pins
# every package's version, so that the pipeline's numbers do not drift with new releases); copies only missing/changed data files.
set -euo pipefail
cd "$(dirname "$0")/.."

export DVC_NO_ANALYTICS=1 YOLO_OFFLINE=1
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3.12 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(not ((3,11) <= sys.version_info[:2] < (3,13)))'; then
      PY="$cand"; break
    fi
  done
fi
[ -n "$PY" ] || { echo "error: xfr needs Python 3.11 or 3.12 (set PYTHON=/path/to/python3.11)" >&2; exit 2; }

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
have="$(cat .venv/.xfr-installed 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
  echo "setup: installing xfr and its dependencies into .venv (torch from the registry's standard build)"
  # The installed .venv measures 7.5 GB (torch's CUDA build from PyPI with its nvidia libraries and triton
  # take 5.3 GB of it); pip's wheel cache would add the downloaded wheels on top, so it is not used.
  free_kb="$(df -Pk . | awk 'NR==2 {print $4}')"
  if [ -n "$free_kb" ] && [ "$free_kb" -lt $((8 * 1024 * 1024)) ]; then
    echo "setup: warning: $((free_kb / 1024)) MB free here; .venv needs about 7,500 MB (free some space or the install stops with 'No space left on device')" >&2
  fi
  export PIP_NO_CACHE_DIR=1
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt -e '.[test,jobs]'
  echo "$want" > .venv/.xfr-installed
fi

# Headless Chromium for the results site's browser tests (tests/browser.py): Debian's chromium and
# chromium-driver, installed when missing and this runs as root with apt; otherwise those tests skip
# and say why.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian's chromium and chromium-driver (browser tests)"
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null 2>&1 &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1; }; } ||
      echo "setup: could not install chromium; the browser tests will skip" >&2
  else
    echo "setup: no chromium/chromedriver; the browser tests will skip (as root: apt-get install chromium chromium-driver)" >&2
  fi
fi

# data/: pinned files from the mirror, sha256-checked; then record them in DVC's cache so that
# `dvc status` / `dvc repro` see data.dvc as up to date.
.venv/bin/python -m xfr.data
.venv/bin/dvc config core.analytics false
.venv/bin/dvc commit -q -f data.dvc
