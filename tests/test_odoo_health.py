"""The health endpoints through a running Odoo (ODOO_PATH, ODOO_PYTHON)."""

import contextlib
import http.cookiejar
import json
import time
import urllib.error
import urllib.request
import uuid

import pytest

from bus_alt_connection.lib.status.health import NOT_THE_DISPATCHER
from tools.odoo_harness import BusClient
from tools.pg_sandbox import LOOPBACK
from tools.tcp_proxy import TcpProxy

from .test_odoo_bus_dispatcher import LISTENING, SECRET, direct_route

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


def ask_like_a_monitor(port, seconds=12, every=0.5):
    """The answers to HEALTH asked every ``every`` s for ``seconds`` s."""
    answers = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status, body = get(port, HEALTH)
        answers.append((status, json.loads(body)))
        time.sleep(every)
    return answers


def listener_backends(sandbox, server):
    """The bus listener connections of ``server``'s processes."""
    names = [f"odoo-bus-listener-{pid}" for pid in server.pids()]
    rows = sandbox.postgres.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = ANY(%s)",
        (names,),
    )
    return rows[0][0]


@contextlib.contextmanager
def websocket(server):
    """A subscribed websocket, once the dispatcher it starts is listening."""
    client = BusClient(server.websocket_url(), f"health_{uuid.uuid4().hex}")
    try:
        assert server.wait_for_log(LISTENING, timeout=60), "dispatcher never started"
        yield client
    finally:
        client.close()


@pytest.mark.parametrize("workers", [0, 2], ids=["threaded", "prefork"])
def test_a_monitor_never_starts_a_listener(sandbox, odoo_server, workers):
    """Asked again and again, the endpoint reports and starts nothing.

    HTTP workers run no dispatcher: 503 with the reason, on every version.
    Before the first websocket the dispatcher is idle; after it, exactly
    one listener backend exists, whoever keeps asking.
    """
    server = odoo_server(listener_params=direct_route(sandbox), workers=workers)
    not_here = (503, {"status": "fail", "error": NOT_THE_DISPATCHER})
    idle = (200, {"status": "pass", "state": "idle"})
    listening = (200, {"status": "pass", "state": "listening"})
    dispatcher_port = server.gevent_port if workers else server.http_port
    if workers:
        assert set_of(ask_like_a_monitor(server.http_port)) == [not_here]
    assert set_of(ask_like_a_monitor(dispatcher_port, seconds=4)) == [idle]
    assert listener_backends(sandbox, server) == 0
    assert "bus listener connected" not in server.log_text()
    with websocket(server):
        if workers:
            assert set_of(ask_like_a_monitor(server.http_port)) == [not_here]
        wait_for_status(dispatcher_port, 200)
        assert set_of(ask_like_a_monitor(dispatcher_port, seconds=4)) == [listening]
        assert listener_backends(sandbox, server) == 1


def set_of(answers):
    """The distinct answers, in the order first seen."""
    distinct = []
    for answer in answers:
        if answer not in distinct:
            distinct.append(answer)
    return distinct


def admin_opener(port, dbname):
    return login_opener(port, dbname, "admin", "admin")


def login_opener(port, dbname, login, password):
    """An opener whose session is ``login``'s."""
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "params": {"db": dbname, "login": login, "password": password},
        }
    ).encode()
    request = urllib.request.Request(
        f"http://{LOOPBACK}:{port}/web/session/authenticate",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with opener.open(request, timeout=30) as response:
        answer = json.loads(response.read())
    assert "error" not in answer, f"{login} could not log in: {answer['error']}"
    assert answer["result"]["uid"], f"{login} could not log in: {answer}"
    return opener


#: an internal user (base.group_user) without the Settings rights
PLAIN_USER = ("bus_alt_plain_user", "plain-user-pw")

CREATE_PLAIN_USER = """
users = env["res.users"].with_context(no_reset_password=True)
groups = "group_ids" if "group_ids" in users._fields else "groups_id"
if not users.search([("login", "=", %(login)r)]):
    users.create({
        "name": "Plain internal user",
        "login": %(login)r,
        "password": %(password)r,
        groups: [(6, 0, [env.ref("base.group_user").id])],
    })
    env.cr.commit()
user = users.search([("login", "=", %(login)r)])
print("PLAIN_USER", user.id, user._is_internal(), user._is_system())
"""


def plain_user_opener(server, port=None):
    """A logged-in internal user who is not an administrator, on ``port``
    (the server's HTTP port by default); created on first use."""
    login, password = PLAIN_USER
    out = server.run_shell(
        CREATE_PLAIN_USER % {"login": login, "password": password},
        "plain-user.log",
    )
    facts = [line for line in out.splitlines() if line.startswith("PLAIN_USER")]
    assert facts and facts[-1].split()[2:] == ["True", "False"], out[-2000:]
    return login_opener(port or server.http_port, server.dbname, login, password)


@pytest.mark.every_series
def test_health_follows_the_listener_route(sandbox, odoo_server):
    """Healthy, 503 once the listener's way to PostgreSQL is cut, healthy again.

    The cut is the listener's route only (a proxy), so that Odoo itself
    keeps answering: with PostgreSQL down altogether, every request waits
    in PgBouncer (query_wait_timeout) and a monitor sees a timeout.
    """
    proxy = TcpProxy(sandbox.postgres.port).start()
    try:
        server = odoo_server(listener_params={"host": "127.0.0.1", "port": proxy.port})
        with websocket(server):
            status, body = wait_for_status(server.http_port, 200)
            assert json.loads(body) == {"status": "pass", "state": "listening"}
            proxy.stop()
            status, body = wait_for_status(server.http_port, 503)
            assert json.loads(body) == {"status": "fail", "state": "down"}
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
    with websocket(server):
        wait_for_status(server.http_port, 200)
        sandbox.postgres.stop()
        try:
            status, body = wait_for_status(server.http_port, 503)
            assert json.loads(body) == {"status": "fail", "state": "down"}
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
    status, body = get(server.http_port, HEALTH + "/details")
    assert status != 200 or "route" not in body  # anonymous: login page
    opener = admin_opener(server.http_port, odoo_database)
    with websocket(server):
        wait_for_status(server.http_port, 200)
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


def test_details_refuse_a_user_who_is_not_an_administrator(
    sandbox, odoo_server, odoo_database
):
    """Logged in, internal, but without the Settings rights: 403, and not
    a word of the route or the listener's state."""
    server = odoo_server(
        listener_params={
            "host": "127.0.0.1",
            "port": sandbox.postgres.port,
            "password": sandbox.postgres.odoo_params()["password"],
        }
    )
    opener = plain_user_opener(server)
    with websocket(server):
        wait_for_status(server.http_port, 200)
        status, body = get(server.http_port, HEALTH + "/details", opener)
        # the same session of an administrator would be answered
        admin = admin_opener(server.http_port, odoo_database)
        admin_status, _body = get(server.http_port, HEALTH + "/details", admin)
    assert (status, json.loads(body)) == (403, {"error": "administrators only"})
    assert admin_status == 200
    assert sandbox.postgres.odoo_params()["password"] not in body
