from .patches import bus_dispatcher, cron_runner


def post_load():
    """Runs once per process when Odoo loads the addon (server-wide or not)."""
    settings, mode = bus_dispatcher.settings_or_defaults()
    bus_dispatcher.install(settings, mode)
    cron_runner.install(settings, mode)
