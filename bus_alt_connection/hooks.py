from . import cron_patch, dispatcher_patch


def post_load():
    """Runs once per process when Odoo loads the addon (server-wide or not)."""
    settings, mode = dispatcher_patch.settings_or_defaults()
    dispatcher_patch.install(settings, mode)
    cron_patch.install(settings, mode)
