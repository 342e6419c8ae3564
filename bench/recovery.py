"""Fault benchmark: recovery after a PostgreSQL restart, addon vs core.

Not a test: it prints a table and writes bench/results/recovery.json.
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

import os
import subprocess
import sys
import threading
import time

from tools.odoo_harness import BusClient, OdooServer

from . import common, entry
from .common import say

NOTIFICATION = "bus_alt_bench"
LATE = 5.0
#: seconds observed after the restart; core sleeps 50 s after a lost listener
OBSERVE_S = 70.0
#: why it needs ODOO_PATH and ODOO_PYTHON
NEEDS_ODOO = "core's behaviour needs a real Odoo"
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


TABLE_HEADER = (
    "setup",
    "first commit (s)",
    "first delivery (s)",
    "sent after",
    f"late >{LATE:.0f}s",
    "lost",
)


def _seconds(value):
    return "none" if value is None else f"{value:.2f}"


def table_rows(rows):
    return [
        (
            label,
            _seconds(r["first_commit_s"]),
            _seconds(r["first_delivery_s"]),
            r["sent_after_restart"],
            r["late"],
            r["lost"],
        )
        for label, r in rows
    ]


def ratio_line(rows):
    ratio = first_delivery_ratio(rows)
    if ratio is None:
        return "no ratio: a setup delivered nothing within the observation time"
    return f"addon / core time to first delivery: {ratio:.3f}"


def print_table(series, rows):
    common.print_table(
        f"Recovery after a PostgreSQL restart, Odoo {series} (same run, same machine)",
        TABLE_HEADER,
        table_rows(rows),
    )
    say(f"\n{ratio_line(rows)}")


def first_delivery_ratio(rows):
    core, addon = rows[0][1], rows[1][1]
    if core["first_delivery_s"] and addon["first_delivery_s"] is not None:
        return addon["first_delivery_s"] / core["first_delivery_s"]
    return None


def run(sandbox, odoo, workdir, dbname, observe=OBSERVE_S):
    """Core, then the addon; the database must exist. [(label, figures)]."""
    return [
        (
            "core (db_host direct)",
            run_setup("core", sandbox, odoo, workdir, dbname, observe, False),
        ),
        (
            "addon (behind PgBouncer)",
            run_setup("addon", sandbox, odoo, workdir, dbname, observe, True),
        ),
    ]


def result_data(series, rows, machine=None):
    return {
        "odoo": series,
        "machine": machine,
        "rows": dict(rows),
        "first_delivery_ratio": first_delivery_ratio(rows),
    }


def options(parser):
    parser.add_argument("--observe", type=float, default=OBSERVE_S)


def measure_in(setting):
    return run(*setting.odoo_site, setting.args.observe)


def report(rows, machine):
    print_table(machine["odoo"], rows)


def payload(rows, machine):
    return result_data(machine["odoo"], rows, machine)


SCRIPT = entry.Script(
    "recovery", __doc__, options, measure_in, report, payload, NEEDS_ODOO
)


main = SCRIPT.main


if __name__ == "__main__":
    sys.exit(main())
