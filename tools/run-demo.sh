#!/usr/bin/env bash
# Sets up (tools/setup.sh) and runs the demo: notifications lost through a
# transaction-mode PgBouncer, delivered through the addon's route; with
# ODOO_PATH (and ODOO_PYTHON) set, the same with a real Odoo server.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec .venv/bin/python -m tools.demo "$@"
