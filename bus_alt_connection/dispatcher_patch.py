"""Odoo glue: core's ``ImDispatch.loop`` runs unchanged, on our route.

Three small patches, each a no-op unless the current thread (or greenlet,
in the gevent worker) is the bus dispatcher starting its LISTEN connection:

* ``ImDispatch.loop`` hands every attempt of core's loop to the
  ``ListenerSupervisor`` (retry policy, logs, catch-up);
* ``sql_db.db_connect('postgres')``, called once by core's loop, returns a
  connection whose cursor reports when ``LISTEN imbus`` is committed;
* ``sql_db.connection_info_for('postgres')``, called inside that
  ``db_connect``, gets the listener route's host, port, user, password,
  sslmode and database.

Every other connection of the process (HTTP, cron, the NOTIFY side) keeps
Odoo's ``db_*`` route.
"""

import logging
import threading

from odoo import sql_db
from odoo.tools import config

from odoo.addons.bus.models import bus as core_bus

from .listener_connection import listener_params
from .listener_route import BUS_DATABASE, resolve_route
from .listener_supervisor import ListenerSupervisor

_logger = logging.getLogger(__name__)

_this_thread = threading.local()


class _ListenRequest:
    def __init__(self, route, on_listening):
        self.route = route
        self.on_listening = on_listening


class _ListenerCursor:
    """Core's LISTEN cursor; reports the first commit, i.e. LISTEN is active."""

    def __init__(self, cursor, on_listening):
        self._cursor = cursor
        self._on_listening = on_listening

    def __getattr__(self, name):
        return getattr(self._cursor, name)

    def __enter__(self):
        self._cursor.__enter__()
        return self

    def __exit__(self, *exc_info):
        return self._cursor.__exit__(*exc_info)

    def commit(self):
        result = self._cursor.commit()
        on_listening, self._on_listening = self._on_listening, None
        if on_listening is not None:
            on_listening()
        return result


class _ListenerConnection:
    def __init__(self, connection, on_listening):
        self._connection = connection
        self._on_listening = on_listening

    def __getattr__(self, name):
        return getattr(self._connection, name)

    def cursor(self, *args, **kwargs):
        cursor = self._connection.cursor(*args, **kwargs)
        return _ListenerCursor(cursor, self._on_listening)


def _patched_db_connect(original):
    def db_connect(to, *args, **kwargs):
        request = getattr(_this_thread, "listen_request", None)
        if request is None or to != BUS_DATABASE:
            return original(to, *args, **kwargs)
        _this_thread.listen_request = None
        _this_thread.route = request.route
        try:
            connection = original(to, *args, **kwargs)
        finally:
            _this_thread.route = None
        return _ListenerConnection(connection, request.on_listening)

    return db_connect


def _patched_connection_info_for(original):
    def connection_info_for(db_or_uri, *args, **kwargs):
        db_name, info = original(db_or_uri, *args, **kwargs)
        route = getattr(_this_thread, "route", None)
        if route is not None and db_or_uri == BUS_DATABASE:
            # db_name stays "postgres" (db_connect insists on it); the
            # database actually reached is the route's.
            info = {**info, **listener_params(route)}
        return db_name, info

    return connection_info_for


def _run_core_loop_on_route(core_loop, dispatcher, route, on_listening):
    _this_thread.listen_request = _ListenRequest(route, on_listening)
    try:
        core_loop(dispatcher)
    finally:
        _this_thread.listen_request = None


def wake_all_websockets(dispatcher):
    """Make every websocket of this process read what it may have missed."""
    websockets = set()
    for subscribed in list(dispatcher._channels_to_ws.values()):
        websockets.update(subscribed)
    for websocket in websockets:
        websocket.trigger_notification_dispatching()


def install():
    """Patch core once per process; return the listener supervisor."""
    installed = getattr(core_bus.ImDispatch.loop, "bus_alt_connection", None)
    if installed is not None:
        return installed
    supervisor = ListenerSupervisor(
        resolve_route=lambda: resolve_route(config),
        stop_event=core_bus.stop_event,
    )
    core_loop = core_bus.ImDispatch.loop

    def loop(self):
        supervisor.run_attempt(
            lambda route, on_listening: _run_core_loop_on_route(
                core_loop, self, route, on_listening
            ),
            catch_up=lambda: wake_all_websockets(self),
        )

    loop.bus_alt_connection = supervisor
    loop.__doc__ = core_loop.__doc__
    sql_db.db_connect = _patched_db_connect(sql_db.db_connect)
    sql_db.connection_info_for = _patched_connection_info_for(
        sql_db.connection_info_for
    )
    core_bus.ImDispatch.loop = loop
    supervisor.route()  # report configuration problems at start-up
    return supervisor
