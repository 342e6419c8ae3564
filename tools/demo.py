"""Demo: the bus behind a transaction-mode PgBouncer, without and with the addon.

Starts a private PostgreSQL and PgBouncer (pool_mode = transaction) on
loopback ports, sends notifications the way Odoo does (NOTIFY on the
``postgres`` database through PgBouncer), and counts what a listener
receives. With ODOO_PATH (and ODOO_PYTHON) set, it also runs a real Odoo
server behind the PgBouncer and counts what a websocket client receives.
Everything it starts is stopped and removed at the end.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

from bus_alt_connection.lib.listener.round_trip import notify_roundtrip, sender
from bus_alt_connection.lib.route.config import resolve_route
from bus_alt_connection.lib.route.connection import listener_params

from .odoo_harness import (
    BusClient,
    OdooServer,
    create_bus_database,
    odoo_from_environment,
    odoo_series,
)
from .pg_sandbox import Sandbox

COUNT = 5


def say(text):
    print(text, flush=True)


def odoo_conf(sandbox, with_route):
    """The [options] an operator behind PgBouncer has, as a dict."""
    conf = {
        "db_host": "127.0.0.1",
        "db_port": sandbox.pgbouncer.port,
        "db_user": "odoo",
        "db_password": sandbox.pgbouncer.odoo_params()["password"],
    }
    if with_route:
        conf["imdispatcher_db_host"] = "127.0.0.1"
        conf["imdispatcher_db_port"] = str(sandbox.postgres.port)
    return conf


def listener_rows(sandbox):
    rows = []
    for label, with_route in (
        ("core: LISTEN through db_host (PgBouncer)", False),
        ("addon: LISTEN on imdispatcher_db_* route", True),
    ):
        route = resolve_route(odoo_conf(sandbox, with_route), environ={})
        result = notify_roundtrip(
            listener_params(route),
            sender(sandbox.pgbouncer.odoo_params()),
            count=COUNT,
            timeout=3,
        )
        rows.append(
            (label, route.describe(), result["sent"], result["received"], with_route)
        )
    return rows


def odoo_rows(sandbox, odoo_path, odoo_python, workdir):
    series = odoo_series(odoo_path)
    say(f"Odoo {series}: creating a database with the bus (about a minute) ...")
    create_bus_database(
        (odoo_path, odoo_python),
        sandbox.postgres,
        os.path.join(workdir, "init"),
        "bus_demo",
    )
    rows = []
    for label, with_addon in (
        (f"Odoo {series} without the addon", False),
        (f"Odoo {series} with bus_alt_connection", True),
    ):
        listener = (
            {"host": "127.0.0.1", "port": sandbox.postgres.port} if with_addon else None
        )
        server = OdooServer(
            odoo_path,
            odoo_python,
            os.path.join(workdir, "with" if with_addon else "without"),
            "bus_demo",
            sandbox.pgbouncer.odoo_params(),
            listener_params=listener,
            with_addon=with_addon,
        )
        say(f"{label}: starting on port {server.http_port} ...")
        server.start()
        try:
            channel = f"demo_{int(time.time() * 1000)}"
            client = BusClient(server.websocket_url(), channel)
            server.wait_for_log(r"Bus\.loop listen imbus", timeout=60)
            time.sleep(1)
            server.send_notifications(channel, COUNT)
            received = client.receive("bus_alt_test", COUNT, timeout=15)
            client.close()
        finally:
            server.stop()
        rows.append((label, "websocket client", COUNT, len(received), with_addon))
    return rows


def print_table(rows):
    rows = [row[:4] for row in rows]
    headers = ("setup", "listener", "sent", "received")
    widths = [max(len(str(row[i])) for row in (headers, *rows)) for i in range(4)]
    line = "  ".join("-" * width for width in widths)
    say(line)
    say("  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=False)))
    say(line)
    for row in rows:
        say("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)))
    say(line)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    odoo = odoo_from_environment()
    workdir = tempfile.mkdtemp(prefix="bus-alt-demo-")
    say("Starting a private PostgreSQL and a PgBouncer (pool_mode = transaction) ...")
    try:
        with Sandbox() as sandbox:
            say(
                f"PostgreSQL on 127.0.0.1:{sandbox.postgres.port}, "
                f"PgBouncer on 127.0.0.1:{sandbox.pgbouncer.port}\n"
                f"{COUNT} notifications are sent the way Odoo sends them: "
                "NOTIFY on database 'postgres' through PgBouncer.\n"
            )
            rows = listener_rows(sandbox)
            if odoo:
                rows += odoo_rows(sandbox, *odoo, workdir)
            else:
                say("(set ODOO_PATH and ODOO_PYTHON to add a real Odoo server)\n")
            print_table(rows)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    # the demo's claim: nothing without the addon, everything with it
    ok = all(
        received == (sent if with_addon else 0)
        for _label, _listener, sent, received, with_addon in rows
    )
    say(
        "\nThrough PgBouncer the LISTEN hears nothing; on the addon's route "
        "every notification arrives."
        if ok
        else "\nUnexpected result, see above."
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
