"""The operator's check, every verdict and exit code, on real servers."""

import contextlib
import io
import json
import socket
import tempfile

import psycopg2
import pytest

from bus_alt_connection.lib.check import steps as steps
from bus_alt_connection.lib.check.command import main
from bus_alt_connection.lib.check.report import (
    MISCONFIGURED,
    OK,
    UNREACHABLE,
    emit,
    format_report,
)
from bus_alt_connection.lib.check.steps import check_setup
from bus_alt_connection.lib.listener.round_trip import route_facts

SECRET = "check-never-prints-this"


def site_config(sandbox, **options):
    config = {
        "db_host": "127.0.0.1",
        "db_port": str(sandbox.pgbouncer.port),
        "db_user": "odoo",
        "db_password": sandbox.pgbouncer.odoo_params()["password"],
        "server_wide_modules": "base,web,bus_alt_connection",
        "imdispatcher_db_host": "127.0.0.1",
        "imdispatcher_db_port": str(sandbox.postgres.port),
        "imdispatcher_db_password": sandbox.postgres.odoo_params()["password"],
    }
    config.update(options)
    return {key: value for key, value in config.items() if value is not None}


def plain_role_route(sandbox, plain_role, **options):
    name, password = plain_role
    return site_config(
        sandbox, imdispatcher_db_user=name, imdispatcher_db_password=password, **options
    )


@contextlib.contextmanager
def cluster_id_hidden(sandbox):
    """pg_control_system() revoked from PUBLIC meanwhile, as managed
    services do: only superusers may read the cluster's system identifier."""
    sandbox.postgres.execute(
        "REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC"
    )
    try:
        yield
    finally:
        sandbox.postgres.execute(
            "GRANT EXECUTE ON FUNCTION pg_control_system() TO PUBLIC"
        )


def closed_port():
    with contextlib.closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_good_setup(sandbox):
    report = check_setup(site_config(sandbox), environ={})
    assert report.exit_code == OK
    assert report.db_host["pooler"] is True
    assert report.round_trip["received"] is True
    assert report.round_trip["ms"] is not None
    assert report.round_trip["standby"] is False
    assert report.route["port"]["source"] == "config imdispatcher_db_port"


def test_good_setup_with_a_listener_role_that_is_not_a_superuser(sandbox, plain_role):
    report = check_setup(plain_role_route(sandbox, plain_role), environ={})
    assert report.exit_code == OK, report.verdict
    assert report.round_trip["received"] is True
    assert report.route["user"]["source"] == "config imdispatcher_db_user"
    names = {f["name"] for f in report.findings}
    # the further checks ran with that role's rights, and found nothing
    assert {"tcp_keepalives", "max_connections"} <= names, report.findings
    assert "hazards" not in names, report.findings
    assert all(f["exit_code"] == OK for f in report.findings)


def test_a_role_that_may_not_read_the_cluster_id_is_still_told_why(sandbox, plain_role):
    """The route through the pooler, with a plain role that cannot read
    pg_control_system(): the comparison falls back to the database alone,
    and the verdict still names the pooler, without a traceback."""
    name, password = plain_role
    params = {
        "host": "127.0.0.1",
        "port": sandbox.pgbouncer.port,
        "user": name,
        "password": password,
        "dbname": "postgres",
    }
    config = plain_role_route(
        sandbox, plain_role, imdispatcher_db_port=str(sandbox.pgbouncer.port)
    )
    with cluster_id_hidden(sandbox):
        facts = route_facts(params)
        report = check_setup(config, environ={})
    assert facts == {"database": "postgres", "system_identifier": None}
    assert report.exit_code == MISCONFIGURED
    assert "hears nothing" in report.verdict
    assert "transaction-mode pooler" in report.advice


def test_a_route_lost_while_comparing_is_unreachable_not_a_traceback(
    sandbox, monkeypatch, capsys, tmp_path
):
    """The round trip heard nothing, then the routes fail to answer."""

    def gone(params):
        raise psycopg2.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(steps, "route_facts", gone)
    config = site_config(sandbox, imdispatcher_db_port=str(sandbox.pgbouncer.port))
    path = tmp_path / "odoo.conf"
    path.write_text("[options]\n" + "".join(f"{k} = {v}\n" for k, v in config.items()))
    assert main(["-c", str(path)]) == UNREACHABLE
    out = capsys.readouterr().out
    assert "server closed the connection unexpectedly" in out
    assert "run the check again" in out


def test_route_through_the_pooler(sandbox):
    config = site_config(sandbox, imdispatcher_db_port=str(sandbox.pgbouncer.port))
    report = check_setup(config, environ={})
    assert report.exit_code == MISCONFIGURED
    assert "hears nothing" in report.verdict
    assert "transaction-mode pooler" in report.advice


def test_no_route_configured_behind_the_pooler(sandbox):
    config = site_config(
        sandbox,
        imdispatcher_db_host=None,
        imdispatcher_db_port=None,
        imdispatcher_db_password=None,
    )
    report = check_setup(config, environ={})
    assert report.exit_code == MISCONFIGURED
    assert report.route["host"]["source"] == "fallback to config db_host"


def test_addon_not_loaded_behind_the_pooler(sandbox):
    config = site_config(sandbox, server_wide_modules="base,web")
    report = check_setup(config, environ={})
    assert report.exit_code == MISCONFIGURED
    assert "server_wide_modules" in report.advice


def test_direct_db_host_needs_no_addon(sandbox):
    config = site_config(
        sandbox,
        db_port=str(sandbox.postgres.port),
        server_wide_modules="base,web",
        imdispatcher_db_host=None,
        imdispatcher_db_port=None,
    )
    report = check_setup(config, environ={})
    assert report.exit_code == OK
    assert report.db_host["pooler"] is False


def test_bad_value(sandbox):
    report = check_setup(site_config(sandbox, imdispatcher_db_port="abc"), environ={})
    assert report.exit_code == MISCONFIGURED
    assert "imdispatcher_db_port = 'abc'" in report.verdict


def test_route_unreachable(sandbox):
    port = closed_port()
    config = site_config(sandbox, imdispatcher_db_port=str(port))
    report = check_setup(config, environ={})
    assert report.exit_code == UNREACHABLE
    assert f"imdispatcher_db_port='{port}'" in report.advice


def test_db_host_unreachable(sandbox):
    report = check_setup(site_config(sandbox, db_port=str(closed_port())), environ={})
    assert report.exit_code == UNREACHABLE
    assert "db_host" in report.verdict


def test_db_host_wrong_password(sandbox):
    report = check_setup(site_config(sandbox, db_password="wrong"), environ={})
    assert report.exit_code == MISCONFIGURED
    assert "authentication failed" in report.verdict  # PgBouncer says SASL


def check_on_a_standby(sandbox, **options):
    """The check, with the route on a fresh standby of the sandbox."""
    standby = sandbox.postgres.make_standby(
        tempfile.mkdtemp(prefix="standby-", dir=sandbox.workdir)
    )
    try:
        port = str(standby.port)
        config = site_config(
            sandbox,
            imdispatcher_db_port=port,
            **{name: value.format(port=port) for name, value in options.items()},
        )
        return check_setup(config, environ={})
    finally:
        standby.stop(mode="immediate")


def test_route_to_a_standby(sandbox):
    report = check_on_a_standby(sandbox)
    assert report.exit_code == MISCONFIGURED
    assert "standby" in report.advice
    assert "read-write" in report.advice


def test_environment_overrides_are_reported(sandbox):
    environ = {"ODOO_IMDISPATCHER_DB_PORT": str(sandbox.postgres.port)}
    config = site_config(sandbox, imdispatcher_db_port="1")
    report = check_setup(config, environ=environ)
    assert report.exit_code == OK
    assert report.route["port"]["source"] == "env ODOO_IMDISPATCHER_DB_PORT"


@pytest.mark.parametrize("as_json", [False, True])
def test_output_never_shows_the_password(sandbox, as_json):
    config = site_config(sandbox, imdispatcher_db_password=SECRET)
    out = io.StringIO()
    code = emit(check_setup(config, environ={}), as_json, out)
    assert code == MISCONFIGURED  # the password is wrong
    assert SECRET not in out.getvalue()
    assert "imdispatcher_db_password" in out.getvalue()
    if as_json:
        assert json.loads(out.getvalue())["exit_code"] == MISCONFIGURED


def test_command_line_without_odoo(sandbox, tmp_path, capsys):
    conf = tmp_path / "odoo.conf"
    lines = [f"{key} = {value}" for key, value in site_config(sandbox).items()]
    conf.write_text("[options]\n" + "\n".join(lines) + "\n")
    assert main(["-c", str(conf), "--json"]) == OK
    report = json.loads(capsys.readouterr().out)
    assert report["verdict"].startswith("the bus will work")


# --- imdispatcher_mode poll and auto ------------------------------------


@pytest.fixture
def bus_database(sandbox):
    """A database with an Odoo-shaped bus_bus, reached through PgBouncer."""
    from .test_polling import BUS_TABLE

    name = "check_poll_db"
    sandbox.postgres.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    sandbox.postgres.execute(f"CREATE DATABASE {name} OWNER odoo")
    sandbox.postgres.execute(BUS_TABLE, dbname=name)
    yield name
    sandbox.pgbouncer._admin(f"KILL {name}")
    sandbox.pgbouncer._admin(f"RESUME {name}")
    sandbox.postgres.execute(f"DROP DATABASE {name} WITH (FORCE)")


def poll_config(sandbox, **options):
    """A site with no direct route at all, only the transaction pooler."""
    return site_config(
        sandbox,
        imdispatcher_mode="poll",
        imdispatcher_db_host=None,
        imdispatcher_db_port=None,
        imdispatcher_db_password=None,
        **options,
    )


def test_poll_mode_behind_the_pooler_works(sandbox, bus_database):
    report = check_setup(poll_config(sandbox, db_name=bus_database), environ={})
    assert report.exit_code == OK, report
    assert report.mode["active"] == "poll"
    assert report.mode["why"] == "configured (config imdispatcher_mode)"
    assert report.poll["databases"][bus_database]["ok"] is True
    assert report.round_trip is None, "poll mode needs no LISTEN check"
    assert "polling bus.bus every 250 ms" in report.verdict
    text = format_report(report)
    assert "imdispatcher_mode: poll (config imdispatcher_mode); active: poll" in text


def test_poll_mode_without_db_name_checks_db_host(sandbox):
    report = check_setup(poll_config(sandbox), environ={})
    assert report.exit_code == OK
    assert "no database was polled" in report.verdict


def test_poll_mode_database_without_bus(sandbox):
    report = check_setup(poll_config(sandbox, db_name="postgres"), environ={})
    assert report.exit_code == MISCONFIGURED
    assert "no bus_bus table" in report.verdict


def test_poll_mode_db_host_unreachable(sandbox):
    config = poll_config(sandbox, db_port=str(closed_port()))
    report = check_setup(config, environ={})
    assert report.exit_code == UNREACHABLE
    assert "db_host" in report.verdict


def test_poll_mode_needs_the_addon_loaded(sandbox):
    config = poll_config(sandbox, server_wide_modules="base,web")
    assert check_setup(config, environ={}).exit_code == MISCONFIGURED


def test_auto_mode_with_a_working_route_listens(sandbox):
    report = check_setup(site_config(sandbox, imdispatcher_mode="auto"), environ={})
    assert report.exit_code == OK
    assert report.mode["active"] == "listen"
    assert report.round_trip["received"] is True


def test_auto_mode_with_a_deaf_route_polls(sandbox, bus_database):
    config = site_config(
        sandbox,
        imdispatcher_mode="auto",
        imdispatcher_db_port=str(sandbox.pgbouncer.port),
        db_name=bus_database,
    )
    report = check_setup(config, environ={})
    assert report.exit_code == OK, report
    assert report.mode["active"] == "poll"
    assert "hears nothing" in report.mode["why"]
    assert "to get LISTEN back" in report.advice


def test_cron_triggers_follow_the_bus_route(sandbox):
    report = check_setup(site_config(sandbox), environ={})
    assert report.exit_code == OK
    assert report.cron["state"] == "follows the bus route"
    assert report.cron["received"] is True
    assert "cron triggers: follows the bus route" in format_report(report)


def test_cron_route_of_its_own_through_the_pooler(sandbox):
    config = site_config(sandbox, cron_db_port=str(sandbox.pgbouncer.port))
    report = check_setup(config, environ={})
    assert report.exit_code == MISCONFIGURED
    assert report.cron["state"] == "own route (cron_db_*)"
    assert report.cron["received"] is False
    assert "cron trigger route" in report.verdict
    assert "cron_db_host" in report.advice


def test_cron_route_unreachable(sandbox):
    config = site_config(sandbox, cron_db_port=str(closed_port()))
    report = check_setup(config, environ={})
    assert report.exit_code == UNREACHABLE
    assert "cron_db_port=" in report.advice


def test_cron_redirect_off(sandbox):
    config = site_config(sandbox, cron_trigger_redirect="False")
    report = check_setup(config, environ={})
    assert report.exit_code == OK
    assert report.cron["state"].startswith("off")
