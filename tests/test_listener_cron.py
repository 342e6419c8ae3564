"""The cron trigger connection on a real PostgreSQL and PgBouncer.

A small runner stands for core's cron runner: it selects on the
connection, polls it, and keeps the payloads (database names) it reads.
"""

import contextlib
import logging
import select
import tempfile
import threading
import time

import psycopg2
import pytest

from bus_alt_connection.lib.listener.cron import TriggerConnection
from bus_alt_connection.lib.listener.watch import is_token
from bus_alt_connection.lib.route.config import Settings, resolve_cron_route
from tools.notify_flood import flood
from tools.tcp_proxy import TcpProxy

LOGGER = "bus_alt_connection"
#: what an event may take on a loaded machine; a pass never waits that long
LOADED_MACHINE_WAIT = 60
#: a self-check timeout for routes that hear: a loaded machine keeps to it
HEARING_TIMEOUT = 10.0


def cron_route(sandbox, port):
    pgbouncer = sandbox.pgbouncer
    return resolve_cron_route(
        {
            "db_host": "127.0.0.1",
            "db_port": pgbouncer.port,
            "db_user": "odoo",
            "db_password": pgbouncer.odoo_params()["password"],
            "cron_db_port": str(port),
        },
        environ={},
    )


def through_pgbouncer(sandbox):
    def execute(query, params=None):
        connection = psycopg2.connect(**sandbox.pgbouncer.odoo_params())
        try:
            with connection, connection.cursor() as cr:
                cr.execute(query, params)
                return cr.fetchall() if cr.description else []
        finally:
            connection.close()

    return execute


def notify(sandbox, channel, payload):
    through_pgbouncer(sandbox)("SELECT pg_notify(%s, %s)", (channel, payload))


class Runner:
    """Waits like core's cron runner: select (long), poll, read the payloads."""

    def __init__(self, connection):
        self.connection = connection
        self.payloads = []
        self.wakes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            with contextlib.suppress(OSError, ValueError):
                select.select([self.connection], [], [], 30)
            if self._stop.is_set():
                return
            self.wakes += 1
            self.connection.poll()
            self.payloads.extend(n.payload for n in self.connection.notifies)
            self.connection.notifies.clear()

    def wait_for(self, payload, timeout=LOADED_MACHINE_WAIT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if payload in self.payloads:
                return True
            time.sleep(0.05)
        return False

    def hears(self, sandbox, payload):
        """True when ``payload``, sent through PgBouncer, reaches the runner."""
        notify(sandbox, "cron_trigger", payload)
        return self.wait_for(payload)

    def stop(self):
        self._stop.set()
        self._thread.join(1)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()


@pytest.fixture
def trigger(sandbox):
    """Factory: (connection, cursor) on a route, LISTEN done as core does."""
    made = []

    def make(port, timeout=HEARING_TIMEOUT, **settings):
        connection = TriggerConnection(
            cron_route(sandbox, port),
            "cron-test",
            Settings(selfcheck_timeout=timeout, reconnect_max_delay=1.0, **settings),
            send_notify=lambda payload: notify(sandbox, "cron_trigger", payload),
            explain_deafness=lambda: "explained",
            fallback_execute=through_pgbouncer(sandbox),
        )
        connection.start()
        cursor = connection  # core's cursor is the connection, as cr._cnx
        cursor.execute("SELECT pg_is_in_recovery()")
        in_recovery = cursor.fetchone()[0]
        cursor.execute("LISTEN cron_trigger")
        cursor.commit()
        made.append(cursor)
        return connection, in_recovery

    yield make
    for cursor in made:
        cursor.close()


def wait_until(predicate, timeout=LOADED_MACHINE_WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_direct_route_hears_triggers_sent_through_pgbouncer(sandbox, trigger, caplog):
    caplog.set_level(logging.INFO, LOGGER)
    connection, in_recovery = trigger(sandbox.postgres.port)
    assert in_recovery is False
    assert wait_until(lambda: connection.watch.record.last_check_passed is not None)
    assert connection.watch.record.last_check_passed is True
    with Runner(connection) as runner:
        assert runner.hears(sandbox, "db_a")
    assert not any(is_token(p) for p in runner.payloads)
    assert "(cron-test) self-check passed" in caplog.text


def test_route_through_transaction_pooler_fails_the_self_check(
    sandbox, trigger, caplog
):
    caplog.set_level(logging.INFO, LOGGER)
    connection, _ = trigger(sandbox.pgbouncer.port, timeout=2.0)
    assert wait_until(lambda: connection.watch.record.last_check_passed is not None)
    assert connection.watch.record.last_check_passed is False
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "(cron-test) self-check failed" in errors[0].message
    assert "explained" in errors[0].message


def test_deaf_route_is_a_warning_when_expected(sandbox, trigger, caplog):
    """imdispatcher_mode = auto: a deaf route is a case the bus handles."""
    caplog.set_level(logging.INFO, LOGGER)
    connection, _ = trigger(sandbox.pgbouncer.port, timeout=1.0, mode="auto")
    assert wait_until(lambda: connection.watch.record.last_check_passed is not None)
    levels = [r.levelno for r in caplog.records if "check failed" in r.message]
    assert levels == [logging.WARNING]


def test_lost_connection_reconnects_and_wakes_the_runner(sandbox, trigger, caplog):
    caplog.set_level(logging.INFO, LOGGER)
    connection, _ = trigger(sandbox.postgres.port)
    runner = Runner(connection)
    try:
        backend = connection.backend_pid
        sandbox.postgres.execute("SELECT pg_terminate_backend(%s)", (backend,))
        assert wait_until(lambda: connection.state.connects == 2), caplog.text
        assert connection.backend_pid != backend
        assert runner.hears(sandbox, "db_after")
    finally:
        runner.stop()
    assert "lost its connection" in caplog.text
    assert "back on" in caplog.text
    assert "Traceback" not in caplog.text


def test_route_down_at_start_then_up(sandbox, trigger, caplog):
    caplog.set_level(logging.INFO, LOGGER)
    proxy = TcpProxy(sandbox.postgres.port)  # not started: nothing listens
    connection, in_recovery = trigger(proxy.port)
    # core's own query was answered through db_host
    assert in_recovery is False
    assert connection.backend_pid is None
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "cron_db_port='%d' (config cron_db_port)" % proxy.port in errors[0].message
    runner = Runner(connection)
    proxy.start()
    try:
        assert wait_until(lambda: connection.state.connects == 1)
        assert runner.hears(sandbox, "db_late")
    finally:
        runner.stop()
        proxy.stop()


def test_closed_connection_raises_like_psycopg2(sandbox, trigger):
    connection, _ = trigger(sandbox.postgres.port)
    connection.close()
    assert connection.closed.is_set()
    with pytest.raises(psycopg2.InterfaceError):
        connection.poll()


def test_listener_is_named_in_pg_stat_activity(sandbox, trigger):
    connection, _ = trigger(sandbox.postgres.port)
    rows = sandbox.postgres.execute(
        "SELECT application_name FROM pg_stat_activity WHERE pid = %s",
        (connection.backend_pid,),
    )
    assert rows[0][0].startswith("odoo-cron-listener-")


def test_self_check_waits_for_cores_listen(sandbox, caplog):
    """Core runs LISTEN after the connect; a self-check sent before it
    would be lost and report a healthy route as deaf."""
    caplog.set_level(logging.INFO, LOGGER)
    connection = TriggerConnection(
        cron_route(sandbox, sandbox.postgres.port),
        "cron-test",
        Settings(selfcheck_timeout=HEARING_TIMEOUT),
        send_notify=lambda payload: notify(sandbox, "cron_trigger", payload),
        fallback_execute=through_pgbouncer(sandbox),
    )
    connection.start()
    try:
        time.sleep(1.0)  # core is slow to send its LISTEN
        assert connection.watch.record.last_check_passed is None
        connection.execute("LISTEN cron_trigger")
        assert wait_until(lambda: connection.watch.record.last_check_passed is not None)
        assert connection.watch.record.last_check_passed is True
    finally:
        connection.close()
    assert "check failed" not in caplog.text


def test_a_flood_of_triggers_never_blocks_the_runner(sandbox, trigger):
    """A busy runner (a long job) reads nothing while 200,000 triggers, each
    its own transaction, arrive; once free, it must wake and poll at once,
    and later triggers must still reach it."""
    connection, _ = trigger(sandbox.postgres.port)
    flood(sandbox.postgres.odoo_params(), "cron_trigger", 200_000)
    notify(sandbox, "cron_trigger", "last_of_the_flood")
    time.sleep(2)  # the listener reads the flood while the runner is busy
    polled = threading.Thread(target=connection.poll, daemon=True)
    polled.start()
    polled.join(20)
    assert not polled.is_alive(), "the runner's poll() blocked after the flood"
    assert connection.notifies, "the flood never reached the runner"
    with Runner(connection) as runner:
        assert runner.hears(sandbox, "after_the_flood")


def test_a_frozen_route_is_caught_by_the_heartbeat(sandbox, trigger, caplog):
    """The cron listener shares the bus listener's watch: a route that stops
    carrying anything (a hung proxy or network) is cut at the next
    heartbeat and reconnected, instead of waiting for TCP keepalives."""
    caplog.set_level(logging.INFO, LOGGER)
    proxy = TcpProxy(sandbox.postgres.port)
    proxy.start()
    try:
        # heartbeats every second, but each waits as long as a loaded
        # machine may need: a slow answer is no ERROR
        connection, _ = trigger(proxy.port, heartbeat_interval=1.0)
        assert wait_until(lambda: connection.watch.record.last_check_passed)
        proxy.freeze()
        assert wait_until(lambda: "heartbeat missed" in caplog.text), caplog.text
        proxy.thaw()
        assert wait_until(lambda: connection.state.connects == 2)
        with Runner(connection) as runner:
            assert runner.hears(sandbox, "db_after_freeze")
    finally:
        proxy.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "cron trigger listener (cron-test) heartbeat missed" in w for w in warnings
    )
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_route_to_a_standby_is_refused_and_retried(sandbox, trigger, caplog):
    """Core skips its LISTEN when ``pg_is_in_recovery()`` says true; on the
    cron route that would silently end triggers though db_host is the
    primary. The route is refused as the bus route is: one ERROR, retries."""
    caplog.set_level(logging.INFO, LOGGER)
    standby = sandbox.postgres.make_standby(
        tempfile.mkdtemp(prefix="standby-", dir=sandbox.workdir)
    )
    try:
        connection, in_recovery = trigger(standby.port)
        assert in_recovery is False, "core's query must be answered by db_host"
        assert wait_until(lambda: connection.state.failed_attempts >= 2, 30)
        assert connection.backend_pid is None
        assert connection.state.connects == 0
    finally:
        standby.stop(mode="immediate")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "(cron-test) cannot connect" in errors[0].getMessage()
    assert "standby" in errors[0].getMessage()
    assert f":{standby.port}/" in errors[0].getMessage() or "cron_db_host" in (
        errors[0].getMessage()
    )
    assert "Traceback" not in caplog.text
