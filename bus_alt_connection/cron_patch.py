"""Odoo glue: core's cron runners LISTEN for triggers on the cron route.

Core's cron loop runs unchanged. Only the ``sql_db.db_connect('postgres')``
called by the code of core's cron runners themselves
(``ThreadedServer.cron_thread``, ``WorkerCron.start``) returns a
``TriggerConnectionFactory``; every other ``db_connect`` of a cron thread or
worker (job transactions, the database list, the bus NOTIFY a job sends)
keeps Odoo's ``db_*`` route.
"""

import functools
import logging
import os
import sys
import threading

from odoo import sql_db
from odoo.service import server
from odoo.tools import config

from .cron_trigger_listener import CRON_CHANNEL, TriggerConnection, TriggerCursor
from .dispatcher_patch import explain_deafness, notify_through_db_host
from .listener_route import (
    BUS_DATABASE,
    RouteConfigError,
    cron_redirect_enabled,
    resolve_cron_route,
)

_logger = logging.getLogger(__name__)


def cron_listen_callers():
    """Code objects of core's functions that open the trigger connection."""
    return {
        server.ThreadedServer.cron_thread.__code__,
        server.WorkerCron.start.__code__,
    }


def runner_name():
    thread = threading.current_thread()
    if thread is threading.main_thread():
        return f"cron worker {os.getpid()}"
    return thread.name.rsplit(".", 1)[-1]


class TriggerConnectionFactory:
    """Stands for core's ``Connection`` object: ``cursor()`` is all it needs."""

    def __init__(self, route, settings, original_db_connect, mode=None):
        self._route = route
        self._settings = settings
        auto = mode is not None and mode.configured == "auto"
        self._deaf_level = logging.WARNING if auto else logging.ERROR
        self._db_connect = original_db_connect

    def cursor(self):
        connection = TriggerConnection(
            self._route,
            runner_name(),
            send_notify=functools.partial(notify_through_db_host, channel=CRON_CHANNEL),
            explain_deafness=functools.partial(explain_deafness, self._route),
            selfcheck_timeout=self._settings["selfcheck_timeout"],
            max_delay=self._settings["reconnect_max_delay"],
            deaf_level=self._deaf_level,
        )
        connection.start()
        return TriggerCursor(connection, self._execute_through_db_host)

    def _execute_through_db_host(self, query, params):
        with self._db_connect(BUS_DATABASE).cursor() as cr:
            cr.execute(query, params)
            return cr.fetchall() if cr.description else []


def _patched_db_connect(original, factory):
    callers = cron_listen_callers()

    def db_connect(to, *args, **kwargs):
        # pylint: disable=protected-access
        if to == BUS_DATABASE and sys._getframe(1).f_code in callers:
            return factory
        return original(to, *args, **kwargs)

    db_connect.bus_alt_connection_cron = factory
    return db_connect


def install(settings, mode=None):
    """Redirect the cron runners' trigger LISTEN, once per process."""
    if getattr(sql_db.db_connect, "bus_alt_connection_cron", None) is not None:
        return
    try:
        if not cron_redirect_enabled(config):
            _logger.info(
                "bus_alt_connection: cron_trigger_redirect is off; cron "
                "triggers are listened for through db_host, as in core."
            )
            return
        route = resolve_cron_route(config)
    except RouteConfigError as error:
        # the bus listener has reported its own route's bad value already
        reported = error.option.startswith("imdispatcher_") and (
            mode is None or mode.active == "listen"
        )
        _logger.log(
            logging.WARNING if reported else logging.ERROR,
            "bus_alt_connection: cron triggers are not redirected: %s. Cron "
            "jobs still run at core's polling pace.",
            error,
        )
        return
    if not route.configured:
        # Nothing but db_host to go to: core's own connection is that.
        _logger.info(
            "bus_alt_connection: no cron_db_* or imdispatcher_db_* option is "
            "set (imdispatcher_mode = %s); cron triggers are listened for "
            "through db_host, as in core. Behind a transaction-mode pooler "
            "triggered jobs then start at core's polling round (about a "
            "minute).",
            mode.configured if mode is not None else "listen",
        )
        return
    factory = TriggerConnectionFactory(route, settings, sql_db.db_connect, mode)
    sql_db.db_connect = _patched_db_connect(sql_db.db_connect, factory)
