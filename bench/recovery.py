"""Fault benchmark: recovery after a PostgreSQL restart, addon vs core.

Not a test: it prints a table (and writes bench/results/recovery.json).
Both setups run in the same run on the same machine:

* core: Odoo without the addon, ``db_host`` on PostgreSQL itself (the only
  way core's LISTEN works at all);
* addon: Odoo behind the transaction-mode PgBouncer, with
  bus_alt_connection listening on the direct route.

For each, a websocket client subscribes, an Odoo process sends a bus
notification every 0.25 s, PostgreSQL is stopped for 3 s and started
again, and the sender goes on for ``--observe`` seconds. Reported: seconds
from PostgreSQL accepting connections again to the first notification the
websocket receives, how many notifications committed after the restart
arrived more than 5 s late, and how many never arrived. The first column,
seconds to the first notification Odoo could commit again, is what the
sender itself needed: the listener cannot deliver earlier than that.

Needs ODOO_PATH and ODOO_PYTHON (a real Odoo tree); about 3 minutes.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from tools.odoo_harness import BusClient, OdooServer, odoo_from_environment, odoo_series
from tools.pg_sandbox import Sandbox

NOTIFICATION = "bus_alt_bench"
LATE = 5.0
SENDER = """
import time
from odoo import api, SUPERUSER_ID
deadline = time.monotonic() + {duration}
n = 0
while time.monotonic() < deadline:
    try:
        with odoo.modules.registry.Registry({dbname!r}).cursor() as cr:
            api.Environment(cr, SUPERUSER_ID, {{}})["bus.bus"]._sendone(
                {channel!r}, {kind!r}, {{"n": n}}
            )
        print("SENT", n, time.monotonic(), flush=True)
        n += 1
    except Exception as error:
        print("FAILED", type(error).__name__, flush=True)
    time.sleep({interval})
"""


def say(text):
    print(text, flush=True)


def start_sender(server, channel, duration, interval=0.25):
    """An Odoo shell that commits one notification per ``interval`` s."""
    script = SENDER.format(
        duration=duration,
        dbname=server.dbname,
        channel=channel,
        kind=NOTIFICATION,
        interval=interval,
    )
    process = subprocess.Popen(
        server.shell_argv("sender.log"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    process.stdin.write(script)
    process.stdin.close()
    sent = {}

    def read():
        for line in process.stdout:
            parts = line.split()
            if parts[:1] == ["SENT"]:
                sent[int(parts[1])] = float(parts[2])

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return process, reader, sent


def collect(client, received, stop):
    while not stop.is_set():
        for payload in client.receive(NOTIFICATION, 10**6, timeout=0.5):
            received.setdefault(payload["n"], time.monotonic())


def measure(sandbox, server, observe):
    channel = f"bench_{int(time.time())}"
    client = BusClient(server.websocket_url(), channel)
    received, stop = {}, threading.Event()
    server.wait_for_log(r"Bus\.loop listen imbus", timeout=60)
    time.sleep(2)
    process, reader, sent = start_sender(server, channel, duration=observe + 15)
    collector = threading.Thread(target=collect, args=(client, received, stop))
    collector.start()
    time.sleep(8)  # the sender's shell starts and delivers a few
    sandbox.postgres.stop()
    time.sleep(3)
    sandbox.postgres.start()
    back_at = time.monotonic()
    say(f"  PostgreSQL accepts connections again; observing {observe} s ...")
    time.sleep(observe)
    process.terminate()
    process.wait()
    reader.join(5)
    stop.set()
    collector.join()
    client.close()
    after = {n: at for n, at in sent.items() if at >= back_at}
    arrivals = [at for at in received.values() if at >= back_at]
    first = min(arrivals) - back_at if arrivals else None
    first_commit = min(after.values()) - back_at if after else None
    late = sum(
        1 for n, at in after.items() if n in received and received[n] - at > LATE
    )
    lost = sum(1 for n in after if n not in received)
    return {
        "first_commit_s": first_commit,
        "first_delivery_s": first,
        "sent_after_restart": len(after),
        "late": late,
        "lost": lost,
    }


def run_setup(label, sandbox, odoo, workdir, dbname, observe, with_addon):
    odoo_path, odoo_python = odoo
    if with_addon:
        db_params = sandbox.pgbouncer.odoo_params()
        listener = {"host": "127.0.0.1", "port": sandbox.postgres.port}
    else:
        db_params, listener = sandbox.postgres.odoo_params(), None
    server = OdooServer(
        odoo_path,
        odoo_python,
        os.path.join(workdir, label),
        dbname,
        db_params,
        listener_params=listener,
        with_addon=with_addon,
    )
    say(f"{label}: starting Odoo ...")
    server.start()
    try:
        return measure(sandbox, server, observe)
    finally:
        server.stop()


def print_table(series, rows):
    say(
        f"\nRecovery after a PostgreSQL restart, Odoo {series} (same run, same machine)"
    )
    header = (
        "setup",
        "first commit (s)",
        "first delivery (s)",
        "sent after",
        f"late >{LATE:.0f}s",
        "lost",
    )
    table = [header] + [
        (
            label,
            "none" if r["first_commit_s"] is None else f"{r['first_commit_s']:.2f}",
            "none" if r["first_delivery_s"] is None else f"{r['first_delivery_s']:.2f}",
            str(r["sent_after_restart"]),
            str(r["late"]),
            str(r["lost"]),
        )
        for label, r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for index, row in enumerate(table):
        say(
            "  ".join(
                cell.ljust(width) for cell, width in zip(row, widths, strict=False)
            )
        )
        if index == 0:
            say("  ".join("-" * width for width in widths))
    core, addon = rows[0][1], rows[1][1]
    if core["first_delivery_s"] and addon["first_delivery_s"] is not None:
        ratio = addon["first_delivery_s"] / core["first_delivery_s"]
        say(f"\naddon / core time to first delivery: {ratio:.3f}")
    else:
        say("\nno ratio: a setup delivered nothing within the observation time")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--observe", type=float, default=70.0)
    args = parser.parse_args(argv)
    odoo = odoo_from_environment()
    if odoo is None:
        say("needs ODOO_PATH and ODOO_PYTHON: core's behaviour needs a real Odoo")
        return 2
    workdir = tempfile.mkdtemp(prefix="bus-alt-bench-")
    try:
        with Sandbox() as sandbox:
            dbname = "bus_bench"
            say("creating the database ...")
            OdooServer(
                *odoo,
                os.path.join(workdir, "init"),
                dbname,
                sandbox.postgres.odoo_params(),
                with_addon=False,
            ).init_database()
            rows = [
                (
                    "core (db_host direct)",
                    run_setup(
                        "core", sandbox, odoo, workdir, dbname, args.observe, False
                    ),
                ),
                (
                    "addon (behind PgBouncer)",
                    run_setup(
                        "addon", sandbox, odoo, workdir, dbname, args.observe, True
                    ),
                ),
            ]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(odoo_series(odoo[0]), rows)
    os.makedirs("bench/results", exist_ok=True)
    with open("bench/results/recovery.json", "w") as handle:
        json.dump({"odoo": odoo_series(odoo[0]), "rows": dict(rows)}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
