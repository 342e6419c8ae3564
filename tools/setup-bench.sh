#!/usr/bin/env bash
# Installs what the benchmarks need: what the tests need (tools/setup.sh:
# PostgreSQL, PgBouncer, .venv) plus bench/requirements.txt (matplotlib, for
# the charts) into .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
.venv/bin/python -m pip install -q --disable-pip-version-check -r bench/requirements.txt
