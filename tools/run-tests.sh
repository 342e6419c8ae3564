#!/usr/bin/env bash
# Sets up (tools/setup.sh) and runs the test-suite.
#
#   bash tools/run-tests.sh [pytest args]
#       the whole suite; the real-Odoo tests run when ODOO_PATH (and
#       ODOO_PYTHON) name an Odoo tree, and skip otherwise;
#   bash tools/run-tests.sh --odoo-archives DIR [pytest args]
#       (CI: --odoo-archives ../shared/odoo) the tests without Odoo once, then
#       the real-Odoo tier against each odoo-<series>.tar.xz of DIR, with a
#       tree and virtualenv per series prepared by tools/odoo_lab.py in
#       ${BUS_ALT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bus_alt_connection};
#       see tools/run_tiers.py. A real-Odoo test may not skip there.
set -euo pipefail
archives=""
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --odoo-archives)
            [ $# -ge 2 ] || { echo "run-tests: --odoo-archives needs a folder" >&2; exit 2; }
            archives="$2"
            shift 2
            ;;
        --odoo-archives=*)
            archives="${1#*=}"
            shift
            ;;
        *)
            args+=("$1")
            shift
            ;;
    esac
done
if [ -n "$archives" ]; then
    # relative to where the command was run from
    archives="$(cd "$archives" && pwd)"
fi
cd "$(dirname "$0")/.."
bash tools/setup.sh
if [ -z "$archives" ]; then
    exec .venv/bin/python -m pytest "${args[@]}"
fi
exec .venv/bin/python -m tools.run_tiers --odoo-archives "$archives" "${args[@]}"
