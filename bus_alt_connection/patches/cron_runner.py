"""Odoo glue: core's cron runners LISTEN for triggers on the cron route.

Core's runners (``ThreadedServer.cron_thread``, ``WorkerCron.start``) run
unchanged, wrapped to arm a one-shot ``listen_request``: their thread's first
``db_connect('postgres')`` returns a ``TriggerConnectionFactory``; every other
connection (job transactions, the database list, a job's bus NOTIFY) keeps
Odoo's ``db_*`` route. When core's runner recycles its connection (19.0's
``limit_time_worker_cron``), closing it arms the request again."""

import functools
import logging
import os
import threading
import weakref

from odoo import sql_db
from odoo.service import server
from odoo.tools import config

from ..lib.listener import listen_request
from ..lib.listener.cron import CRON_CHANNEL, TriggerConnection
from ..lib.log_once import error_once
from ..lib.route.config import (
    BUS_DATABASE,
    OptionError,
    cron_redirect_enabled,
    resolve_cron_route,
)
from .bus_dispatcher import explain_deafness, notify_through_db_host

_logger = logging.getLogger(__name__)

LISTEN_REQUEST = "cron"
#: (class, name) of core's functions that open the trigger connection
CRON_RUNNERS = ((server.ThreadedServer, "cron_thread"), (server.WorkerCron, "start"))
_this_thread = threading.local()


def runner_name():
    thread = threading.current_thread()
    if thread is threading.main_thread():
        return f"cron worker {os.getpid()}"
    return thread.name.rsplit(".", 1)[-1]


def arm_trigger_request(factory):
    """Core's next LISTEN connection in this thread is the factory's."""
    request = listen_request.ListenRequest(factory, _report_missed)
    listen_request.arm(LISTEN_REQUEST, request)


_report_missed = error_once(
    _logger,
    "bus_alt_connection: cron_trigger_redirect is on, but core's cron runner did not "
    "open its LISTEN connection through odoo.sql_db.db_connect('postgres') (%s): cron "
    "triggers are listened for through db_host. Another addon may replace db_connect "
    "without calling the one it wraps.",
)


class TriggerConnectionFactory:
    """Stands for core's ``Connection`` object: ``cursor()`` is all it needs."""

    def __init__(self, route, settings, original_db_connect):
        self._route = route
        self._settings = settings
        self._db_connect = original_db_connect
        self._connections = weakref.WeakSet()
        self._connections_lock = threading.Lock()

    def cursor(self):
        connection = TriggerConnection(
            self._route,
            runner_name(),
            self._settings,
            send_notify=functools.partial(notify_through_db_host, channel=CRON_CHANNEL),
            explain_deafness=functools.partial(explain_deafness, self._route),
            fallback_execute=self._execute_through_db_host,
            on_close=rearm_if_in_runner,
        )
        connection.start()
        with self._connections_lock:
            self._connections.add(connection)
        return connection

    def connections(self):
        """The trigger connections of this process still in use (metrics)."""
        with self._connections_lock:
            return [c for c in self._connections if not c.closed.is_set()]

    def _execute_through_db_host(self, query, params):
        with self._db_connect(BUS_DATABASE).cursor() as cr:
            cr.execute(query, params)
            return cr.fetchall() if cr.description else []


def _patched_db_connect(original):
    @functools.wraps(original)
    def db_connect(to, *args, **kwargs):
        return listen_request.take(LISTEN_REQUEST, to) or original(to, *args, **kwargs)

    return db_connect


def _armed_runner(core_runner, factory):
    """Core's runner, with its trigger connection requested on our route."""

    @functools.wraps(core_runner)
    def runner(*args, **kwargs):
        arm_trigger_request(factory)
        _this_thread.runner_factory = factory
        try:
            return core_runner(*args, **kwargs)
        finally:
            _this_thread.runner_factory = None
            listen_request.disarm(
                LISTEN_REQUEST, "core's runner returned without connecting"
            )

    runner.bus_alt_connection_cron = factory
    return runner


def rearm_if_in_runner():
    """Core closed its trigger connection inside its runner: it reconnects next."""
    if (factory := getattr(_this_thread, "runner_factory", None)) is not None:
        arm_trigger_request(factory)


def installed_factory():
    """The TriggerConnectionFactory of this process, or None if not patched."""
    return getattr(server.ThreadedServer.cron_thread, "bus_alt_connection_cron", None)


def install(settings):
    """Redirect the cron runners' trigger LISTEN, once per process."""
    if installed_factory() is not None:
        return
    try:
        if not cron_redirect_enabled(config):
            _logger.info(
                "bus_alt_connection: cron_trigger_redirect is off; cron "
                "triggers are listened for through db_host, as in core."
            )
            return
        route = resolve_cron_route(config)
    except OptionError as error:
        # the bus listener has reported its own route's bad value already
        reported = error.option.startswith("imdispatcher_") and settings.mode != "poll"
        _logger.log(
            logging.WARNING if reported else logging.ERROR,
            "bus_alt_connection: cron triggers are not redirected: %s. Cron "
            "jobs still run at core's polling pace.",
            error,
        )
        return
    if not route.configured:  # only db_host to go to: core's own connection is that
        _logger.info(
            "bus_alt_connection: no cron_db_* or imdispatcher_db_* option is set "
            "(imdispatcher_mode = %s); cron triggers are listened for through db_host, "
            "as in core. Behind a transaction-mode pooler triggered jobs then start at "
            "core's polling round (about a minute).",
            settings.mode,
        )
        return
    factory = TriggerConnectionFactory(route, settings, sql_db.db_connect)
    sql_db.db_connect = _patched_db_connect(sql_db.db_connect)
    for cls, name in CRON_RUNNERS:
        setattr(cls, name, _armed_runner(getattr(cls, name), factory))
