"""Faults under a real Odoo server with the addon, and a websocket client.

Needs ODOO_PATH and ODOO_PYTHON; skipped otherwise. Each test asserts that
the listener comes back and that every notification committed during the
fault reaches the websocket, live or through the catch-up.

What arrives after a fault must come from the listener. The test client,
like Odoo's, subscribes again with the id of the last notification it got
when its websocket closes, and core then sends every row it missed: a deaf
listener would pass. So after a fault a self-check or a heartbeat must pass
(the listener hears what Odoo sends), and what is sent must reach the
websocket without a reconnect (one that a dead pooled connection causes
right after the fault is let pass, see ``settled``).
``test_a_deaf_listener_after_a_fault_is_caught`` shows that these
assertions catch a deaf listener.
"""

import os
import uuid

import pytest

from tools.odoo_harness import BusClient, OdooServer, create_bus_database
from tools.pg_sandbox import Sandbox
from tools.tcp_proxy import TcpProxy

from .test_odoo_bus_dispatcher import (
    COUNT,
    LISTENING,
    NOTIFICATION,
    direct_route,
    errors_in,
)

#: heartbeats every 2 s; each waits production's 5 s, which a loaded
#: machine keeps to (a 2 s wait could miss and cut a healthy listener)
FAST_WATCH = {"imdispatcher_heartbeat_interval": 2, "imdispatcher_selfcheck_timeout": 5}
#: the listener heard a NOTIFY sent through db_host: the self-check after a
#: connect, or (after a slow, failed one) the heartbeat that passed next
HEARD = r"bus listener (self-check|heartbeat) passed"
#: what an event may take on a loaded machine; a pass never waits that long
LOADED = 60


@pytest.fixture
def proxy(sandbox):
    running = TcpProxy(sandbox.postgres.port)
    yield running
    running.stop()


def session_alias_route(sandbox):
    """The listener through PgBouncer's session-mode alias of postgres."""
    return {
        "host": "127.0.0.1",
        "port": sandbox.pgbouncer.port,
        "name": "postgres_listen",
    }


def subscribe(server):
    channel = f"fault_{uuid.uuid4().hex}"
    client = BusClient(server.websocket_url(), channel)
    assert server.wait_for_log(LISTENING, timeout=LOADED)
    return client, channel


def heard(server, since=0, timeout=LOADED):
    """Whether a self-check or heartbeat passed after log offset ``since``."""
    return server.wait_for_log(HEARD, timeout=timeout, start=since)


def log_end(server):
    """The log's length now: what is logged later starts there."""
    return len(server.log_text())


def settled(server, client, channel, attempts=5):
    """Whether a notification reached ``client`` live: sent after its
    websocket last reconnected, received without another reconnect.

    A fault can leave Odoo's pool with dead connections; the first dispatch
    that takes one closes the websocket (core's TRY_LATER), and the client
    reconnects. Each marker is a type of its own, so that one replayed
    after a reconnect cannot pass for a later marker.
    """
    for attempt in range(attempts):
        marker = f"{NOTIFICATION}_marker{attempt}"
        before = client.reconnects
        server.send_notifications(channel, 1, marker)
        if client.receive(marker, 1, timeout=LOADED) and client.reconnects == before:
            return True
    return False


def delivered_by_the_listener(server, client, channel, since, heard_within=LOADED):
    """Send COUNT notifications; the payloads, asserting that they came from
    the listener, which heard a check after the fault (logged after
    ``since``), and not from core's replay to a reconnected websocket."""
    assert heard(
        server, since, heard_within
    ), "no self-check or heartbeat passed after the fault"
    assert settled(
        server, client, channel
    ), "nothing reached the websocket live after the fault"
    reconnects = client.reconnects
    received = send_and_receive(server, client, channel)
    assert client.reconnects == reconnects, (
        "the websocket reconnected: core replayed what it missed, whatever "
        "the listener heard"
    )
    return received


def send_and_receive(server, client, channel, wait=LOADED):
    server.send_notifications(channel, COUNT, NOTIFICATION)
    return client.receive(NOTIFICATION, COUNT, timeout=wait)


def test_route_through_transaction_pooler_is_flagged(sandbox, odoo_server):
    server = odoo_server(
        listener_params={"host": "127.0.0.1", "port": sandbox.pgbouncer.port}
    )
    client, _channel = subscribe(server)
    try:
        # the self-check after the connect finds it, not a later heartbeat
        assert server.wait_for_log(r"bus listener self-check failed", timeout=LOADED)
    finally:
        client.close()
    errors = errors_in(server.log_text())
    assert len(errors) == 1, errors
    assert f"127.0.0.1:{sandbox.pgbouncer.port}/postgres" in errors[0]
    assert "transaction-mode pooler" in errors[0]


def test_session_mode_alias_passes_the_self_check(sandbox, odoo_server):
    server = odoo_server(listener_params=session_alias_route(sandbox))
    client, channel = subscribe(server)
    try:
        assert heard(server)
        assert len(send_and_receive(server, client, channel)) == COUNT
    finally:
        client.close()
    assert errors_in(server.log_text()) == []


def test_route_to_another_database_is_flagged(sandbox, odoo_server, odoo_database):
    server = odoo_server(
        listener_params={
            "host": "127.0.0.1",
            "port": sandbox.postgres.port,
            "name": odoo_database,
        }
    )
    client, _channel = subscribe(server)
    try:
        assert server.wait_for_log(r"bus listener self-check failed", timeout=LOADED)
    finally:
        client.close()
    assert f"reaches database '{odoo_database}'" in server.log_text()


@pytest.mark.parametrize("workers", [0, 2], ids=["threaded", "prefork"])
def test_postgresql_restart(sandbox, odoo_server, workers):
    server = odoo_server(listener_params=direct_route(sandbox), workers=workers)
    client, channel = subscribe(server)
    try:
        assert heard(server)
        since = log_end(server)
        sandbox.postgres.restart()
        assert server.wait_for_log(r"bus listener back on", timeout=LOADED, start=since)
        received = delivered_by_the_listener(server, client, channel, since)
        assert len(received) == COUNT
    finally:
        client.close()
    assert "Traceback" not in server.log_text()


@pytest.mark.parametrize("workers", [0, 2], ids=["threaded", "prefork"])
def test_listener_backend_terminated(sandbox, odoo_server, workers):
    server = odoo_server(listener_params=direct_route(sandbox), workers=workers)
    client, channel = subscribe(server)
    try:
        assert heard(server)
        since = log_end(server)
        killed = sandbox.postgres.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name LIKE 'odoo-bus-listener-%'"
        )
        assert killed == [(True,)]
        assert server.wait_for_log(r"bus listener back on", timeout=LOADED, start=since)
        received = delivered_by_the_listener(server, client, channel, since)
        assert len(received) == COUNT
    finally:
        client.close()


def test_unreachable_at_start_then_reachable_catches_up(sandbox, odoo_server, proxy):
    server = odoo_server(listener_params={"host": "127.0.0.1", "port": proxy.port})
    client, channel = subscribe(server)
    try:
        assert server.wait_for_log(r"bus listener cannot connect", timeout=LOADED)
        # committed while no listener exists: their NOTIFY reaches nobody
        server.send_notifications(channel, COUNT, NOTIFICATION)
        proxy.start()
        received = client.receive(NOTIFICATION, COUNT, timeout=LOADED)
    finally:
        client.close()
    assert [payload["n"] for payload in received] == list(range(COUNT))
    # the listener's catch-up woke the websocket, not a reconnect of its own
    assert client.reconnects == 0
    assert "after" in server.log_text().split("bus listener connected")[1]


@pytest.mark.every_series
@pytest.mark.parametrize("workers", [0, 2], ids=["threaded", "prefork"])
def test_cut_route_catches_up_what_was_sent_meanwhile(
    sandbox, odoo_server, proxy, workers
):
    proxy.start()
    server = odoo_server(
        listener_params={"host": "127.0.0.1", "port": proxy.port}, workers=workers
    )
    client, channel = subscribe(server)
    try:
        assert heard(server)
        since = log_end(server)
        proxy.stop()
        assert server.wait_for_log(r"lost its connection", timeout=LOADED)
        server.send_notifications(channel, COUNT, NOTIFICATION)
        proxy.start()
        assert server.wait_for_log(r"bus listener back on", timeout=LOADED)
        received = client.receive(NOTIFICATION, COUNT, timeout=LOADED)
        # the listener's catch-up woke the websocket, not a reconnect of its
        # own; and the listener hears again
        assert client.reconnects == 0
        assert heard(server, since)
        after = delivered_by_the_listener(server, client, channel, since)
    finally:
        client.close()
    assert [payload["n"] for payload in received] == list(range(COUNT))
    assert len(after) == COUNT


@pytest.mark.parametrize("workers", [0, 2], ids=["threaded", "prefork"])
def test_silent_route_is_caught_by_the_heartbeat(sandbox, odoo_server, proxy, workers):
    proxy.start()
    server = odoo_server(
        listener_params={"host": "127.0.0.1", "port": proxy.port},
        extra_options=FAST_WATCH,
        workers=workers,
    )
    client, channel = subscribe(server)
    try:
        assert heard(server)
        proxy.freeze()
        assert server.wait_for_log(r"bus listener heartbeat missed", timeout=LOADED)
        since = log_end(server)
        proxy.thaw()
        received = delivered_by_the_listener(server, client, channel, since)
        assert len(received) == COUNT
    finally:
        client.close()


def test_pgbouncer_restart_under_a_session_mode_route(sandbox, odoo_server):
    server = odoo_server(listener_params=session_alias_route(sandbox))
    client, channel = subscribe(server)
    try:
        assert heard(server)
        since = log_end(server)
        sandbox.pgbouncer.stop()
        assert server.wait_for_log(r"lost its connection", timeout=LOADED)
        sandbox.pgbouncer.start()
        assert server.wait_for_log(r"bus listener back on", timeout=LOADED, start=since)
        received = delivered_by_the_listener(server, client, channel, since)
        assert len(received) == COUNT
    finally:
        client.close()


@pytest.fixture
def failover_site(odoo_tree, odoo_workdir):
    """A primary, its streaming standby and a PgBouncer, for this test only."""
    with Sandbox() as site:
        standby = site.postgres.make_standby(os.path.join(site.workdir, "standby"))
        try:
            dbname = create_bus_database(
                odoo_tree,
                site.postgres,
                os.path.join(odoo_workdir, "failover-init"),
                "bus_failover",
            )
            yield site, standby, dbname
        finally:
            standby.stop(mode="immediate")


def test_listener_follows_a_promoted_standby(failover_site, odoo_tree, odoo_workdir):
    site, standby, dbname = failover_site
    server = OdooServer(
        *odoo_tree,
        os.path.join(odoo_workdir, "failover"),
        dbname,
        site.pgbouncer.odoo_params(),
        listener_params={
            "host": "127.0.0.1,127.0.0.1",
            "port": f"{site.postgres.port},{standby.port}",
            "target_session_attrs": "read-write",
        },
    ).start()
    try:
        client, channel = subscribe(server)
        assert heard(server)
        since = log_end(server)
        site.postgres.stop()
        standby.promote()
        site.pgbouncer.retarget(standby)
        assert server.wait_for_log(r"bus listener back on", timeout=LOADED, start=since)
        received = delivered_by_the_listener(server, client, channel, since)
        assert len(received) == COUNT
        client.close()
    finally:
        server.stop()


def test_route_to_a_standby_is_flagged(failover_site, odoo_tree, odoo_workdir):
    site, standby, dbname = failover_site
    server = OdooServer(
        *odoo_tree,
        os.path.join(odoo_workdir, "standby-route"),
        dbname,
        site.pgbouncer.odoo_params(),
        listener_params={"host": "127.0.0.1", "port": standby.port},
    ).start()
    client = None
    try:
        client, _channel = subscribe(server)
        # a standby refuses LISTEN: found before core tries, so no "bad
        # query" ERROR of core's at every retry
        assert server.wait_for_log(
            r"still cannot connect \(attempt 3\)", timeout=LOADED
        )
    finally:
        if client is not None:
            client.close()
        server.stop()
    errors = errors_in(server.log_text())
    assert len(errors) == 1, errors
    # 18.0+ cursors fail already ("cannot set transaction read-write mode
    # during recovery"); on 16.0/17.0 the addon's own check answers
    assert "during recovery" in errors[0] or "pg_is_in_recovery()" in errors[0]
    assert "the route leads to a standby" in errors[0]
    assert "Traceback" not in server.log_text()
    assert "imdispatcher_db_host='127.0.0.1'" in errors[0]


def test_a_deaf_listener_after_a_fault_is_caught(sandbox, odoo_server, proxy):
    """What the tests above assert after a fault fails on a deaf listener.

    The route leads to PostgreSQL through a proxy. PostgreSQL restarts, and
    meanwhile the proxy is pointed at the transaction-mode PgBouncer: the
    listener comes back on, LISTENs, and hears nothing.
    """
    proxy.start()
    server = odoo_server(listener_params={"host": "127.0.0.1", "port": proxy.port})
    client, channel = subscribe(server)
    try:
        assert heard(server)
        since = log_end(server)
        proxy.retarget(sandbox.pgbouncer.port)
        sandbox.postgres.restart()
        assert server.wait_for_log(r"bus listener back on", timeout=LOADED, start=since)
        # the self-check after the reconnect is over, and found it deaf
        assert server.wait_for_log(
            r"bus listener self-check failed", timeout=LOADED, start=since
        )
        with pytest.raises(AssertionError, match="no self-check or heartbeat"):
            delivered_by_the_listener(server, client, channel, since, heard_within=5)
        # nothing heard live: either nothing arrives, or it came through a
        # reconnect, which delivered_by_the_listener refuses too
        received = send_and_receive(server, client, channel, wait=20)
        assert len(received) < COUNT or client.reconnects > 0
    finally:
        client.close()
