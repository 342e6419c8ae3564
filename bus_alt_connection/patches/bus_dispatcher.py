"""Odoo glue: core's ``ImDispatch.loop`` runs unchanged, on our route.

Three small patches, each a no-op unless the current thread (or greenlet,
in the gevent worker) is the bus dispatcher starting its LISTEN connection:

* ``ImDispatch.loop`` hands every attempt of core's loop to the
  ``ListenerSupervisor`` (retry policy, logs, catch-up);
* ``sql_db.db_connect('postgres')``, called once by core's loop, returns a
  connection whose cursor refuses a standby (where LISTEN fails) and
  reports when ``LISTEN imbus`` is committed;
* ``sql_db.connection_info_for('postgres')``, called inside that
  ``db_connect``, gets the listener route's host, port, user, password,
  sslmode and database.

Every other connection of the process (HTTP, cron, the NOTIFY side) keeps
Odoo's ``db_*`` route. Besides, core's channel map becomes a ``ChannelMap``
(a dict that notes when core's loop reads it), and the watch's probe is
subscribed in it like a websocket.
"""

import functools
import logging
import threading
import time

from odoo import sql_db
from odoo.tools import config

from odoo.addons.bus.models import bus as core_bus

from ..lib.check.probe import NOTIFY_SQL, read_server_facts, route_facts, route_hears
from ..lib.listener import listen_request
from ..lib.listener.auto_mode import ModeState
from ..lib.listener.bus import LISTENER_TEXTS, ListenerSupervisor
from ..lib.listener.watch import ChannelProbe, ListenerWatch, deafness_explanation
from ..lib.route.config import (
    BUS_DATABASE,
    resolve_route,
    resolve_setting_values,
)
from ..lib.route.connection import (
    first_line,
    interrupt_connection,
    listener_params,
    refuse_standby,
)
from .bus_polling import (
    DispatcherPoller,
    db_host_answers,
    describe_db_host,
    wake_all_websockets,
)

_logger = logging.getLogger(__name__)

_this_thread = threading.local()
#: the kind of listen_request this glue arms
LISTEN_REQUEST = "bus"


class _ListenerTarget:
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
            on_listening(self._cursor._cnx)
        return result


class _ListenerConnection:
    def __init__(self, connection, on_listening):
        self._connection = connection
        self._on_listening = on_listening

    def __getattr__(self, name):
        return getattr(self._connection, name)

    def cursor(self, *args, **kwargs):
        cursor = self._connection.cursor(*args, **kwargs)
        try:
            refuse_standby(cursor._cnx)
        except Exception:
            cursor.close()
            raise
        return _ListenerCursor(cursor, self._on_listening)


class ChannelMap(dict):
    """Core's channel -> websockets map, noting when core's loop reads it.

    Core's loop looks every channel of every notification it receives up
    with ``get`` (subscriptions use ``setdefault``, ``[]`` and ``pop``), so
    the last ``get`` is when the listener last received a notification.
    """

    last_received_at = None
    #: how many lookups core's loop made (one per channel of a batch)
    lookups = 0

    def get(self, key, default=None):
        self.last_received_at = time.monotonic()
        self.lookups += 1
        return super().get(key, default)


def _patched_db_connect(original):
    @functools.wraps(original)
    def db_connect(to, *args, **kwargs):
        request = listen_request.take(LISTEN_REQUEST, to)
        if request is None:
            return original(to, *args, **kwargs)
        _this_thread.route = request.route
        try:
            connection = original(to, *args, **kwargs)
        finally:
            _this_thread.route = None
        return _ListenerConnection(connection, request.on_listening)

    return db_connect


def _patched_connection_info_for(original):
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
    request = listen_request.ListenRequest(
        _ListenerTarget(route, on_listening), _report_route_unused
    )
    listen_request.arm(LISTEN_REQUEST, request)
    try:
        core_loop(dispatcher)
    finally:
        listen_request.disarm(
            LISTEN_REQUEST, "core's loop ended without opening a connection"
        )


_report_route_unused = listen_request.error_once(
    _logger,
    "bus_alt_connection: core's bus dispatcher did not open its LISTEN "
    "connection through odoo.sql_db.db_connect('postgres') (%s): the "
    "imdispatcher_db_* route is not in use and the bus listens through "
    "db_host. Another addon may replace db_connect without calling the one it "
    "wraps, or this Odoo opens its LISTEN differently.",
)


def notify_through_db_host(payload, channel="imbus"):
    """NOTIFY ``channel`` (the bus's, by default) the way core does, on
    Odoo's own route."""
    with sql_db.db_connect(BUS_DATABASE).cursor() as cr:
        cr.execute(NOTIFY_SQL, (channel, payload))


def explain_deafness(route):
    """Compare the listener's route with db_host, for the self-check's ERROR."""
    try:
        ours = route_facts(listener_params(route))
        with sql_db.db_connect(BUS_DATABASE).cursor() as cr:
            theirs = read_server_facts(cr)
    except Exception as error:
        return f"the routes could not be compared ({first_line(error)})"
    return deafness_explanation(ours, theirs)


def start_watch(dispatcher, route, settings, on_deaf=None):
    """Start the bus listener's watch; its probes subscribe like websockets."""
    return ListenerWatch(
        LISTENER_TEXTS.subject,
        route,
        new_probe=lambda: ChannelProbe(dispatcher._channels_to_ws),
        send_notify=notify_through_db_host,
        explain_deafness=lambda: explain_deafness(route),
        interrupt_listener=interrupt_connection,
        stop_event=core_bus.stop_event,
        interval=settings["heartbeat_interval"] or None,
        timeout=settings["selfcheck_timeout"],
        on_deaf=on_deaf,
    ).start("bus_alt_connection.watch")


def installed_supervisor():
    """The ListenerSupervisor of this process, or None if not patched."""
    return getattr(core_bus.ImDispatch.loop, "bus_alt_connection", None)


def install(settings=None, mode=None):
    """Patch core once per process; return the listener supervisor."""
    installed = installed_supervisor()
    if installed is not None:
        return installed
    if settings is None or mode is None:
        settings, mode = settings_or_defaults()
    supervisor = ListenerSupervisor(
        resolve_route=lambda: resolve_route(config),
        stop_event=core_bus.stop_event,
        max_delay=settings["reconnect_max_delay"],
        mode=mode,
        db_host_works=db_host_answers,
        listen_works=functools.partial(
            listen_works, timeout=settings["selfcheck_timeout"]
        ),
        retry_interval=settings["listen_retry_interval"],
    )
    core_loop = core_bus.ImDispatch.loop
    pollers = {}

    def loop(self):
        if supervisor.mode.active == "poll":
            poller = pollers.get(self) or pollers.setdefault(
                self, DispatcherPoller(self, supervisor, settings["poll_interval"])
            )
            supervisor.poller.run(
                poller.run,
                catch_up=lambda: wake_all_websockets(self),
                describe=describe_db_host(),
            )
            return
        route = supervisor.route()
        if route is not None and supervisor.watch is None:
            supervisor.watch = start_watch(
                self, route, settings, on_deaf=_on_deaf(supervisor, route)
            )
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
    core_bus.dispatch._channels_to_ws = ChannelMap(core_bus.dispatch._channels_to_ws)
    if mode.active == "listen":
        supervisor.route()  # report configuration problems at start-up
    return supervisor


def _on_deaf(supervisor, route):
    """auto mode: enough failed checks in a row switch to polling."""
    if supervisor.mode.configured != "auto":
        return None
    return supervisor.switch.on_failed_check(route, supervisor.mode.failed_checks)


def listen_works(route, timeout):
    """(True, detail) when a NOTIFY sent as core sends it reaches a LISTEN
    on ``route``; auto mode tries this while it polls."""
    try:
        elapsed = route_hears(
            listener_params(route),
            lambda channel, payload: notify_through_db_host(payload, channel=channel),
            timeout,
        )
    except Exception as error:
        return False, first_line(error)
    if elapsed is None:
        return False, f"nothing arrived within {timeout:g} s"
    return True, f"a NOTIFY through db_host arrived in {elapsed:.0f} ms"


def settings_or_defaults():
    """(settings, ModeState); a bad value falls back alone to its default,
    with one ERROR naming it."""
    values, refused = resolve_setting_values(config)
    for error in refused:
        _logger.error(
            "bus_alt_connection: %s; using its default (%s) meanwhile, the "
            "other options stand.",
            error,
            values[error.option.removeprefix("imdispatcher_")].value,
        )
    settings = {name: value.value for name, value in values.items()}
    configured = settings["mode"]
    mode = ModeState(
        configured=configured,
        configured_source=values["mode"].source,
        active="poll" if configured == "poll" else "listen",
        reason=f"configured ({values['mode'].source})",
        poll_interval=settings["poll_interval"] / 1000,
        failed_checks=settings["auto_failed_checks"],
    )
    return settings, mode
