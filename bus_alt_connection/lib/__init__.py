"""The plain-Python core: no module below imports ``odoo``.

* ``route``: the listener route and the addon's options, read from Odoo's
  configuration; libpq parameters; what a failed connect means.
* ``listener``: the listener's life (connect, self-check, serve, lost,
  back off) and the two listeners that live it: the bus dispatcher's and
  the cron runners' trigger connections.
* ``polling``: reading new ``bus.bus`` rows when nothing can listen.
* ``check``: the operator's check (``odoo-bin bus_check``).
* ``status``: the health and metrics bodies.

The Odoo glue (``hooks.py``, ``patches/``, ``controllers/``, ``cli/``)
feeds these with what it reads from Odoo.
"""
