"""Notification latency without Odoo: the addon's route vs a direct connection.

Starts its own PostgreSQL and transaction-mode PgBouncer (tools/pg_sandbox),
prints a table and writes ``bench/results/latency.json``. For every rate, each
route of ``ROUTES`` runs in turn, so the baseline is measured in the same run,
next to the others, under the same load:

* ``direct`` (baseline): Odoo connected to PostgreSQL for everything; the
  NOTIFY and the LISTEN both on PostgreSQL itself;
* ``addon``: what bus_alt_connection does behind PgBouncer; the NOTIFY goes
  through the transaction-mode PgBouncer (Odoo's ``db_host``), the LISTEN on
  the direct route (``imdispatcher_db_host``);
* ``session_pool``: the NOTIFY through PgBouncer, the LISTEN through its
  session-mode alias ``postgres_listen`` (the README's alternative).

A sender commits one transaction per notification that runs ``NOTIFY`` the
way Odoo's ``bus.bus`` does (a cursor on database ``postgres``, then a
commit), at a target rate; a listener in another process (no shared GIL)
notes when each one arrives. The latency is counted from the moment the
sender sent its COMMIT to the moment the listener read the notification
(``CLOCK_MONOTONIC`` is shared by the processes of a machine). The JSON and
the table also hold it counted from the moment ``commit()`` returned; that
one can be negative, as PostgreSQL signals the listeners while it commits.
"""

import dataclasses
import multiprocessing
import os
import select
import sys
import time

import psycopg2

from . import entry
from .common import (
    add_latency_ratios,
    latency_summary,
    machine_line,
    print_table,
    quantiles_ms,
    say,
)

RATES = (10, 100, 1000)
#: notifications per cell; fewer at 10/s, where 1,000 would take 100 s a route
COUNTS = {10: 300, 100: 1000, 1000: 1000}
QUICK_COUNTS = {10: 50, 100: 200, 1000: 200}
BASELINE = "direct"
LISTEN_GRACE_S = 5.0


@dataclasses.dataclass(frozen=True)
class Route:
    """Where the sender's NOTIFY and the listener's LISTEN connect.

    ``notify_via`` / ``listen_via``: ``postgres`` (PostgreSQL itself),
    ``pgbouncer`` (transaction mode) or ``pgbouncer_session`` (the
    session-mode alias ``postgres_listen``).
    """

    key: str
    label: str
    notify_via: str
    listen_via: str


ROUTES = (
    Route("direct", "direct (baseline)", "postgres", "postgres"),
    Route(
        "addon", "addon: NOTIFY via PgBouncer, LISTEN direct", "pgbouncer", "postgres"
    ),
    Route(
        "session_pool",
        "session pool: NOTIFY via PgBouncer, LISTEN via session alias",
        "pgbouncer",
        "pgbouncer_session",
    ),
)


def connection_params(sandbox, via):
    if via == "postgres":
        return sandbox.postgres.odoo_params()
    if via == "pgbouncer":
        return sandbox.pgbouncer.odoo_params()
    if via == "pgbouncer_session":
        return sandbox.pgbouncer.odoo_params("postgres_listen")
    raise ValueError(f"unknown route end {via!r}")


# the listener, in a process of its own --------------------------------------


def listen(params, channel, count, ready, stop, results):
    """LISTEN on ``channel``; put {n: arrival time} on ``results``."""
    conn = psycopg2.connect(**params)
    conn.autocommit = True
    with conn.cursor() as cr:
        cr.execute(f'LISTEN "{channel}"')
    ready.set()
    arrivals = {}
    while len(arrivals) < count and not stop.is_set():
        if select.select([conn], [], [], 0.2) == ([], [], []):
            continue
        conn.poll()
        now = time.monotonic()
        while conn.notifies:
            notify = conn.notifies.pop(0)
            arrivals.setdefault(int(notify.payload), now)
    conn.close()
    results.put(arrivals)


# the sender -----------------------------------------------------------------


def send(params, channel, count, rate):
    """Commit ``count`` NOTIFYs at ``rate``/s; [(commit sent, commit returned)]."""
    conn = psycopg2.connect(**params)
    times = []
    start = time.monotonic()
    try:
        for n in range(count):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            with conn.cursor() as cr:
                cr.execute("SELECT pg_notify(%s, %s)", (channel, str(n)))
            sent = time.monotonic()
            conn.commit()
            times.append((sent, time.monotonic()))
    finally:
        conn.close()
    return times


def measure_cell(sandbox, route, rate, count):
    """One route at one rate: latencies of ``count`` notifications."""
    channel = f"bus_alt_bench_{os.getpid()}_{route.key}_{rate}"
    context = multiprocessing.get_context("fork")
    ready, stop, results = context.Event(), context.Event(), context.Queue()
    listener = context.Process(
        target=listen,
        args=(
            connection_params(sandbox, route.listen_via),
            channel,
            count,
            ready,
            stop,
            results,
        ),
        daemon=True,
    )
    listener.start()
    if not ready.wait(30):
        listener.kill()
        raise RuntimeError(f"{route.key}: the listener did not start")
    started = time.monotonic()
    times = send(connection_params(sandbox, route.notify_via), channel, count, rate)
    elapsed = time.monotonic() - started
    deadline = time.monotonic() + LISTEN_GRACE_S
    while listener.is_alive() and results.empty() and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    arrivals = results.get(timeout=30)
    listener.join(10)
    return cell_result(route, rate, times, arrivals, elapsed)


def cell_result(route, rate, times, arrivals, elapsed):
    from_sent = [arrivals[n] - t[0] for n, t in enumerate(times) if n in arrivals]
    from_return = [arrivals[n] - t[1] for n, t in enumerate(times) if n in arrivals]
    commit = [t[1] - t[0] for t in times]
    return {
        "route": route.key,
        "label": route.label,
        "rate": rate,
        "achieved_rate": round(len(times) / elapsed, 1) if elapsed else None,
        "sent": len(times),
        "received": len(from_sent),
        "lost": len(times) - len(from_sent),
        **latency_summary(from_sent),
        "from_commit_returned": latency_summary(from_return),
        "commit": latency_summary(commit),
        "quantiles_ms": quantiles_ms(from_sent),
    }


# the suite ------------------------------------------------------------------


def add_ratios(cells):
    """Each cell's p50/p99/max over the baseline's at the same rate."""
    return add_latency_ratios(
        cells, lambda c: c["rate"], lambda c: c["route"] == BASELINE
    )


def run(sandbox, rates=RATES, counts=None, routes=ROUTES):
    """Measure every route at every rate; the cells, with their ratios."""
    counts = counts or COUNTS
    cells = []
    for rate in rates:
        for route in routes:
            count = counts.get(rate, 1000) if isinstance(counts, dict) else counts
            say(f"latency: {route.key} at {rate}/s, {count} notifications ...")
            cell = measure_cell(sandbox, route, rate, count)
            say(
                f"  received {cell['received']}/{cell['sent']}, "
                f"p50 {cell['p50_ms'] or 0:.3f} ms, p99 {cell['p99_ms'] or 0:.3f} ms"
            )
            cells.append(cell)
    return add_ratios(cells)


TABLE_HEADER = (
    "route",
    "rate/s",
    "sent",
    "lost",
    "p50 ms",
    "p99 ms",
    "max ms",
    "p50 ratio",
    "p99 ratio",
    "p50 ms*",
)


def ms(value):
    return "-" if value is None else f"{value:.3f}"


def table_rows(cells):
    return [
        (
            c["route"],
            c["rate"],
            c["sent"],
            c["lost"],
            ms(c["p50_ms"]),
            ms(c["p99_ms"]),
            ms(c["max_ms"]),
            c["p50_ratio"],
            c["p99_ratio"],
            ms(c["from_commit_returned"]["p50_ms"]),
        )
        for c in cells
    ]


def report(cells, machine):
    print_table(
        "Notification latency without Odoo, COMMIT sent -> listener "
        f"(ratio: over 'direct' at the same rate)\n{machine_line(machine)}",
        TABLE_HEADER,
        table_rows(cells),
    )
    say(FOOTNOTE)


FOOTNOTE = (
    "Counted from the sender's COMMIT sent to the listener's read; * from its "
    "commit() returned:\nPostgreSQL signals listeners as it commits, so a "
    "notification can arrive before the\nsender hears its commit is done "
    "(a negative latency), the more so through PgBouncer."
)


def options(parser):
    parser.add_argument("--quick", action="store_true", help="fewer notifications")
    parser.add_argument("--count", type=int, help="notifications per cell")
    parser.add_argument("--rates", type=int, nargs="+", default=list(RATES))


def measure_in(setting):
    args = setting.args
    counts = args.count or (QUICK_COUNTS if args.quick else COUNTS)
    return run(setting.sandbox, args.rates, counts)


SCRIPT = entry.Script("latency", __doc__, options, measure_in, report)


main = SCRIPT.main


if __name__ == "__main__":
    sys.exit(main())
