"""The check's further findings, each on a real server set up that way."""

import contextlib

import pytest

from bus_alt_connection.lib.check.report import MISCONFIGURED, OK
from bus_alt_connection.lib.check.steps import check_setup
from tools.pg_sandbox import SUPERUSER, SUPERUSER_PASSWORD

from .test_check_steps import (
    check_on_a_standby,
    plain_role_route,
    site_config,
)


def finding(report, name):
    matches = [f for f in report.findings if f["name"] == name]
    assert matches, [f["name"] for f in report.findings]
    return matches[0]


@contextlib.contextmanager
def role_setting(sandbox, name, value, role="odoo"):
    """``ALTER ROLE role IN DATABASE postgres SET name = value`` meanwhile."""
    sandbox.postgres.execute(
        f"ALTER ROLE {role} IN DATABASE postgres SET {name} = '{value}'"
    )
    try:
        yield
    finally:
        sandbox.postgres.execute(f"ALTER ROLE {role} IN DATABASE postgres RESET {name}")


@contextlib.contextmanager
def sql_function(sandbox, name, body):
    """A ``name(text, text)`` function in the bus database meanwhile."""
    sandbox.postgres.execute(
        f"CREATE FUNCTION public.{name}(channel text, payload text) RETURNS void "
        f"LANGUAGE sql AS $$ {body} $$"
    )
    sandbox.postgres.execute(f"GRANT EXECUTE ON FUNCTION public.{name} TO odoo")
    try:
        yield name
    finally:
        sandbox.postgres.execute(f"DROP FUNCTION public.{name}")


def test_a_good_setup_lists_its_findings_all_ok(sandbox):
    report = check_setup(site_config(sandbox), environ={})
    assert report.exit_code == OK, report.verdict
    names = {f["name"] for f in report.findings}
    assert {"tcp_keepalives", "max_connections"} <= names
    assert "pgbouncer" not in names  # the route is PostgreSQL itself
    assert all(f["exit_code"] == OK for f in report.findings)
    room = finding(report, "max_connections")["detail"]
    assert "3 direct connection(s) per Odoo instance" in room
    assert "2 cron trigger listener(s)" in room


def test_idle_session_timeout_cuts_the_listener(sandbox):
    with role_setting(sandbox, "idle_session_timeout", "60s"):
        report = check_setup(site_config(sandbox), environ={})
    assert report.exit_code == MISCONFIGURED
    assert "idle_session_timeout is 60 s" in report.verdict
    assert "ALTER ROLE odoo SET idle_session_timeout = 0" in report.advice


def test_idle_session_timeout_of_a_listener_role_that_is_not_a_superuser(
    sandbox, plain_role
):
    """Read with the route's own role, which may read its settings but is
    no superuser: the finding and the advice name that role."""
    name, _password = plain_role
    with role_setting(sandbox, "idle_session_timeout", "60s", role=name):
        report = check_setup(plain_role_route(sandbox, plain_role), environ={})
    assert report.exit_code == MISCONFIGURED
    assert "idle_session_timeout is 60 s" in report.verdict
    assert f"ALTER ROLE {name} SET idle_session_timeout = 0" in report.advice


def test_idle_in_transaction_timeout_is_harmless(sandbox):
    with role_setting(sandbox, "idle_in_transaction_session_timeout", "30s"):
        report = check_setup(site_config(sandbox), environ={})
    assert report.exit_code == OK
    assert (
        "harmless" in finding(report, "idle_in_transaction_session_timeout")["detail"]
    )


@pytest.fixture
def client_idle_timeout(sandbox):
    sandbox.pgbouncer._admin("SET client_idle_timeout = 45")
    yield
    sandbox.pgbouncer._admin("SET client_idle_timeout = 0")


def pgbouncer_admin_route(sandbox, **options):
    """The listener through PgBouncer's session alias, as its admin user."""
    return site_config(
        sandbox,
        imdispatcher_db_port=str(sandbox.pgbouncer.port),
        imdispatcher_db_name="postgres_listen",
        imdispatcher_db_user=SUPERUSER,
        imdispatcher_db_password=SUPERUSER_PASSWORD,
        **options,
    )


def test_pgbouncer_client_idle_timeout_cuts_the_listener(sandbox, client_idle_timeout):
    report = check_setup(pgbouncer_admin_route(sandbox), environ={})
    assert report.round_trip["received"] is True  # it works, for now
    assert report.exit_code == MISCONFIGURED
    assert "client_idle_timeout = 45 s" in report.verdict
    assert "client_idle_timeout = 0" in report.advice


def test_pgbouncer_session_alias_without_client_timeout_passes(sandbox):
    report = check_setup(pgbouncer_admin_route(sandbox), environ={})
    assert report.exit_code == OK, report.verdict
    assert "client_idle_timeout is 0" in finding(report, "pgbouncer")["detail"]


def test_pgbouncer_settings_unreadable_by_the_routes_role(sandbox, plain_role):
    """Through PgBouncer's session alias with a role that is not one of its
    admin_users: the route works, and the check says what it could not
    read and what to make sure of."""
    config = plain_role_route(
        sandbox,
        plain_role,
        imdispatcher_db_port=str(sandbox.pgbouncer.port),
        imdispatcher_db_name="postgres_listen",
    )
    report = check_setup(config, environ={})
    assert report.exit_code == OK, report.verdict
    assert report.round_trip["received"] is True
    detail = finding(report, "pgbouncer")["detail"]
    assert "could not be read with the route's role" in detail
    assert "make sure client_idle_timeout is 0" in detail


def test_route_on_db_replica_host_is_flagged(sandbox):
    report = check_on_a_standby(
        sandbox, db_replica_host="127.0.0.1", db_replica_port="{port}"
    )
    assert report.exit_code == MISCONFIGURED
    assert "db_replica_host" in report.verdict
    assert "a standby refuses LISTEN" in report.verdict


def test_too_little_room_for_the_listeners(sandbox):
    report = check_setup(site_config(sandbox, max_cron_threads="500"), environ={})
    assert report.exit_code == MISCONFIGURED
    assert "501 direct connection(s) per Odoo instance" in report.verdict
    assert "max_connections" in report.advice


def test_no_cron_listeners_without_the_redirect(sandbox):
    config = site_config(sandbox, cron_trigger_redirect="False")
    report = check_setup(config, environ={})
    assert (
        "1 direct connection(s) per Odoo instance on the route (1 bus listener)"
        in (finding(report, "max_connections")["detail"])
    )


def test_notify_function_that_relays_to_pg_notify(sandbox):
    with sql_function(sandbox, "relay_notify", "SELECT pg_notify(channel, payload)"):
        report = check_setup(
            site_config(sandbox), environ={"ODOO_NOTIFY_FUNCTION": "relay_notify"}
        )
    assert report.exit_code == OK, report.verdict
    assert "relay_notify()" in finding(report, "ODOO_NOTIFY_FUNCTION")["detail"]


def test_notify_function_that_notifies_nothing(sandbox):
    with sql_function(sandbox, "deaf_notify", "SELECT"):
        report = check_setup(
            site_config(sandbox), environ={"ODOO_NOTIFY_FUNCTION": "deaf_notify"}
        )
    assert report.exit_code == MISCONFIGURED
    assert "ODOO_NOTIFY_FUNCTION = deaf_notify()" in report.verdict
    assert "unset ODOO_NOTIFY_FUNCTION" in report.advice


def test_notify_function_that_does_not_exist(sandbox):
    report = check_setup(
        site_config(sandbox), environ={"ODOO_NOTIFY_FUNCTION": "no_such_notify"}
    )
    assert report.exit_code == MISCONFIGURED
    assert "ODOO_NOTIFY_FUNCTION = no_such_notify" in report.verdict
    assert "does not exist" in report.verdict
