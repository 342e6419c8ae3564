"""The problem and the fix, on a real PostgreSQL and a real PgBouncer."""

from bus_alt_connection.lib.listener.round_trip import notify_roundtrip, sender
from bus_alt_connection.lib.route.config import resolve_route
from bus_alt_connection.lib.route.connection import listener_params


def odoo_config(sandbox, **options):
    """What odoo.conf holds on a site behind PgBouncer."""
    pgbouncer = sandbox.pgbouncer
    config = {
        "db_host": "127.0.0.1",
        "db_port": pgbouncer.port,
        "db_user": "odoo",
        "db_password": pgbouncer.odoo_params()["password"],
        "db_sslmode": "prefer",
    }
    config.update(options)
    return config


def test_listen_through_transaction_pooler_hears_nothing(sandbox):
    route = resolve_route(odoo_config(sandbox), environ={})
    assert not route.configured
    result = notify_roundtrip(
        listener_params(route),
        sender(sandbox.pgbouncer.odoo_params()),
        count=5,
        timeout=2,
    )
    assert (result["sent"], result["received"]) == (5, 0)


def test_listen_on_the_addon_route_hears_every_notification(sandbox):
    config = odoo_config(
        sandbox,
        imdispatcher_db_host="127.0.0.1",
        imdispatcher_db_port=str(sandbox.postgres.port),
    )
    route = resolve_route(config, environ={})
    result = notify_roundtrip(
        listener_params(route),
        sender(sandbox.pgbouncer.odoo_params()),
        count=5,
        timeout=5,
    )
    assert (result["sent"], result["received"]) == (5, 5)
    assert result["standby"] is False


def test_session_mode_alias_of_postgres_also_works(sandbox):
    config = odoo_config(sandbox, imdispatcher_db_name="postgres_listen")
    route = resolve_route(config, environ={})
    assert route.port == str(sandbox.pgbouncer.port)
    result = notify_roundtrip(
        listener_params(route),
        sender(sandbox.pgbouncer.odoo_params()),
        count=5,
        timeout=5,
    )
    assert result["received"] == 5


def test_listener_connection_is_named_in_pg_stat_activity(sandbox):
    import psycopg2

    route = resolve_route(
        odoo_config(sandbox, imdispatcher_db_port=str(sandbox.postgres.port)),
        environ={},
    )
    params = listener_params(route)
    connection = psycopg2.connect(**params)
    try:
        rows = sandbox.postgres.execute(
            "SELECT application_name FROM pg_stat_activity WHERE pid = %s",
            (connection.get_backend_pid(),),
        )
        assert rows == [(params["application_name"],)]
        assert params["application_name"].startswith("odoo-bus-listener-")
    finally:
        connection.close()
