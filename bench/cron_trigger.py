"""Benchmark: from ``ir.cron._trigger()`` to the job's start, three setups.

Not a test: it prints a table and writes bench/results/cron_trigger.json.
All setups run in the same run on the same machine, threaded Odoo with one
cron thread:

* core direct: Odoo without the addon, ``db_host`` on PostgreSQL itself
  (the baseline: core's LISTEN works there);
* core behind PgBouncer: the addon loaded with ``cron_trigger_redirect =
  False``, ``db_host`` on the transaction-mode PgBouncer;
* addon behind PgBouncer: the cron trigger LISTEN on the direct route.

Each trigger is sent from another Odoo process; the job records the
database clock when it starts. Needs ODOO_PATH and ODOO_PYTHON; about
``--triggers`` x 1 minute for the PgBouncer setup without redirect.
"""

import os
import statistics
import sys
import time

from tools.cron_probe import install_probe_cron, last_run_id, trigger, wait_for_run
from tools.odoo_harness import OdooServer

from . import entry
from .common import print_table, say

#: Core's polling round is 60 s plus the runner's number; wait past it.
WAIT = 100
TRIGGERS = 3
#: why it needs ODOO_PATH and ODOO_PYTHON
NEEDS_ODOO = "cron runners need a real Odoo"
#: its Odoo database, when run alone
DBNAME = "cron_bench"


def setups(sandbox):
    direct_route = {"host": "127.0.0.1", "port": sandbox.postgres.port}
    return [
        ("core, db_host direct", sandbox.postgres.odoo_params(), False, {}),
        (
            "core, behind PgBouncer",
            sandbox.pgbouncer.odoo_params(),
            True,
            {"cron_trigger_redirect": "False"},
        ),
        ("addon, behind PgBouncer", sandbox.pgbouncer.odoo_params(), True, {}),
    ], direct_route


def measure(sandbox, server, cron_id, triggers):
    delays = []
    for number in range(triggers):
        before = last_run_id(sandbox.postgres, server.dbname)
        triggered_at = trigger(server, cron_id)
        run = wait_for_run(sandbox.postgres, server.dbname, before, WAIT)
        delay = None if run is None else run[0] - triggered_at
        delays.append(delay)
        say(
            f"  trigger {number + 1}/{triggers}: "
            + ("not started" if delay is None else f"started after {delay:.2f} s")
        )
    return delays


def run_setup(sandbox, odoo, workdir, dbname, setup, direct_route, triggers):
    label, db_params, with_addon, options = setup
    server = OdooServer(
        *odoo,
        os.path.join(workdir, label.replace(" ", "_").replace(",", "")),
        dbname,
        db_params,
        listener_params=direct_route if with_addon else None,
        with_addon=with_addon,
        extra_options={"max_cron_threads": 1, **options},
    )
    say(f"{label}: starting Odoo ...")
    server.start()
    try:
        time.sleep(5)  # the cron runner LISTENs (and self-checks)
        cron_id = install_probe_cron(server)
        return measure(sandbox, server, cron_id, triggers)
    finally:
        server.stop()


def summary(delays):
    started = [d for d in delays if d is not None]
    return {
        "triggers": len(delays),
        "started": len(started),
        "median_s": statistics.median(started) if started else None,
        "max_s": max(started) if started else None,
        "delays_s": delays,
    }


def run(sandbox, odoo, workdir, dbname, triggers=TRIGGERS):
    """Every setup in turn on ``dbname``; [(label, summary)]."""
    all_setups, direct_route = setups(sandbox)
    return [
        (
            setup[0],
            summary(
                run_setup(sandbox, odoo, workdir, dbname, setup, direct_route, triggers)
            ),
        )
        for setup in all_setups
    ]


TABLE_HEADER = ("setup", "started", "median (s)", "max (s)", "median / baseline")


def table_rows(rows):
    baseline = rows[0][1]["median_s"]
    return [
        (
            label,
            f"{row['started']}/{row['triggers']}",
            "-" if row["median_s"] is None else f"{row['median_s']:.2f}",
            "-" if row["max_s"] is None else f"{row['max_s']:.2f}",
            f"{row['median_s'] / baseline:.1f}"
            if baseline and row["median_s"] is not None
            else "-",
        )
        for label, row in rows
    ]


def options(parser):
    parser.add_argument("--triggers", type=int, default=TRIGGERS)


def measure_in(setting):
    return run(*setting.odoo_site, setting.args.triggers)


def report(rows, machine):
    print_table(
        f"Cron trigger to job start, Odoo {machine['odoo']} (same run, same machine)",
        TABLE_HEADER,
        table_rows(rows),
    )


def payload(rows, machine):
    return {"odoo": machine["odoo"], "rows": dict(rows)}


SCRIPT = entry.Script(
    "cron_trigger", __doc__, options, measure_in, report, payload, NEEDS_ODOO, DBNAME
)


main = SCRIPT.main


if __name__ == "__main__":
    sys.exit(main())
