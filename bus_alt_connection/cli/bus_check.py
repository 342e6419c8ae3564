# License AGPL-3.0 or later (https://www.gnu.org/licenses/agpl).
"""``odoo-bin bus_check``: will the bus work with this configuration?

Odoo 19.0 loads this file on its own (as ``odoo.cli.bus_check``), so it
imports the addon by its absolute name."""

from odoo.cli import Command
from odoo.tools import config

# pylint: disable=odoo-addons-relative-import
from odoo.addons.bus_alt_connection.lib.check.report import emit
from odoo.addons.bus_alt_connection.lib.check.steps import check_setup


class BusCheck(Command):
    """Check that the bus will work behind PgBouncer (bus_alt_connection)"""

    name = "bus_check"

    def run(self, args):
        config.parse_config([arg for arg in args if arg != "--json"])
        raise SystemExit(emit(check_setup(config), "--json" in args))
