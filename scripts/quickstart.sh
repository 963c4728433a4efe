#!/usr/bin/env bash
# Set up a private virtual environment (if missing) and run the main job:
# the quickstart simulation.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
.venv/bin/egress check examples/policy.py --domain example.com --domain gmail.com
.venv/bin/egress simulate scenarios/quickstart.toml --out out/quickstart
