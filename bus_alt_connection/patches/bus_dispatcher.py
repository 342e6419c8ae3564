"""Odoo glue: core's ``ImDispatch.loop`` runs unchanged, on our route.

Each call of core's loop goes through ``BusListener.run_once``. In the dispatcher's
thread (or greenlet) only, the one ``db_connect('postgres')`` of core's loop takes the
listener route (core's ``db_connect`` gets its parameters from ``connection_info_for``)
and gives a cursor that refuses a standby (where LISTEN fails) and reports when
``LISTEN imbus`` is committed; every other connection (HTTP, cron, the NOTIFY side)
keeps Odoo's ``db_*`` route. Core's channel map becomes a ``ChannelMap``, where the
watch's probe subscribes like a websocket."""

import functools
import logging
import threading
import time

from odoo import sql_db
from odoo.tools import config

from odoo.addons.bus.models import bus as core_bus

from ..lib.listener import listen_request, round_trip
from ..lib.listener.bus import BusListener
from ..lib.listener.watch import channel_probe, deafness_explanation
from ..lib.log_once import error_once
from ..lib.route.config import (
    BUS_DATABASE,
    describe_endpoint,
    odoo_db_params,
    resolve_route,
)
from ..lib.route.connection import first_line, listener_params, refuse_standby
from .bus_polling import DispatcherPoller, subscribed_in, wake

_logger = logging.getLogger(__name__)

_this_thread = threading.local()
LISTEN_REQUEST = "bus"
#: as core: ODOO_NOTIFY_FUNCTION is read once, at start
NOTIFY_SQL = round_trip.notify_sql(round_trip.notify_function())


class OdooBusListener(BusListener):
    """The bus listener, told how Odoo sends a NOTIFY and wakes websockets."""

    dispatcher = None  # core's ImDispatch, from its first loop

    def send_notify(self, channel, payload):
        notify_through_db_host(payload, channel)

    def new_probe(self):
        return channel_probe(self.dispatcher._channels_to_ws)

    def explain_deafness(self):
        return explain_deafness(self._route)

    def catch_up(self):
        wake(subscribed_in(self.dispatcher))

    def db_host_answers(self):
        try:
            with sql_db.db_connect(BUS_DATABASE).cursor() as cr:
                cr.execute("SELECT 1")
        except Exception as error:
            _logger.debug("bus_alt_connection: db_host does not answer: %s", error)
            return False
        return True

    def describe_db_host(self):
        return describe_endpoint(odoo_db_params(config))


class _ListenerCursor:
    """Core's LISTEN cursor: refuses a standby; reports when LISTEN is committed."""

    def __init__(self, cursor, on_listening):
        try:
            refuse_standby(cursor._cnx)
        except Exception:
            cursor.close()
            raise
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
            on_listening(self._cursor._cnx)
        return result


class ChannelMap(dict):
    """Core's channel -> websockets map, noting when core's loop reads it: core looks
    every notified channel up with ``get`` (subscriptions use ``setdefault``, ``[]``
    and ``pop``), so the last ``get`` is the last notification received."""

    last_received_at = None
    lookups = 0  # how many lookups core's loop made (one per channel of a batch)

    def get(self, key, default=None):
        self.last_received_at = time.monotonic()
        self.lookups += 1
        return super().get(key, default)


def _wrap_db_connect(original):
    @functools.wraps(original)
    def db_connect(to, *args, **kwargs):
        if (request := listen_request.take(LISTEN_REQUEST, to)) is None:
            return original(to, *args, **kwargs)
        _this_thread.route, on_listening = request
        try:
            connection = original(to, *args, **kwargs)
        finally:
            _this_thread.route = None
        core_cursor = connection.cursor
        connection.cursor = lambda *args, **kwargs: _ListenerCursor(
            core_cursor(*args, **kwargs), on_listening
        )
        return connection

    return db_connect


def _wrap_connection_info_for(original):
    @functools.wraps(original)
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
    request = listen_request.ListenRequest((route, on_listening), _report_route_unused)
    listen_request.arm(LISTEN_REQUEST, request)
    try:
        core_loop(dispatcher)
    finally:
        listen_request.disarm(
            LISTEN_REQUEST, "core's loop ended without opening a connection"
        )


_report_route_unused = error_once(
    _logger,
    "bus_alt_connection: core's bus dispatcher did not open its LISTEN "
    "connection through odoo.sql_db.db_connect('postgres') (%s): the "
    "imdispatcher_db_* route is not in use and the bus listens through "
    "db_host. Another addon may replace db_connect without calling the one it "
    "wraps, or this Odoo opens its LISTEN differently.",
)


def notify_through_db_host(payload, channel="imbus"):
    """NOTIFY ``channel`` (imbus by default) as core does, through db_host."""
    with sql_db.db_connect(BUS_DATABASE).cursor() as cr:
        cr.execute(NOTIFY_SQL, (channel, payload))


def explain_deafness(route):
    """Compare the listener's route with db_host, for the self-check's ERROR."""
    try:
        ours = round_trip.route_facts(listener_params(route))
        with sql_db.db_connect(BUS_DATABASE).cursor() as cr:
            theirs = round_trip.read_server_facts(cr)
    except Exception as error:
        return f"the routes could not be compared ({first_line(error)})"
    return deafness_explanation(ours, theirs)


def installed_listener():
    """The BusListener of this process, or None if not patched."""
    return getattr(core_bus.ImDispatch.loop, "bus_alt_connection", None)


def install(settings):
    """Patch core once per process; return the bus listener."""
    if (installed := installed_listener()) is not None:
        return installed
    listener = OdooBusListener(
        settings, lambda: resolve_route(config), core_bus.stop_event
    )
    core_loop = core_bus.ImDispatch.loop
    pollers = {}

    def loop(self):
        listener.dispatcher = self
        if self not in pollers:
            pollers[self] = DispatcherPoller(self, listener)
        listener.run_once(
            listen=functools.partial(_run_core_loop_on_route, core_loop, self),
            poll=pollers[self].run,
        )

    loop.bus_alt_connection = listener
    loop.__doc__ = core_loop.__doc__
    sql_db.db_connect = _wrap_db_connect(sql_db.db_connect)
    sql_db.connection_info_for = _wrap_connection_info_for(sql_db.connection_info_for)
    core_bus.ImDispatch.loop = loop
    core_bus.dispatch._channels_to_ws = ChannelMap(core_bus.dispatch._channels_to_ws)
    if listener.mode.active == "listen":
        listener.route()  # report configuration problems at start-up
    return listener
