"""Odoo glue: does this Odoo's core have what the addon wraps (``WRAPPED``)?

Odoo 16.0 to 19.0 have it all; 20.0 rewrote its bus. Where something lacks,
the addon patches nothing and says so in one ERROR: the bus and the cron
runners work as in core, and Odoo keeps serving."""

import importlib
import logging

from odoo import release

_logger = logging.getLogger(__name__)

#: (module, attribute path) of everything the patches wrap or read
WRAPPED = (
    ("odoo.addons.bus.models.bus", "ImDispatch.loop"),
    ("odoo.addons.bus.models.bus", "dispatch._channels_to_ws"),
    ("odoo.sql_db", "db_connect"),
    ("odoo.sql_db", "connection_info_for"),
    ("odoo.service.server", "ThreadedServer.cron_thread"),
    ("odoo.service.server", "WorkerCron.start"),
)


def missing_in_core():
    """What of ``WRAPPED`` this Odoo lacks, as dotted names."""
    missing = []
    for module_name, path in WRAPPED:
        try:
            found = importlib.import_module(module_name)
        except ImportError:
            missing.append(module_name)
            continue
        for name in path.split("."):
            found = getattr(found, name, None)  # stays None past a missing name
        if found is None:
            missing.append(f"{module_name}.{path}")
    return missing


def report_unsupported():
    """``post_load`` where core lacks what the addon wraps: one ERROR."""
    _logger.error(
        "bus_alt_connection: this Odoo (%s) is not supported: its core has no %s. "
        "Nothing is patched; the bus and the cron runners work as in core. The addon "
        "supports Odoo 16.0 to 19.0; remove it from server_wide_modules here.",
        release.version,
        ", ".join(missing_in_core()),
    )
