#!/usr/bin/env bash
# Set up a private virtual environment (if missing) and run the whole test suite.
# Used verbatim by README.md and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
# The shared-limit tests need Debian's redis-server (they start their own, on loopback).
if ! command -v redis-server >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server \
        || { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
             apt-get install -y -q --no-install-recommends redis-server; }
fi
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
.venv/bin/ruff check .
.venv/bin/lint-imports
.venv/bin/mypy
.venv/bin/python -m pytest -q "$@"
