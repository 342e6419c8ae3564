"""Build the addon's wheel and metapackage for every Odoo series.

    python3 tools/build_wheels.py [--series 17.0 ...] [--dist dist/wheels]

(``make wheels``). The addon's code is the same for every series; each
wheel is built with whool, as OCA builds its addons, from a copy whose
manifest names that series (``tools/addon_for_series.py``), so it is
``odoo_addon_bus_alt_connection-<series>.2.0.0`` and requires that series'
``odoo``. Each metapackage (``odoo_addons_oca_bus_alt_connection``, from
``setup/_metapackage``) requires the addon of its series at this major
version or above, so that a wheelhouse that also holds the upstream module
(1.0.x) installs this one.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

if __package__ in (None, ""):  # run as a script: python3 tools/build_wheels.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.addon_for_series import REPO_ROOT, SERIES, SOURCE, copy_for_series

METAPACKAGE = os.path.join(REPO_ROOT, "setup", "_metapackage")
#: exact versions of the build tools (whool, manifestoo-core, setuptools...)
BUILD_CONSTRAINTS = os.path.join(REPO_ROOT, "tools", "build-requirements.txt")
DIST = os.path.join(REPO_ROOT, "dist", "wheels")
MANIFEST_VERSION = re.compile(r'"version":\s*"\d+\.\d+\.(\d+\.\d+\.\d+)"')
#: the series the metapackage's pyproject.toml in the repo is written for
METAPACKAGE_SERIES = "18.0"


def addon_version(series):
    """``<series>.2.0.0``: the series and the manifest's own version."""
    with open(os.path.join(SOURCE, "__manifest__.py")) as handle:
        return f"{series}.{MANIFEST_VERSION.search(handle.read()).group(1)}"


def pip_wheel(source, outdir):
    """Build ``source`` into ``outdir``; the wheel's path."""
    before = set(os.listdir(outdir))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", outdir, source],
        check=True,
        capture_output=True,
        timeout=600,
        # pip's isolated build environment honours the constraints too
        env={**os.environ, "PIP_CONSTRAINT": BUILD_CONSTRAINTS},
    )
    (built,) = set(os.listdir(outdir)) - before
    return os.path.join(outdir, built)


def metapackage_for(series, workdir):
    """A copy of setup/_metapackage for ``series``; its folder."""
    target = os.path.join(workdir, "metapackage")
    shutil.copytree(
        METAPACKAGE, target, ignore=shutil.ignore_patterns("build", "*.egg-info")
    )
    path = os.path.join(target, "pyproject.toml")
    with open(path) as handle:
        # it names its series in its version, its requirement and a classifier
        text = handle.read().replace(METAPACKAGE_SERIES, series)
    with open(path, "w") as handle:
        handle.write(text)
    return target


def build_series(series, dist):
    """(addon wheel, metapackage wheel) of ``series``, written to ``dist``."""
    os.makedirs(dist, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"bus-alt-{series}-") as workdir:
        addon = copy_for_series(series, workdir)
        return pip_wheel(addon, dist), pip_wheel(metapackage_for(series, workdir), dist)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", nargs="+", choices=SERIES, default=list(SERIES))
    parser.add_argument("--dist", default=DIST, help="where the wheels go")
    args = parser.parse_args(argv)
    for series in args.series:
        for wheel in build_series(series, args.dist):
            print(wheel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
