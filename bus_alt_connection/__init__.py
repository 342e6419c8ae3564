# The Odoo glue only loads inside Odoo: the route, connection and check
# modules are plain Python, importable by tools and tests without Odoo.
if __name__.startswith("odoo.addons."):
    from . import cli
    from . import controllers
    from .hooks import post_load
