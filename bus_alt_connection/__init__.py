import importlib.util

# The Odoo glue loads only inside Odoo, where core's bus is importable; lib/
# is also imported without it (tools, tests, ``python -m
# odoo.addons.bus_alt_connection.lib.check`` from a wheel). Where core lacks
# what the patches wrap, nothing is patched and one ERROR says so.
if __name__.startswith("odoo.addons.") and importlib.util.find_spec("odoo.addons.bus"):
    from .patches.supported_core import missing_in_core

    if missing_in_core():
        from .patches.supported_core import report_unsupported as post_load
    else:
        from . import cli, controllers
        from .hooks import post_load
