"""imdispatcher_mode poll and auto under a real Odoo (ODOO_PATH, ODOO_PYTHON).

Odoo's only route is the transaction-mode PgBouncer; no imdispatcher_db_*
route reaches PostgreSQL directly.
"""

import http.client
import json
import os
import re
import threading
import time
import uuid

import psycopg2
import pytest

from tools.odoo_harness import BusClient, create_bus_database
from tools.tcp_proxy import TcpProxy

from .test_odoo_bus_dispatcher import COUNT, NOTIFICATION, errors_in
from .test_odoo_health import HEALTH, admin_opener, get, wait_for_status
from .test_status_metrics import samples

POLLING = r"bus poller started"
SWITCHED = "imdispatcher_mode is auto, so the bus now polls"
LISTENING_AGAIN_TEXT = "imdispatcher_mode is auto, so the bus listens again"
LISTENING_AGAIN = re.escape(LISTENING_AGAIN_TEXT)
#: notifications sent, 0.1 s apart, while the route is fixed
STREAM = 60


def delivered_once(server, wait=30):
    """Send COUNT notifications; return what the websocket received, and
    anything that arrived after them (a duplicate)."""
    channel = f"poll_{uuid.uuid4().hex}"
    client = BusClient(server.websocket_url(), channel)
    try:
        assert server.wait_for_log(POLLING, timeout=90), server.log_text()[-3000:]
        server.send_notifications(channel, COUNT, NOTIFICATION)
        payloads = client.receive(NOTIFICATION, COUNT, timeout=wait)
        extra = client.receive(NOTIFICATION, 1, timeout=3)
    finally:
        client.close()
    return [p["n"] for p in payloads], extra


def direct_backends(sandbox):
    """Backends of user odoo that PgBouncer did not open."""
    pooled_ports = sandbox.pgbouncer.server_local_ports()
    rows = sandbox.postgres.execute(
        "SELECT application_name, client_port FROM pg_stat_activity "
        "WHERE usename = 'odoo' AND backend_type = 'client backend'"
    )
    return rows, [row for row in rows if row[1] not in pooled_ports]


@pytest.mark.every_series
@pytest.mark.parametrize("workers", [0, 2], ids=["threaded", "prefork"])
def test_poll_mode_delivers_through_pgbouncer_alone(sandbox, odoo_server, workers):
    server = odoo_server(
        listener_params=None,
        workers=workers,
        extra_options={"imdispatcher_mode": "poll"},
    )
    received, extra = delivered_once(server)
    assert received == list(range(COUNT))
    assert extra == []
    rows, direct = direct_backends(sandbox)
    assert rows, "Odoo holds no connection at all: the check proves nothing"
    assert direct == []
    log = server.log_text()
    assert errors_in(log) == []
    assert "Bus.loop listen imbus" not in log
    assert "no imdispatcher_db_* option is set" not in log
    assert "Traceback" not in log


@pytest.mark.parametrize("workers", [0, 2], ids=["threaded", "prefork"])
def test_one_bad_setting_leaves_poll_mode_polling(sandbox, odoo_server, workers):
    """A typo in another option must not send the bus back to LISTEN
    through the pooler, where it hears nothing."""
    server = odoo_server(
        listener_params=None,
        workers=workers,
        extra_options={
            "imdispatcher_mode": "poll",
            "imdispatcher_reconnect_max_delay": "3O",
        },
    )
    received, extra = delivered_once(server)
    assert received == list(range(COUNT))
    assert extra == []
    errors = errors_in(server.log_text())
    assert errors, "the bad value was not reported"
    for line in errors:
        assert "imdispatcher_reconnect_max_delay = '3O'" in line, line
        assert "the other options stand" in line, line
    assert "Traceback" not in server.log_text()


def test_poll_mode_health_says_poll(sandbox, odoo_server):
    server = odoo_server(
        listener_params=None, extra_options={"imdispatcher_mode": "poll"}
    )
    _status, body = wait_for_status(server.http_port, 200)
    assert json.loads(body) == {"status": "pass", "state": "idle"}
    client = BusClient(server.websocket_url(), f"poll_{uuid.uuid4().hex}")
    try:
        assert server.wait_for_log(POLLING, timeout=30)
        _status, body = wait_for_status(server.http_port, 200)
        assert json.loads(body) == {"status": "pass", "state": "polling"}
    finally:
        client.close()
    assert "every 250 ms (imdispatcher_mode poll)" in server.log_text()
    opener = admin_opener(server.http_port, server.dbname)
    status, body = get(server.http_port, HEALTH + "/details", opener)
    details = json.loads(body)
    assert status == 200, details
    assert details["mode"] == "poll"
    assert details["mode_reason"] == "configured (config imdispatcher_mode)"
    assert details["last_poll_age_s"] is not None
    assert details["route"] is None


@pytest.mark.every_series
def test_auto_mode_behind_the_pooler_switches_to_polling(sandbox, odoo_server):
    server = odoo_server(
        listener_params={"host": "127.0.0.1", "port": sandbox.pgbouncer.port},
        extra_options={
            "imdispatcher_mode": "auto",
            "imdispatcher_selfcheck_timeout": 2,
        },
    )
    received, extra = delivered_once(server, wait=40)
    assert received == list(range(COUNT))
    assert extra == []
    log = server.log_text()
    switches = [line for line in log.splitlines() if SWITCHED in line]
    assert len(switches) == 1, switches
    assert " INFO " in switches[0]
    assert "3 checks in a row" in switches[0]
    assert "tries the listener route again every 300 s" in switches[0]
    assert errors_in(log) == []
    assert "lost its connection" not in log


def auto_mode_server(odoo_server, proxy, workers):
    """(server, channel, subscribed client) in auto mode, its listener route
    through ``proxy``, with checks and retries quick enough for a test."""
    server = odoo_server(
        listener_params={"host": "127.0.0.1", "port": proxy.port},
        workers=workers,
        extra_options={
            "imdispatcher_mode": "auto",
            "imdispatcher_selfcheck_timeout": 2,
            "imdispatcher_heartbeat_interval": 5,
            "imdispatcher_listen_retry_interval": 3,
        },
    )
    channel = f"auto_{uuid.uuid4().hex}"
    return server, channel, BusClient(server.websocket_url(), channel)


@pytest.mark.parametrize("workers", [0, 2], ids=["threaded", "prefork"])
def test_auto_mode_polls_while_the_route_is_deaf_and_listens_once_it_hears(
    sandbox, odoo_server, workers
):
    """Deaf at start (the route leads to the transaction-mode PgBouncer),
    then fixed (re-pointed at PostgreSQL) without a restart: every
    notification arrives once, across both switches."""
    proxy = TcpProxy(sandbox.pgbouncer.port).start()
    try:
        server, channel, client = auto_mode_server(odoo_server, proxy, workers)
        try:
            assert server.wait_for_log(POLLING, timeout=90), server.log_text()[-3000:]
            server.send_notifications(channel, COUNT, NOTIFICATION)
            polled = client.receive(NOTIFICATION, COUNT, timeout=30)
            assert [p["n"] for p in polled] == list(range(COUNT))
            sender = threading.Thread(
                target=server.send_notifications,
                args=(channel, STREAM, NOTIFICATION + "_stream"),
                kwargs={"pause": 0.1},
            )
            sender.start()
            proxy.retarget(sandbox.postgres.port)
            assert server.wait_for_log(LISTENING_AGAIN, timeout=60)
            streamed = client.receive(NOTIFICATION + "_stream", STREAM, timeout=60)
            sender.join()
            assert [p["n"] for p in streamed] == list(range(STREAM))
            assert client.receive(NOTIFICATION + "_stream", 1, timeout=3) == []
            # a check passed since: the self-check, or (after a slow one, which
            # auto mode does not log as a failure) a heartbeat
            wait_for_details(
                server,
                lambda details: details["mode"] == "listen"
                and (details["last_check"] or {}).get("ok"),
            )
            server.send_notifications(channel, COUNT, NOTIFICATION + "_after")
            after = client.receive(NOTIFICATION + "_after", COUNT, timeout=30)
            assert [p["n"] for p in after] == list(range(COUNT))
        finally:
            client.close()
    finally:
        proxy.stop()
    log = server.log_text()
    assert log.count(LISTENING_AGAIN_TEXT) == 1
    assert errors_in(log) == []


def wait_for_details(server, predicate, timeout=60):
    """The admin's health details of the dispatcher once ``predicate`` holds."""
    port = server.gevent_port if server.workers else server.http_port
    opener = admin_opener(port, server.dbname)
    deadline = time.monotonic() + timeout
    while True:
        status, body = get(port, HEALTH + "/details", opener)
        details = json.loads(body)
        if predicate(details):
            return details
        assert time.monotonic() < deadline, (status, details)
        time.sleep(0.5)


def test_the_dispatchers_poller_survives_a_pgbouncer_restart(sandbox, odoo_server):
    """Core's dispatcher thread runs the addon's DispatcherPoller: it loses
    db_host, says so, polls again once PgBouncer is back, and a websocket
    subscribed after that gets what is sent, from the poller alone (it
    never reconnected, so core replayed nothing). Its metrics count the
    polls, the failed attempts and the reconnect."""
    server = odoo_server(
        listener_params=None,
        extra_options={
            "imdispatcher_mode": "poll",
            "bus_alt_connection_metrics_allow": "127.0.0.0/8",
        },
    )
    first = BusClient(server.websocket_url(), f"poll_{uuid.uuid4().hex}")
    try:
        assert server.wait_for_log(POLLING, timeout=90), server.log_text()[-3000:]
        since = len(server.log_text())
        sandbox.pgbouncer.stop()
        try:
            assert server.wait_for_log(
                r"bus poller (lost its connection|cannot connect)",
                timeout=60,
                start=since,
            )
        finally:
            sandbox.pgbouncer.start()
        assert server.wait_for_log(r"bus poller back on", timeout=90, start=since)
    finally:
        first.close()
    channel = f"poll_{uuid.uuid4().hex}"
    client = BusClient(server.websocket_url(), channel)
    try:
        server.send_notifications(channel, COUNT, NOTIFICATION)
        received = client.receive(NOTIFICATION, COUNT, timeout=60)
    finally:
        client.close()
    assert [p["n"] for p in received] == list(range(COUNT))
    assert client.reconnects == 0
    got = samples(get(server.http_port, "/bus_alt_connection/metrics")[1])

    def counter(name):
        return got[f"bus_alt_connection_{name}", frozenset()]

    assert counter("poll_queries_total") > 0
    assert counter("listener_failed_attempts_total") >= 1
    assert counter("listener_reconnects_total") >= 1
    assert counter("listener_connects_total") >= 2
    assert "Traceback" not in server.log_text()


def transactions(sandbox, dbname):
    rows = sandbox.postgres.execute(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database "
        "WHERE datname = %s",
        (dbname,),
    )
    return rows[0][0]


def test_poll_mode_costs_no_query_once_no_websocket_is_subscribed(sandbox, odoo_server):
    """The dispatcher keeps running after the last websocket leaves; it
    must stop polling. PostgreSQL flushes a backend's counts within 10 s."""
    server = odoo_server(
        listener_params=None, extra_options={"imdispatcher_mode": "poll"}
    )
    received, _extra = delivered_once(server)
    assert received == list(range(COUNT))
    time.sleep(12)
    before = transactions(sandbox, server.dbname)
    time.sleep(12)
    # 4 polls a second would be about 48
    assert transactions(sandbox, server.dbname) - before < 5


@pytest.mark.parametrize("workers", [0, 2], ids=["threaded", "prefork"])
def test_auto_mode_polls_once_a_route_that_worked_is_cut(sandbox, odoo_server, workers):
    """The route works, then its host goes away for good (the relay closes
    its connections and refuses new ones) while db_host answers: the bus
    polls after imdispatcher_auto_failed_checks failed connects, and listens
    again once the route is back. The websocket never reconnects, so what
    it receives came from the dispatcher, not from core's replay."""
    proxy = TcpProxy(sandbox.postgres.port).start()
    server, channel, client = auto_mode_server(odoo_server, proxy, workers)
    try:
        assert server.wait_for_log(r"bus listener self-check passed", timeout=90)
        server.send_notifications(channel, COUNT, NOTIFICATION)
        listened = client.receive(NOTIFICATION, COUNT, timeout=30)
        assert [p["n"] for p in listened] == list(range(COUNT))
        proxy.stop()
        assert server.wait_for_log(re.escape(SWITCHED), timeout=120), server.log_text()[
            -3000:
        ]
        assert server.wait_for_log(POLLING, timeout=60)
        server.send_notifications(channel, COUNT, NOTIFICATION + "_cut")
        polled = client.receive(NOTIFICATION + "_cut", COUNT, timeout=60)
        assert [p["n"] for p in polled] == list(range(COUNT))
        proxy = TcpProxy(sandbox.postgres.port, port=proxy.port).start()
        assert server.wait_for_log(LISTENING_AGAIN, timeout=90)
        back_at = server.log_text().index(LISTENING_AGAIN_TEXT)
        assert server.wait_for_log(
            r"bus listener self-check passed", timeout=60, start=back_at
        )
        server.send_notifications(channel, COUNT, NOTIFICATION + "_back")
        back = client.receive(NOTIFICATION + "_back", COUNT, timeout=30)
        assert [p["n"] for p in back] == list(range(COUNT))
        assert client.reconnects == 0
    finally:
        client.close()
        proxy.stop()
    log = server.log_text()
    switches = [line for line in log.splitlines() if SWITCHED in line]
    assert len(switches) == 1, switches
    assert "failed 3 connect attempts in a row" in switches[0]


# --- one database's poll stuck (issue 19, item 6) ---------------------------

SLOW = "did not answer within"


@pytest.fixture(scope="session")
def other_bus_database(sandbox, odoo_tree, odoo_database, odoo_workdir):
    """A second Odoo database with ``bus``, served with the first."""
    return create_bus_database(
        odoo_tree,
        sandbox.postgres,
        os.path.join(odoo_workdir, "init-other"),
        f"{odoo_database}_other",
    )


def session_cookie(server, dbname):
    """A session cookie on ``dbname`` (several databases: no monodb)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=60)
    try:
        connection.request("GET", f"/web/login?db={dbname}")
        response = connection.getresponse()
        response.read()
        cookie = response.getheader("Set-Cookie")
    finally:
        connection.close()
    assert cookie, f"no session cookie for {dbname}"
    return cookie.split(";", 1)[0]


class DatabaseBusClient(BusClient):
    """A websocket on a given database, through its session cookie."""

    def __init__(self, url, channel, cookie):
        self.cookie = cookie
        super().__init__(url, channel)

    def _connect(self):
        import websocket

        connection = websocket.create_connection(
            self.url, timeout=self.timeout, cookie=self.cookie
        )

        def recv():
            # a ping returns too, so that receive() keeps to its timeout on
            # a websocket that Odoo pings while nothing arrives
            opcode, data = connection.recv_data(control_frame=True)
            return data.decode() if opcode == websocket.ABNF.OPCODE_TEXT else ""

        connection.recv = recv
        self.connection = connection
        subscribe = {"channels": [self.channel], "last": self.last_id}
        self.connection.send(json.dumps({"event_name": "subscribe", "data": subscribe}))


def insert_notification(cursor, dbname, channel, n):
    """What ``_sendone`` stores, written by SQL (one shell is per database)."""
    cursor.execute(
        "INSERT INTO bus_bus (channel, message, create_date) "
        "VALUES (%s, %s, now() at time zone 'UTC')",
        (
            json.dumps([dbname, channel], separators=(",", ":")),
            json.dumps({"type": NOTIFICATION, "payload": {"n": n}}),
        ),
    )


@pytest.mark.parametrize("workers", [0, 2], ids=["threaded", "prefork"])
def test_a_database_whose_bus_is_locked_does_not_stall_the_others(
    sandbox, odoo_server, odoo_database, other_bus_database, workers
):
    locked = other_bus_database
    server = odoo_server(
        listener_params=None,
        workers=workers,
        extra_options={
            "imdispatcher_mode": "poll",
            "dbfilter": f"^({odoo_database}|{locked})$",
        },
    )
    channels = {name: f"poll_{uuid.uuid4().hex}" for name in (odoo_database, locked)}
    clients = {
        name: DatabaseBusClient(
            server.websocket_url(), channel, session_cookie(server, name)
        )
        for name, channel in channels.items()
    }
    locker = psycopg2.connect(**sandbox.postgres.odoo_params(locked))
    try:
        assert server.wait_for_log(POLLING, timeout=90), server.log_text()[-3000:]
        # the second database is polled (its websocket subscribed) before
        # its bus is locked: a loaded machine may subscribe it late
        with locker.cursor() as cr:
            insert_notification(cr, locked, channels[locked], -1)
        locker.commit()
        assert clients[locked].receive(NOTIFICATION, 1, timeout=90) == [{"n": -1}]
        with locker.cursor() as cr:
            cr.execute("LOCK TABLE bus_bus IN ACCESS EXCLUSIVE MODE")
            # committed with the lock's release: the stuck poll's late answer
            insert_notification(cr, locked, channels[locked], 0)
        server.send_notifications(channels[odoo_database], COUNT, NOTIFICATION)
        received = clients[odoo_database].receive(NOTIFICATION, COUNT, timeout=60)
        assert [p["n"] for p in received] == list(range(COUNT))
        assert server.wait_for_log(
            f"bus poll of database {locked} {SLOW}", 90
        ), server.log_text()[-4000:]
        locker.commit()
        late = clients[locked].receive(NOTIFICATION, 1, timeout=60)
        assert late == [{"n": 0}]
    finally:
        locker.close()
        for client in clients.values():
            client.close()
    log = server.log_text()
    slow = [line for line in log.splitlines() if SLOW in line]
    assert len([line for line in slow if f"database {locked} " in line]) == 1, slow
    assert errors_in(log) == []
