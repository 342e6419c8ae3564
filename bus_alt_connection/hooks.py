from . import dispatcher_patch


def post_load():
    """Runs once per process when Odoo loads the addon (server-wide or not)."""
    dispatcher_patch.install()
