from . import cron_patch, dispatcher_patch


def post_load():
    """Runs once per process when Odoo loads the addon (server-wide or not)."""
    settings = dispatcher_patch.settings_or_defaults()
    dispatcher_patch.install(settings)
    cron_patch.install(settings)
