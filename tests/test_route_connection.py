"""Real connection failures give one line naming the option and what to do."""

import contextlib
import socket
import tempfile

import psycopg2
import pytest

from bus_alt_connection.lib.route.config import resolve_route
from bus_alt_connection.lib.route.connection import (
    diagnose_connection_error,
    listener_params,
)

SECRET = "do-not-log-this-pw"


def route_for(sandbox, **options):
    config = {
        "db_host": "127.0.0.1",
        "db_port": sandbox.pgbouncer.port,
        "db_user": "odoo",
        "db_password": "pooled-pw",
        "imdispatcher_db_host": "127.0.0.1",
        "imdispatcher_db_port": str(sandbox.postgres.port),
        "imdispatcher_db_password": sandbox.postgres.odoo_params()["password"],
    }
    config.update(options)
    return resolve_route(config, environ={})


def failure_of(route, **overrides):
    params = {**listener_params(route), **overrides}
    with pytest.raises(psycopg2.OperationalError) as raised:
        psycopg2.connect(**params).close()
    return diagnose_connection_error(raised.value, route)


@contextlib.contextmanager
def silent_port():
    """A port that accepts TCP but never speaks: an unreachable server."""
    with contextlib.closing(socket.socket()) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]


def test_closed_port(sandbox):
    with contextlib.closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    route = route_for(sandbox, imdispatcher_db_port=str(closed_port))
    options, message = failure_of(route)
    assert options == ("host", "port")
    assert (
        f"imdispatcher_db_port='{closed_port}' (config imdispatcher_db_port)" in message
    )
    assert "\n" not in message


def test_unresolvable_host(sandbox):
    route = route_for(sandbox, imdispatcher_db_host="no-such-host.invalid")
    options, message = failure_of(route)
    assert options == ("host",)
    assert "imdispatcher_db_host='no-such-host.invalid'" in message


def test_host_that_never_answers(sandbox):
    with silent_port() as port:
        route = route_for(sandbox, imdispatcher_db_port=str(port))
        options, message = failure_of(route, connect_timeout=2)
    assert options == ("host", "port")
    assert "did not answer" in message


def test_wrong_password_is_named_but_never_shown(sandbox):
    route = route_for(sandbox, imdispatcher_db_password=SECRET)
    options, message = failure_of(route)
    assert options == ("user", "password")
    assert "imdispatcher_db_password='(set)'" in message
    assert SECRET not in message


def test_unknown_database(sandbox):
    route = route_for(sandbox, imdispatcher_db_name="no_such_db")
    options, message = failure_of(route)
    assert options == ("name",)
    assert "imdispatcher_db_name='no_such_db'" in message


def test_unknown_pooler_alias(sandbox):
    route = route_for(
        sandbox,
        imdispatcher_db_port=str(sandbox.pgbouncer.port),
        imdispatcher_db_name="no_such_alias",
    )
    options, message = failure_of(route)
    assert options == ("name",)
    assert "no_such_alias" in message


def test_ssl_required_by_a_server_without_ssl(sandbox):
    route = route_for(sandbox, imdispatcher_db_sslmode="require")
    options, message = failure_of(route)
    assert options == ("sslmode",)
    assert "imdispatcher_db_sslmode='require'" in message


def test_terminated_backend_is_explained(sandbox):
    route = route_for(sandbox)
    connection = psycopg2.connect(**listener_params(route))
    sandbox.postgres.execute(
        "SELECT pg_terminate_backend(%s)", (connection.get_backend_pid(),)
    )
    with pytest.raises(psycopg2.OperationalError) as raised:
        with connection.cursor() as cr:
            cr.execute("SELECT 1")
    connection.close()
    options, message = diagnose_connection_error(raised.value, route)
    assert options == ()
    assert "terminat" in message or "closed the" in message


def test_standby_is_refused_before_listen(sandbox):
    from bus_alt_connection.lib.route.connection import StandbyRoute, refuse_standby

    standby = sandbox.postgres.make_standby(
        tempfile.mkdtemp(prefix="standby-", dir=sandbox.workdir)
    )
    try:
        route = route_for(sandbox, imdispatcher_db_port=str(standby.port))
        connection = psycopg2.connect(**listener_params(route))
        try:
            with pytest.raises(StandbyRoute) as raised:
                refuse_standby(connection)
        finally:
            connection.close()
        primary = psycopg2.connect(**listener_params(route_for(sandbox)))
        try:
            refuse_standby(primary)  # no exception on the primary
        finally:
            primary.close()
    finally:
        standby.stop(mode="immediate")
    options, message = diagnose_connection_error(raised.value, route)
    assert options == ("host", "target_session_attrs")
    assert "read-write" in message
