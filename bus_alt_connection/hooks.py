import logging

from odoo.tools import config

from .lib.route.config import read_settings
from .patches import bus_dispatcher, cron_runner


def post_load():
    """Runs once per process when Odoo loads the addon (server-wide or not)."""
    settings = read_settings(config)
    settings.log_refused(logging.getLogger(__name__))
    bus_dispatcher.install(settings)
    cron_runner.install(settings)
