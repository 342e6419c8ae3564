import importlib.util

# The Odoo glue loads only inside Odoo, where core's bus is importable: the
# route, connection and check modules are plain Python, importable by tools,
# tests and ``python -m odoo.addons.bus_alt_connection.lib.check.setup`` from an
# installed wheel, with or without Odoo's addons on the path.
if __name__.startswith("odoo.addons.") and importlib.util.find_spec("odoo.addons.bus"):
    from . import cli
    from . import controllers
    from .hooks import post_load
