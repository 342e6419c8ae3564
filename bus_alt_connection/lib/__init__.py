"""The plain-Python core: no module below imports ``odoo``.

``route`` (the options, libpq parameters, what a failed connect means),
``listener`` (the listener's life, lived by the bus dispatcher's listener
and the cron runners' trigger connections), ``polling`` (new ``bus.bus``
rows when nothing can listen), ``check`` (``odoo-bin bus_check``) and
``status`` (the health and metrics bodies). The Odoo glue (``hooks.py``,
``patches/``, ``controllers/``, ``cli/``) feeds them what it reads from Odoo.
"""
