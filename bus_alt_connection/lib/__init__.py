"""The plain-Python core: no module below imports ``odoo``.

The Odoo glue (``hooks.py``, ``patches/``, ``controllers/``, ``cli/``) feeds
it what it reads from Odoo. CONTRIBUTING.rst (Layout) says what is where."""
