# License AGPL-3.0 or later (https://www.gnu.org/licenses/agpl).
import inspect
import json
import socket
import threading
from unittest import mock

from odoo import sql_db
from odoo.tests.common import TransactionCase
from odoo.tools import config

from odoo.addons.bus.models import bus as core_bus

from ..lib.listener import listen_request
from ..lib.listener.bus import BusListener
from ..lib.route.config import read_settings, resolve_route
from ..patches import bus_dispatcher

ROUTE_OPTIONS = {
    "imdispatcher_db_host": "listener.example",
    "imdispatcher_db_port": "15432",
    "imdispatcher_db_user": "listener_user",
}


def _core_loop():
    """Core's ``ImDispatch.loop``, which the installed wrapper runs."""
    return inspect.getclosurevars(core_bus.ImDispatch.loop).nonlocals["core_loop"]


class _OneNotification:
    """A LISTEN connection, as core's loop uses it, that receives one
    notification; reading it stops the loop (``stop`` is its stop event)."""

    def __init__(self, payload, stop):
        self.listened = []
        self.notifies = []
        self._payload = payload
        self._stop = stop
        self._readable, self._writer = socket.socketpair()
        self._writer.send(b"x")  # the selector sees the notification at once

    # the connection, and its cursor -------------------------------------
    def cursor(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._readable.close()
        self._writer.close()

    def execute(self, query):
        self.listened.append(query)

    def commit(self):
        pass

    @property
    def _cnx(self):
        return self

    # what core's loop selects on and polls --------------------------------
    def fileno(self):
        return self._readable.fileno()

    def poll(self):
        self._readable.recv(1)
        self.notifies.append(mock.Mock(payload=self._payload))
        self._stop.set()


class TestDispatcherPatch(TransactionCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # Odoo's loader calls post_load; a runner that imports the tests
        # first (pytest-odoo) keeps it from doing so. install() is idempotent.
        cls.listener = bus_dispatcher.install(read_settings(config))

    def setUp(self):
        super().setUp()
        # the file's own route options come back after each test: the cron
        # runner's tests, run next, read them
        before = {
            key: config.options[key] for key in ROUTE_OPTIONS if key in config.options
        }
        for key, value in ROUTE_OPTIONS.items():
            config[key] = value
        self.addCleanup(self._restore_route_options, before)

    def _restore_route_options(self, before):
        for key in ROUTE_OPTIONS:
            config.options.pop(key, None)
        config.options.update(before)

    def test_loop_is_wrapped_once(self):
        listener = core_bus.ImDispatch.loop.bus_alt_connection
        self.assertIsInstance(listener, BusListener)
        self.assertIs(listener, self.listener)
        db_connect = sql_db.db_connect
        self.assertIs(bus_dispatcher.install(read_settings(config)), listener)
        self.assertIs(sql_db.db_connect, db_connect, "patched twice")

    def test_channel_map_notes_core_lookups(self):
        """Core's own loop, fed one notification, looks its channel up in
        the ChannelMap: noted, and the subscriber woken."""
        self.assertIsInstance(
            core_bus.dispatch._channels_to_ws, bus_dispatcher.ChannelMap
        )
        key = ("bus_alt_test_db", "bus_alt_test_channel")
        woken = []
        subscriber = mock.Mock(
            trigger_notification_dispatching=lambda: woken.append(True)
        )
        dispatcher = core_bus.ImDispatch()
        dispatcher._channels_to_ws = channels = bus_dispatcher.ChannelMap(
            {key: {subscriber}}
        )
        stop = threading.Event()
        connection = _OneNotification(json.dumps([list(key)]), stop)
        with mock.patch.object(sql_db, "db_connect", lambda to: connection):
            with mock.patch.object(core_bus, "stop_event", stop):
                _core_loop()(dispatcher)
        self.assertEqual(connection.listened, ["listen imbus"])
        self.assertEqual(woken, [True])
        self.assertEqual(channels.lookups, 1)
        self.assertIsNotNone(channels.last_received_at)

    def test_route_reads_odoo_config(self):
        route = resolve_route(config, environ={})
        self.assertTrue(route.configured)
        self.assertEqual(route.host, "listener.example")
        self.assertEqual(route.port, "15432")
        self.assertEqual(route.source("user"), "config imdispatcher_db_user")

    def test_other_connections_keep_db_host(self):
        _db, info = sql_db.connection_info_for("postgres")
        self.assertEqual(info.get("host"), config["db_host"] or None)
        self.assertNotEqual(info.get("port"), "15432")

    def test_only_the_requesting_thread_gets_the_route(self):
        route = resolve_route(config, environ={})
        bus_dispatcher._this_thread.route = route
        try:
            _db, mine = sql_db.connection_info_for("postgres")
            _db, other_db = sql_db.connection_info_for(self.env.cr.dbname)
            seen = {}
            thread = threading.Thread(
                target=lambda: seen.update(
                    info=sql_db.connection_info_for("postgres")[1]
                )
            )
            thread.start()
            thread.join()
        finally:
            bus_dispatcher._this_thread.route = None
        self.assertEqual((mine["host"], mine["port"]), ("listener.example", "15432"))
        self.assertEqual(mine["user"], "listener_user")
        self.assertEqual(mine["database"], "postgres")
        self.assertTrue(mine["application_name"].startswith("odoo-bus-listener-"))
        self.assertNotEqual(other_db.get("port"), "15432")
        self.assertNotEqual(seen["info"].get("port"), "15432")

    def test_listen_request_is_used_once(self):
        route = resolve_route(config, environ={})
        heard = []
        listen_request.arm(
            bus_dispatcher.LISTEN_REQUEST,
            listen_request.ListenRequest(
                (route, lambda: heard.append(1)), heard.append
            ),
        )
        try:
            connection = sql_db.db_connect("postgres")
            again = sql_db.db_connect("postgres")
        finally:
            listen_request.disarm(bus_dispatcher.LISTEN_REQUEST)
        self.assertIn("cursor", vars(connection), "its cursor reports LISTEN")
        self.assertNotIn("cursor", vars(again))
        self.assertEqual(heard, [])

    def test_a_core_loop_that_does_not_take_the_route_is_reported(self):
        route = resolve_route(config, environ={})
        bus_dispatcher._report_route_unused.reported.clear()
        with self.assertLogs(bus_dispatcher.__name__, "ERROR") as logged:
            bus_dispatcher._run_core_loop_on_route(
                lambda dispatcher: None, None, route, lambda connection: None
            )
        self.assertIn("route is not in use", logged.output[0])
        self.assertIn(
            "core's loop ended without opening a connection", logged.output[0]
        )
