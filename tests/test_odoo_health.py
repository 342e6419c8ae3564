"""The health endpoints through a running Odoo (ODOO_PATH, ODOO_PYTHON)."""

import http.cookiejar
import json
import time
import urllib.error
import urllib.request

from tools.pg_sandbox import LOOPBACK
from tools.tcp_proxy import TcpProxy

from .test_odoo_bus import SECRET, direct_route

HEALTH = "/bus_alt_connection/health"


def get(port, path, opener=None):
    opener = opener or urllib.request.build_opener()
    try:
        with opener.open(f"http://{LOOPBACK}:{port}{path}", timeout=20) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_for_status(port, status, timeout=60):
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = get(port, HEALTH)
        if seen[0] == status:
            return seen
        time.sleep(0.5)
    raise AssertionError(f"health stayed {seen}, expected {status}")


def admin_opener(port, dbname):
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "params": {"db": dbname, "login": "admin", "password": "admin"},
        }
    ).encode()
    request = urllib.request.Request(
        f"http://{LOOPBACK}:{port}/web/session/authenticate",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with opener.open(request, timeout=30) as response:
        assert "error" not in json.loads(response.read()), "admin login failed"
    return opener


def test_health_follows_the_listener_route(sandbox, odoo_server):
    """Healthy, 503 once the listener's way to PostgreSQL is cut, healthy again.

    The cut is the listener's route only (a proxy), so that Odoo itself
    keeps answering: with PostgreSQL down altogether, every request waits
    in PgBouncer (query_wait_timeout) and a monitor sees a timeout.
    """
    proxy = TcpProxy(sandbox.postgres.port).start()
    try:
        server = odoo_server(listener_params={"host": "127.0.0.1", "port": proxy.port})
        status, body = wait_for_status(server.http_port, 200)
        assert json.loads(body) == {"status": "pass"}
        proxy.stop()
        status, body = wait_for_status(server.http_port, 503)
        assert json.loads(body) == {"status": "fail"}
        proxy.start()
        wait_for_status(server.http_port, 200)
    finally:
        proxy.stop()


def test_health_follows_postgresql(sandbox, odoo_server):
    """Healthy, 503 while PostgreSQL is down, healthy again once it is back.

    While PostgreSQL is down Odoo's own requests wait in PgBouncer until its
    query_wait_timeout (5 s in the sandbox), then Odoo serves the endpoint
    without a database.
    """
    server = odoo_server(listener_params=direct_route(sandbox))
    wait_for_status(server.http_port, 200)
    sandbox.postgres.stop()
    try:
        status, body = wait_for_status(server.http_port, 503)
        assert json.loads(body) == {"status": "fail"}
    finally:
        sandbox.postgres.start()
    wait_for_status(server.http_port, 200)


def test_details_for_admins_only(sandbox, odoo_server, odoo_database):
    server = odoo_server(
        listener_params={
            "host": "127.0.0.1",
            "port": sandbox.postgres.port,
            "password": sandbox.postgres.odoo_params()["password"],
        }
    )
    wait_for_status(server.http_port, 200)
    status, body = get(server.http_port, HEALTH + "/details")
    assert status != 200 or "route" not in body  # anonymous: login page
    opener = admin_opener(server.http_port, odoo_database)
    status, body = get(server.http_port, HEALTH + "/details", opener)
    assert status == 200
    details = json.loads(body)
    assert details["connected"] is True
    assert details["route"]["port"]["value"] == str(sandbox.postgres.port)
    assert details["route"]["password"]["value"] == "(set)"
    assert sandbox.postgres.odoo_params()["password"] not in body
    assert details["last_check"]["ok"] is True
    # the self-check's notification went through core's loop
    assert details["last_notification_age_s"] is not None
    assert SECRET not in body


def test_prefork_answers_from_the_gevent_worker(sandbox, odoo_server):
    server = odoo_server(
        listener_params={"host": "127.0.0.1", "port": sandbox.postgres.port},
        workers=2,
    )
    wait_for_status(server.gevent_port, 200)
    status, body = get(server.http_port, HEALTH)
    assert status == 503  # an HTTP worker runs no dispatcher
