"""Copy the addon for another Odoo series than the manifest's (18.0).

Odoo 17.0 refuses to read a manifest whose version names another series
("Invalid version '18.0.2.0.0'"), which breaks database creation and module
updates for every addon on that addons path; 19.0 marks it not installable;
16.0 loads it as "16.0.18.0.2.0.0". The code itself is the same for every
series, so the copy differs from the checkout only by its manifest version.
``tools/build_wheels.py`` builds each series' wheel from such a copy.

    python3 tools/addon_for_series.py 17.0 /opt/odoo/extra-addons

writes /opt/odoo/extra-addons/bus_alt_connection with version 17.0.x.y.z.
"""

import argparse
import os
import re
import shutil
import sys

ADDON = "bus_alt_connection"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(REPO_ROOT, ADDON)
SERIES = ("16.0", "17.0", "18.0", "19.0")
VERSION_LINE = re.compile(r'("version":\s*")\d+\.\d+(\.\d+\.\d+\.\d+")')


def copy_for_series(series, destination_dir):
    """Write ``destination_dir/bus_alt_connection``; return its path."""
    if series not in SERIES:
        raise ValueError(f"series must be one of {', '.join(SERIES)}")
    target = os.path.join(destination_dir, ADDON)
    if os.path.exists(target):
        shutil.rmtree(target)
    shutil.copytree(
        SOURCE, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    manifest = os.path.join(target, "__manifest__.py")
    with open(manifest) as handle:
        text = handle.read()
    text, count = VERSION_LINE.subn(rf"\g<1>{series}\g<2>", text)
    if count != 1:
        raise RuntimeError("manifest version line not found")
    with open(manifest, "w") as handle:
        handle.write(text)
    return target


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("series", choices=SERIES)
    parser.add_argument("destination", help="a folder on Odoo's addons_path")
    args = parser.parse_args(argv)
    print(copy_for_series(args.series, args.destination))
    return 0


if __name__ == "__main__":
    sys.exit(main())
