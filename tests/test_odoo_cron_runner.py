"""Cron triggers of a real Odoo server behind the transaction-mode PgBouncer.

A triggered job (``ir.cron._trigger()``) starts within seconds when the
cron runners LISTEN on the direct route, and only at core's next polling
round (SLEEP_INTERVAL, 60 s + the runner's number) when they listen through
PgBouncer. The job's own queries go through PgBouncer either way.

Needs ODOO_PATH and ODOO_PYTHON; skipped otherwise.
"""

import os
import time

import psycopg2
import pytest

from tools.cron_probe import (
    BLOCKED_JOB_LOCK,
    install_blocked_cron,
    install_probe_cron,
    last_run_id,
    slow_job_running,
    trigger,
    wait_for_run,
)
from tools.notify_flood import flood
from tools.odoo_harness import BusClient, OdooServer

from .test_listener_cron import wait_until

#: Far below core's polling round (60 s), far above a LISTEN wake-up.
PROMPT = 20
#: Core's polling round plus slack (a busy machine).
POLLING_ROUND = 100
LISTENER_READY = r"cron trigger listener \(.*\) self-check passed"


@pytest.fixture(scope="module")
def probe_cron(sandbox, odoo_server_module):
    server = odoo_server_module()
    return install_probe_cron(server)


#: more wake-ups than a pipe holds (64 KiB) when each is a byte
FLOOD = 300_000


@pytest.fixture(scope="module")
def blocked_cron(sandbox, odoo_server_module):
    return install_blocked_cron(odoo_server_module())


@pytest.fixture(scope="module")
def odoo_server_module(sandbox, odoo_tree, odoo_database, odoo_workdir):
    """An Odoo server (not started) to run shell scripts on the database."""
    odoo_path, odoo_python = odoo_tree

    def make():
        server = OdooServer(
            odoo_path,
            odoo_python,
            f"{odoo_workdir}/cron-shell",
            odoo_database,
            db_params=sandbox.pgbouncer.odoo_params(),
            with_addon=False,
        )
        server.write_config()
        return server

    return make


def cron_server(sandbox, odoo_server, workers=0, **options):
    return odoo_server(
        listener_params={"host": "127.0.0.1", "port": sandbox.postgres.port},
        workers=workers,
        extra_options={"max_cron_threads": 1, **options},
    )


def trigger_and_wait(sandbox, server, cron_id, timeout):
    """Seconds from the trigger's commit to the job's start, and its port."""
    before = last_run_id(sandbox.postgres, server.dbname)
    triggered_at = trigger(server, cron_id)
    run = wait_for_run(sandbox.postgres, server.dbname, before, timeout)
    if run is None:
        return None, None
    ran_at, client_port = run
    return ran_at - triggered_at, client_port


@pytest.mark.every_series
@pytest.mark.parametrize("workers", [0, 2], ids=["threaded", "prefork"])
def test_triggered_job_starts_at_once(sandbox, odoo_server, probe_cron, workers):
    server = cron_server(sandbox, odoo_server, workers=workers)
    assert server.wait_for_log(LISTENER_READY, timeout=60), server.log_text()[-3000:]
    delay, client_port = trigger_and_wait(sandbox, server, probe_cron, PROMPT)
    assert delay is not None, "the triggered job did not start promptly"
    # the job's own transaction went through PgBouncer
    assert client_port in sandbox.pgbouncer.server_local_ports()
    log = server.log_text()
    assert " ERROR " not in log
    assert "Traceback" not in log


def test_only_the_trigger_listener_bypasses_pgbouncer(sandbox, odoo_server, probe_cron):
    server = cron_server(sandbox, odoo_server)
    assert server.wait_for_log(LISTENER_READY, timeout=60)
    delay, _port = trigger_and_wait(sandbox, server, probe_cron, PROMPT)
    assert delay is not None
    pooled_ports = sandbox.pgbouncer.server_local_ports()
    rows = sandbox.postgres.execute(
        "SELECT application_name, client_port FROM pg_stat_activity "
        "WHERE usename = 'odoo' AND backend_type = 'client backend'"
    )
    direct = [name for name, port in rows if port not in pooled_ports]
    # the bus listener starts with the first websocket; none connected here
    assert len(rows) > len(direct) == 1, rows
    assert direct[0].startswith("odoo-cron-listener-")


@pytest.mark.parametrize("spelling", ["config", "env"])
def test_a_cron_route_of_its_own(sandbox, odoo_server, probe_cron, spelling):
    """cron_db_* (or ODOO_CRON_DB_*) send the cron runners' LISTEN another
    way than the bus's. The bus route leads to the transaction-mode
    PgBouncer, where a LISTEN hears nothing, and so does the config's
    cron_db_port when the environment overrides it: a prompt start came
    through the cron route to PostgreSQL."""
    direct, deaf = str(sandbox.postgres.port), str(sandbox.pgbouncer.port)
    server = odoo_server(
        listener_params={"host": "127.0.0.1", "port": deaf},
        extra_options={
            "max_cron_threads": 1,
            "cron_db_port": direct if spelling == "config" else deaf,
        },
        environ={"ODOO_CRON_DB_PORT": direct} if spelling == "env" else None,
    )
    assert server.wait_for_log(LISTENER_READY, timeout=60), server.log_text()[-3000:]
    source = "config cron_db_port" if spelling == "config" else "env ODOO_CRON_DB_PORT"
    assert server.wait_for_log(
        rf"cron trigger listener \(.*\) connected to 127\.0\.0\.1:{direct}/postgres"
        rf".*port {source}",
        timeout=5,
    )
    delay, _port = trigger_and_wait(sandbox, server, probe_cron, PROMPT)
    assert delay is not None, "the triggered job did not start promptly"
    assert " ERROR " not in server.log_text()


def test_without_redirect_the_job_waits_for_the_polling_round(
    sandbox, odoo_server, probe_cron
):
    server = cron_server(sandbox, odoo_server, cron_trigger_redirect="False")
    assert server.wait_for_log(r"cron_trigger_redirect is off", timeout=60)
    time.sleep(2)  # the cron runner has started with HTTP; let it LISTEN
    delay, _port = trigger_and_wait(sandbox, server, probe_cron, PROMPT)
    assert delay is None, f"started after {delay:.1f} s without the redirect"
    delay, _port = trigger_and_wait(sandbox, server, probe_cron, POLLING_ROUND)
    assert delay is not None, "the job never ran at core's polling round"


def test_bad_cron_port_keeps_cron_polling_with_one_error(
    sandbox, odoo_server, probe_cron
):
    server = cron_server(sandbox, odoo_server, cron_db_port="abc")
    assert server.wait_for_log(r"cron triggers are not redirected", timeout=60)
    assert server.http_status("/web/binary/company_logo") == 200
    errors = [line for line in server.log_text().splitlines() if " ERROR " in line]
    assert len(errors) == 1, errors
    assert "cron_db_port = 'abc' (config cron_db_port)" in errors[0]


def test_runner_survives_a_postgresql_restart(sandbox, odoo_server, probe_cron):
    """Core's threaded runner of 16.0-18.0 dies when its connection breaks;
    with the redirect it reconnects, and triggers start promptly again."""
    server = cron_server(sandbox, odoo_server)
    assert server.wait_for_log(LISTENER_READY, timeout=60)
    sandbox.postgres.restart()
    assert server.wait_for_log(r"cron trigger listener \(.*\) back on", timeout=60)
    delay, _port = trigger_and_wait(sandbox, server, probe_cron, PROMPT)
    assert delay is not None, "no prompt start after the restart"
    log = server.log_text()
    assert "lost its connection" in log
    with open(os.path.join(server.workdir, "stderr.log")) as stderr:
        assert "Traceback" not in stderr.read()


@pytest.mark.parametrize("workers", [0, 2], ids=["threaded", "prefork"])
def test_a_flood_of_triggers_during_a_long_job_keeps_the_runner_prompt(
    sandbox, odoo_server, probe_cron, blocked_cron, workers
):
    """While the only cron runner runs a long job, 300,000 triggers arrive,
    each its own transaction, as a busy site sends them; once the job is
    done, a triggered job still starts at once."""
    server = cron_server(sandbox, odoo_server, workers=workers)
    assert server.wait_for_log(LISTENER_READY, timeout=60)
    holder = psycopg2.connect(**sandbox.postgres.odoo_params(server.dbname))
    try:
        holder.autocommit = True
        holder.cursor().execute("SELECT pg_advisory_lock(%s)", (BLOCKED_JOB_LOCK,))
        trigger(server, blocked_cron)
        assert wait_until(lambda: slow_job_running(sandbox.postgres, server.dbname))
        flood(sandbox.postgres.odoo_params(), "cron_trigger", FLOOD, server.dbname)
        time.sleep(2)  # the listener reads the end of the flood
        assert slow_job_running(sandbox.postgres, server.dbname)
    finally:
        holder.close()  # the job ends
    assert wait_until(lambda: not slow_job_running(sandbox.postgres, server.dbname))
    delay, _port = trigger_and_wait(sandbox, server, probe_cron, PROMPT)
    assert delay is not None, "no triggered job started after the flood"
    assert "Traceback" not in server.log_text()


TEST_ADDONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "odoo_addons")
#: another server-wide addon that wraps odoo.sql_db.db_connect after ours
WRAPPER = (TEST_ADDONS, "bus_alt_test_db_connect_wrapper")
CRON_NOT_REDIRECTED = "cron_trigger_redirect is on, but core's cron runner did not"
BUS_NOT_ROUTED = "core's bus dispatcher did not open its LISTEN connection"


def wrapped_server(sandbox, odoo_server, workers, environ=None):
    return odoo_server(
        listener_params={"host": "127.0.0.1", "port": sandbox.postgres.port},
        workers=workers,
        extra_options={"max_cron_threads": 1},
        more_addons=[WRAPPER],
        environ=environ,
    )


@pytest.mark.parametrize("workers", [0, 2], ids=["threaded", "prefork"])
def test_another_addon_wrapping_db_connect_keeps_the_redirect(
    sandbox, odoo_server, probe_cron, workers
):
    server = wrapped_server(sandbox, odoo_server, workers)
    assert server.wait_for_log(LISTENER_READY, timeout=60), server.log_text()[-3000:]
    delay, _port = trigger_and_wait(sandbox, server, probe_cron, PROMPT)
    assert delay is not None, "the triggered job did not start promptly"
    assert " ERROR " not in server.log_text()


@pytest.mark.parametrize("workers", [0, 2], ids=["threaded", "prefork"])
def test_an_addon_bypassing_our_db_connect_is_one_error_each(
    sandbox, odoo_server, workers
):
    """Core's LISTEN connections then skip our routes: the bus's and the
    cron runner's each say so, once, instead of silently listening through
    the pooler."""
    server = wrapped_server(
        sandbox, odoo_server, workers, environ={"BUS_ALT_TEST_BYPASS": "1"}
    )
    client = BusClient(server.websocket_url(), "bypassed")
    try:
        assert server.wait_for_log(CRON_NOT_REDIRECTED, timeout=60)
        assert server.wait_for_log(BUS_NOT_ROUTED, timeout=60)
    finally:
        client.close()
    errors = [line for line in server.log_text().splitlines() if " ERROR " in line]
    assert len(errors) == 2, errors
    assert sum(CRON_NOT_REDIRECTED in line for line in errors) == 1
    assert sum(BUS_NOT_ROUTED in line for line in errors) == 1
