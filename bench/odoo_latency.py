"""Notification latency end to end through a real Odoo, to websocket clients.

Needs ODOO_PATH and ODOO_PYTHON. Each mode of ``MODES`` runs a threaded Odoo
server in turn; the baseline is core Odoo with ``db_host`` on PostgreSQL
itself, the other row Odoo with ``db_host`` on the transaction-mode PgBouncer
and bus_alt_connection listening on the direct route. An ``odoo-bin shell``
commits ``bus.bus._sendone`` notifications at a target rate, one transaction
each, through the mode's ``db_host``; websocket clients subscribed to the
channel note when each arrives. Latency: from the sender's transaction
committed, as core's postcommit hook starts the NOTIFY (a transaction of
its own, through ``db_host``), to the websocket frame read; the JSON also
has it from the cursor's commit returned, NOTIFY sent. Cells: rates
10, 100, 1,000/s with one websocket, then 10 and 50 websockets at 10/s.
Writes ``bench/results/odoo_latency.json``.
"""

import os
import sys
import time

from tools.odoo_harness import BusClient

from . import entry
from .common import (
    add_latency_ratios,
    latency_summary,
    machine_line,
    print_table,
    quantiles_ms,
    say,
)
from .entry import DBNAME
from .odoo_common import (
    ADDON,
    CORE_DIRECT,
    POLL,
    Collector,
    ShellSender,
    make_server,
    start_server,
)

#: the rows; the first is the baseline. Add a mode here to add a row.
MODES = (CORE_DIRECT, ADDON, POLL)
#: (notifications per second, websocket clients, notifications). More
#: websockets at 10/s: a rate both modes reach with 50 clients on 2 cores,
#: so that both rows carry the same load.
CELLS = (
    (10, 1, 300),
    (100, 1, 1000),
    (1000, 1, 1000),
    (10, 10, 300),
    (10, 50, 300),
)
QUICK_CELLS = ((10, 1, 30), (100, 1, 200), (1000, 1, 200), (10, 10, 30))
GRACE_S = 10.0
#: why it needs ODOO_PATH and ODOO_PYTHON
NEEDS_ODOO = "a real Odoo tree"


def measure_cell(server, rate, clients, count):
    channel = f"bench_{int(time.time() * 1000)}_{rate}_{clients}"
    collectors = [
        Collector(BusClient(server.websocket_url(), channel)) for _ in range(clients)
    ]
    for collector in collectors:
        collector.start()
    time.sleep(1)  # the subscriptions reach the dispatcher
    sender = ShellSender(server, channel, count, rate)
    try:
        sender.go()
        sender.wait(timeout=count / rate * 3 + 60)
        deadline = time.monotonic() + GRACE_S
        while time.monotonic() < deadline and any(
            len(c.arrivals) < len(sender.times) for c in collectors
        ):
            time.sleep(0.1)
    finally:
        sender.stop()
        for collector in collectors:
            collector.stop()
    return cell_result(sender, collectors, rate, clients, count)


def cell_result(sender, collectors, rate, clients, count):
    from_sent, from_return, lost = [], [], 0
    for collector in collectors:
        for n, (committed, returned) in sender.times.items():
            if n in collector.arrivals:
                from_sent.append(collector.arrivals[n] - committed)
                from_return.append(collector.arrivals[n] - returned)
            else:
                lost += 1
    elapsed = getattr(sender, "elapsed", None)
    return {
        "rate": rate,
        "websockets": clients,
        "notifications": count,
        "committed": len(sender.times),
        "failed_commits": sender.failed,
        "achieved_rate": round(len(sender.times) / elapsed, 1) if elapsed else None,
        "deliveries": len(from_sent),
        "lost": lost,
        **latency_summary(from_sent),
        "from_commit_returned": latency_summary(from_return),
        "quantiles_ms": quantiles_ms(from_sent),
    }


def run_mode(sandbox, odoo, workdir, mode, cells, dbname=DBNAME):
    server = make_server(
        sandbox, odoo, os.path.join(workdir, mode.key), mode, dbname=dbname
    )
    say(f"odoo latency: {mode.key}: starting Odoo ({mode.label}) ...")
    start_server(server)
    results = []
    try:
        time.sleep(2)
        for rate, clients, count in cells:
            say(
                f"odoo latency: {mode.key} at {rate}/s, {clients} websocket(s), "
                f"{count} notifications ..."
            )
            cell = measure_cell(server, rate, clients, count)
            cell.update(mode=mode.key, label=mode.label)
            say(
                f"  committed {cell['committed']} at {cell['achieved_rate']}/s, "
                f"delivered {cell['deliveries']}, lost {cell['lost']}, "
                f"p50 {cell['p50_ms'] or 0:.1f} ms"
            )
            results.append(cell)
    finally:
        server.stop()
    return results


def add_ratios(cells, baseline=MODES[0].key):
    """Each cell's p50/p99/max over the baseline mode's in the same cell."""
    return add_latency_ratios(
        cells,
        lambda c: (c["rate"], c["websockets"]),
        lambda c: c["mode"] == baseline,
    )


def run(sandbox, odoo, workdir, cells=CELLS, modes=MODES, dbname=DBNAME):
    """Every mode over every cell; the database must exist."""
    results = []
    for mode in modes:
        results += run_mode(sandbox, odoo, workdir, mode, cells, dbname)
    order = {cell: index for index, cell in enumerate((r, w) for r, w, _n in cells)}
    results.sort(key=lambda c: (order[(c["rate"], c["websockets"])]))
    return add_ratios(results, modes[0].key)


TABLE_HEADER = (
    "mode",
    "rate/s",
    "achieved/s",
    "websockets",
    "deliveries",
    "lost",
    "p50 ms",
    "p99 ms",
    "max ms",
    "p50 ratio",
    "p99 ratio",
    "p50 ms*",
)


def table_rows(cells):
    return [
        (
            c["mode"],
            c["rate"],
            c["achieved_rate"],
            c["websockets"],
            c["deliveries"],
            c["lost"],
            c["p50_ms"],
            c["p99_ms"],
            c["max_ms"],
            c["p50_ratio"],
            c["p99_ratio"],
            c["from_commit_returned"]["p50_ms"],
        )
        for c in cells
    ]


def report(cells, machine):
    print_table(
        "Notification latency through Odoo, commit -> websocket "
        f"(ratio: over '{MODES[0].key}' in the same cell)\n{machine_line(machine)}",
        TABLE_HEADER,
        table_rows(cells),
    )
    say(FOOTNOTE)


FOOTNOTE = (
    "Counted from the sender's transaction committed, when core's postcommit "
    "hook starts the\nNOTIFY through db_host, to the websocket frame read; * "
    "from the commit returned, NOTIFY\nsent, which a websocket can beat. "
    "achieved/s: one Odoo process commits what it can."
)


def options(parser):
    parser.add_argument("--quick", action="store_true", help="fewer, smaller cells")


def measure_in(setting):
    cells = QUICK_CELLS if setting.args.quick else CELLS
    return run(
        setting.sandbox, setting.odoo, setting.workdir, cells, dbname=setting.dbname
    )


def payload(cells, machine):
    return {"machine": machine, "modes": [m.key for m in MODES], "cells": cells}


SCRIPT = entry.Script(
    "odoo_latency", __doc__, options, measure_in, report, payload, NEEDS_ODOO
)


main = SCRIPT.main


if __name__ == "__main__":
    sys.exit(main())
