"""A test fixture: what another server-wide addon may do to db_connect.

It wraps ``odoo.sql_db.db_connect`` after bus_alt_connection did (Odoo
18.0+ loads server-wide modules in a set's order, so it loads that one
first):

* by default it calls the function it wraps, as a well-behaved wrapper does;
* with ``BUS_ALT_TEST_BYPASS=1`` its connections to ``postgres`` skip every
  wrapper and go to core's own ``db_connect``, as an addon that replaces it
  without calling the one it wraps would.
"""

import inspect
import os

from odoo import sql_db
from odoo.modules.module import load_openerp_module


def post_load():
    load_openerp_module("bus_alt_connection")  # once per process: a no-op after
    wrapped = sql_db.db_connect
    core = inspect.unwrap(wrapped)
    bypass = os.environ.get("BUS_ALT_TEST_BYPASS") == "1"

    def db_connect(to, *args, **kwargs):
        if bypass and to == "postgres":
            return core(to, *args, **kwargs)
        return wrapped(to, *args, **kwargs)

    sql_db.db_connect = db_connect
