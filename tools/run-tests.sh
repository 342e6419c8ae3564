#!/usr/bin/env bash
# Sets up (tools/setup.sh) and runs the test-suite. The real-Odoo tests run
# when ODOO_PATH (and ODOO_PYTHON) name an Odoo tree; they skip otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec .venv/bin/python -m pytest "$@"
