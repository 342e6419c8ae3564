"""A real Odoo server behind the transaction-mode PgBouncer.

Needs ODOO_PATH (a pristine Odoo 16.0-19.0 tree) and ODOO_PYTHON (its
virtualenv's interpreter); skipped otherwise.
"""

import re
import time
import uuid

import pytest

from tools.odoo_harness import BusClient

CHANNEL = "bus_alt_connection_test"  # one per test: the database is shared
NOTIFICATION = "bus_alt_test"
COUNT = 5
LISTENING = r"Bus\.loop listen imbus on db postgres"
SECRET = "s3cret-listener-pw-never-logged"


def direct_route(sandbox, **extra):
    route = {"host": "127.0.0.1", "port": sandbox.postgres.port}
    route.update(extra)
    return route


def delivered(server, wait=60):
    """Subscribe a websocket, send COUNT notifications from another Odoo
    process, and return how many reached the websocket."""
    channel = f"{CHANNEL}_{uuid.uuid4().hex}"
    client = BusClient(server.websocket_url(), channel)
    try:
        assert server.wait_for_log(LISTENING, timeout=60), "dispatcher never started"
        # let core's loop commit its LISTEN before the first notification
        time.sleep(1)
        server.send_notifications(channel, COUNT, NOTIFICATION)
        return client.receive(NOTIFICATION, COUNT, timeout=wait)
    finally:
        client.close()


def errors_in(log):
    return [line for line in log.splitlines() if " ERROR " in line]


@pytest.mark.every_series
@pytest.mark.parametrize("workers", [0, 2], ids=["threaded", "prefork"])
def test_addon_delivers_every_notification(sandbox, odoo_server, workers):
    server = odoo_server(listener_params=direct_route(sandbox), workers=workers)
    payloads = delivered(server)
    assert [p["n"] for p in payloads] == list(range(COUNT))
    log = server.log_text()
    assert "bus listener connected to 127.0.0.1:%d" % sandbox.postgres.port in log
    assert errors_in(log) == []


@pytest.mark.parametrize("workers", [0, 2], ids=["threaded", "prefork"])
def test_without_addon_nothing_arrives(sandbox, odoo_server, workers):
    server = odoo_server(with_addon=False, workers=workers)
    assert delivered(server, wait=10) == []


def test_only_the_listener_bypasses_pgbouncer(sandbox, odoo_server):
    server = odoo_server(listener_params=direct_route(sandbox))
    assert len(delivered(server)) == COUNT
    # HTTP requests and the NOTIFY side have run; every backend of user
    # odoo must come from PgBouncer, but the listener's.
    pooled_ports = sandbox.pgbouncer.server_local_ports()
    rows = sandbox.postgres.execute(
        "SELECT application_name, client_port FROM pg_stat_activity "
        "WHERE usename = 'odoo' AND backend_type = 'client backend'"
    )
    direct = [name for name, port in rows if port not in pooled_ports]
    assert len(rows) > len(direct)
    assert len(direct) == 1, rows
    assert direct[0].startswith("odoo-bus-listener-")


def test_bad_port_keeps_http_serving_with_one_error(sandbox, odoo_server):
    server = odoo_server(listener_params={"host": "127.0.0.1", "port": "abc"})
    client = BusClient(server.websocket_url(), CHANNEL)
    try:
        assert server.wait_for_log(r"imdispatcher_db_port = 'abc'", timeout=30)
        time.sleep(2)
        assert server.http_status("/web/binary/company_logo") == 200
    finally:
        client.close()
    errors = errors_in(server.log_text())
    assert len(errors) == 1, errors
    assert "imdispatcher_db_port = 'abc' (config imdispatcher_db_port)" in errors[0]
    assert "Traceback" not in server.log_text()


def test_unreachable_route_retries_without_traceback(sandbox, odoo_server):
    server = odoo_server(
        listener_params={"host": "127.0.0.1", "port": 1, "password": SECRET},
    )
    client = BusClient(server.websocket_url(), CHANNEL)
    try:
        assert server.wait_for_log(r"still cannot connect \(attempt 3\)", timeout=30)
        assert server.http_status("/web/binary/company_logo") == 200
    finally:
        client.close()
    log = server.log_text()
    errors = errors_in(log)
    assert len(errors) == 1, errors
    assert "imdispatcher_db_port='1'" in errors[0]
    assert "Traceback" not in log
    assert SECRET not in log


def test_wrong_password_names_the_option_and_never_shows_it(sandbox, odoo_server):
    server = odoo_server(listener_params=direct_route(sandbox, password=SECRET))
    client = BusClient(server.websocket_url(), CHANNEL)
    try:
        assert server.wait_for_log(r"bus listener cannot connect", timeout=30)
    finally:
        client.close()
    log = server.log_text()
    assert re.search(
        r"ERROR .*password authentication failed.*imdispatcher_db_password='\(set\)'",
        log,
    )
    assert SECRET not in log
    assert "Traceback" not in log


def test_unconfigured_addon_warns_once(sandbox, odoo_server):
    """Once, whatever the dispatcher goes through: it starts, listens
    through db_host (the PgBouncer), loses its connection and comes back."""
    server = odoo_server(listener_params=None)
    assert server.wait_for_log(r"no imdispatcher_db_\* option is set", timeout=60)
    client = BusClient(server.websocket_url(), CHANNEL)
    try:
        assert server.wait_for_log(r"bus listener connected", timeout=60)
        since = len(server.log_text())
        sandbox.pgbouncer.stop()
        sandbox.pgbouncer.start()
        assert server.wait_for_log(r"bus listener back on", timeout=60, start=since)
    finally:
        client.close()
    assert server.log_text().count("no imdispatcher_db_* option is set") == 1


def test_the_route_from_the_environment_wins_over_the_config(sandbox, odoo_server):
    """ODOO_IMDISPATCHER_DB_* in Odoo's environment: the config's port
    leads to the transaction-mode PgBouncer (deaf), the environment's to
    PostgreSQL; what arrives came through the environment's."""
    server = odoo_server(
        listener_params={"host": "127.0.0.1", "port": sandbox.pgbouncer.port},
        extra_options={"imdispatcher_db_host": "no-such-host.invalid"},
        environ={
            "ODOO_IMDISPATCHER_DB_HOST": "127.0.0.1",
            "ODOO_IMDISPATCHER_DB_PORT": str(sandbox.postgres.port),
        },
    )
    payloads = delivered(server)
    assert [p["n"] for p in payloads] == list(range(COUNT))
    log = server.log_text()
    assert (
        f"bus listener connected to 127.0.0.1:{sandbox.postgres.port}/postgres" in log
    )
    assert "host env ODOO_IMDISPATCHER_DB_HOST" in log
    assert "port env ODOO_IMDISPATCHER_DB_PORT" in log
    assert server.wait_for_log(r"bus listener self-check passed", timeout=60)
    assert errors_in(log) == []


def test_the_legacy_environment_names_still_work_with_a_warning(sandbox, odoo_server):
    server = odoo_server(
        listener_params=None,
        environ={
            "IMDISPATCHER_DB_HOST": "127.0.0.1",
            "IMDISPATCHER_DB_PORT": str(sandbox.postgres.port),
        },
    )
    payloads = delivered(server)
    assert [p["n"] for p in payloads] == list(range(COUNT))
    log = server.log_text()
    assert "port env IMDISPATCHER_DB_PORT" in log
    assert "rename it to ODOO_IMDISPATCHER_DB_PORT" in log
    assert "no imdispatcher_db_* option is set" not in log
    assert errors_in(log) == []


def test_a_listener_role_that_is_not_a_superuser_delivers(
    sandbox, odoo_server, plain_role
):
    name, password = plain_role
    server = odoo_server(
        listener_params=direct_route(sandbox, user=name, password=password)
    )
    payloads = delivered(server)
    assert [p["n"] for p in payloads] == list(range(COUNT))
    assert server.wait_for_log(r"bus listener self-check passed", timeout=60)
    rows = sandbox.postgres.execute(
        "SELECT usename FROM pg_stat_activity WHERE application_name = ANY(%s)",
        ([f"odoo-bus-listener-{pid}" for pid in server.pids()],),
    )
    assert rows == [(name,)]
    log = server.log_text()
    assert errors_in(log) == []
    assert password not in log
