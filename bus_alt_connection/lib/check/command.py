"""The check as a command without Odoo: ``-c odoo.conf [--json]``."""

import argparse
import configparser
import os

from .report import emit
from .steps import check_setup


def read_config_file(path):
    """The [options] of an Odoo configuration file, as Odoo reads them."""
    parser = configparser.RawConfigParser()
    if not parser.read(path):
        raise SystemExit(f"cannot read {path}")
    return dict(parser.items("options")) if parser.has_section("options") else {}


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m odoo.addons.bus_alt_connection.lib.check",
        description="Check that Odoo's bus will work with this configuration.",
    )
    parser.add_argument("-c", "--config", default=os.environ.get("ODOO_RC"))
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    config = read_config_file(args.config) if args.config else {}
    return emit(check_setup(config), args.json)
