#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh Debian machine:
# PostgreSQL, PgBouncer and (where python3 cannot make a venv) python3-venv
# from Debian's packages, and a virtualenv (.venv) with the Python packages
# of tests/requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian ships venv (ensurepip) apart from python3, in python3-venv
venv_works() { python3 -c 'import ensurepip, venv' >/dev/null 2>&1; }

missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
venv_works || missing+=(python3-venv)
[ -x /usr/bin/chromium ] || missing+=(chromium)  # the web client test
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "setup: installing ${missing[*]} from Debian's packages"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# a .venv that cannot run pip (made before python3-venv was there, or by
# another Python since removed) is made anew
if [ -e .venv ] && ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
    echo "setup: .venv cannot run pip: recreating it"
    rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r tests/requirements.txt
