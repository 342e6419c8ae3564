"""Poll mode against listen mode, without Odoo: latency and database work.

Starts its own PostgreSQL and transaction-mode PgBouncer, prints a table and
writes ``bench/results/poll_latency.json``. A database holds a ``bus_bus``
table shaped like Odoo's. For each rate, a sender commits one transaction
per notification through PgBouncer, as Odoo does: it inserts the
``bus_bus`` row and sends ``NOTIFY``. Then, in turn, one receiver in a
process of its own:

* ``listen`` (baseline): LISTEN on the direct route, what the addon does
  in listen mode;
* ``poll``: the addon's own ``BusTracker`` (``bus_alt_connection.lib.polling``,
  driven by ``tools.bus_poller.BusPoller``) through the transaction-mode
  PgBouncer every ``--interval`` ms (250, the default of
  ``imdispatcher_poll_interval``), waiting the interval after each poll
  like the addon's dispatcher.

Reported: latency from the sender's COMMIT sent to the receiver's read
(p50/p99/max, and the ratio to listen mode at the same rate), rows read
twice, and the receiver's queries per second while it received (one per
poll; LISTEN runs none). Target of poll mode: p50 at most
interval / 2 + 20 ms.
"""

import json
import multiprocessing
import queue
import sys
import time

import psycopg2

from tools.bus_poller import BusPoller

from . import entry, latency
from .common import (
    latency_summary,
    machine_line,
    print_table,
    quantiles_ms,
    ratio,
    say,
)

DBNAME = "poll_bench"
CHANNEL = "bench_poll"
RATES = (10, 100, 1000)
COUNTS = {10: 300, 100: 1000, 1000: 1000}
QUICK_COUNTS = {10: 30, 100: 200, 1000: 200}
INTERVAL_MS = 250
GRACE_S = 3.0
CREATE_BUS = """
CREATE TABLE bus_bus (
    id serial PRIMARY KEY,
    create_date timestamp,
    channel varchar,
    message varchar
)"""


def create_database(sandbox):
    sandbox.postgres.execute(f"DROP DATABASE IF EXISTS {DBNAME}")
    sandbox.postgres.execute(f"CREATE DATABASE {DBNAME} OWNER odoo")
    connection = psycopg2.connect(**sandbox.postgres.odoo_params(DBNAME))
    with connection, connection.cursor() as cr:
        cr.execute(CREATE_BUS)
    connection.close()


# receivers, each in a process of its own ------------------------------------


def receive_listen(params, count, ready, stop, results, _interval):
    """bench.latency's listener; LISTEN runs no query and reads no row twice."""
    arrivals = queue.SimpleQueue()
    latency.listen(params, CHANNEL, count, ready, stop, arrivals)
    results.put((arrivals.get(), 0.0, 0))


def receive_poll(params, count, ready, stop, results, interval):
    poller = BusPoller(lambda: psycopg2.connect(**params), name=DBNAME)
    poller.poll()  # the first poll finds where to start
    ready.set()
    arrivals, queries, twice = {}, 0, 0
    started = time.monotonic()
    while len(arrivals) < count and not stop.is_set():
        channels = poller.poll()
        queries += 1
        now = time.monotonic()
        for channel in channels:
            n = json.loads(channel)[1]
            twice += n in arrivals
            arrivals.setdefault(n, now)
        stop.wait(interval)
    poller.close()
    results.put((arrivals, queries / (time.monotonic() - started), twice))


RECEIVERS = {"listen": receive_listen, "poll": receive_poll}


# the sender -------------------------------------------------------------------


def send(params, count, rate):
    """Commit ``count`` notifications at ``rate``/s; their COMMIT-sent times."""
    connection = psycopg2.connect(**params)
    sent = []
    start = time.monotonic()
    try:
        for n in range(count):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            with connection.cursor() as cr:
                cr.execute(
                    "INSERT INTO bus_bus (create_date, channel, message) "
                    "VALUES (now() AT TIME ZONE 'UTC', %s, '{}')",
                    (json.dumps([CHANNEL, n]),),
                )
                cr.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(n)))
            sent.append(time.monotonic())
            connection.commit()
    finally:
        connection.close()
    return sent


def measure_cell(sandbox, mode, rate, count, interval_ms):
    params = (
        sandbox.postgres.odoo_params(DBNAME)
        if mode == "listen"
        else sandbox.pgbouncer.odoo_params(DBNAME)
    )
    context = multiprocessing.get_context("fork")
    ready, stop, results = context.Event(), context.Event(), context.Queue()
    receiver = context.Process(
        target=RECEIVERS[mode],
        args=(params, count, ready, stop, results, interval_ms / 1000),
        daemon=True,
    )
    receiver.start()
    if not ready.wait(30):
        receiver.kill()
        raise RuntimeError(f"{mode}: the receiver did not start")
    sent = send(sandbox.pgbouncer.odoo_params(DBNAME), count, rate)
    time.sleep(GRACE_S if mode == "listen" else GRACE_S + interval_ms / 1000)
    stop.set()
    arrivals, queries_per_s, twice = results.get(timeout=30)
    receiver.join(10)
    return cell_result(mode, rate, sent, arrivals, queries_per_s, twice, interval_ms)


def cell_result(mode, rate, sent, arrivals, queries_per_s, twice, interval_ms):
    latencies = [arrivals[n] - at for n, at in enumerate(sent) if n in arrivals]
    return {
        "mode": mode,
        "rate": rate,
        "interval_ms": interval_ms if mode == "poll" else None,
        "sent": len(sent),
        "received": len(latencies),
        "lost": len(sent) - len(latencies),
        "twice": twice,
        **latency_summary(latencies),
        "quantiles_ms": quantiles_ms(latencies),
        "queries_per_s": round(queries_per_s, 2),
        "target_p50_ms": interval_ms / 2 + 20 if mode == "poll" else None,
    }


def run(sandbox, rates=RATES, counts=None, interval_ms=INTERVAL_MS):
    counts = counts or COUNTS
    create_database(sandbox)
    cells = []
    for rate in rates:
        for mode in ("listen", "poll"):
            count = counts.get(rate, 1000) if isinstance(counts, dict) else counts
            say(f"poll_latency: {mode} at {rate}/s, {count} notifications ...")
            cell = measure_cell(sandbox, mode, rate, count, interval_ms)
            say(
                f"  received {cell['received']}/{cell['sent']}, "
                f"p50 {cell['p50_ms'] or 0:.1f} ms, {cell['queries_per_s']} queries/s"
            )
            cells.append(cell)
    baselines = {c["rate"]: c for c in cells if c["mode"] == "listen"}
    for cell in cells:
        base = baselines[cell["rate"]]
        cell["p50_ratio"] = ratio(cell["p50_ms"], base["p50_ms"])
        cell["p99_ratio"] = ratio(cell["p99_ms"], base["p99_ms"])
    return cells


TABLE_HEADER = (
    "mode",
    "rate/s",
    "sent",
    "lost",
    "twice",
    "p50 ms",
    "p99 ms",
    "max ms",
    "p50 ratio",
    "queries/s",
    "target p50",
)


def ms(value):
    return "-" if value is None else f"{value:.1f}"


def table_rows(cells):
    return [
        (
            c["mode"],
            c["rate"],
            c["sent"],
            c["lost"],
            c["twice"],
            ms(c["p50_ms"]),
            ms(c["p99_ms"]),
            ms(c["max_ms"]),
            c["p50_ratio"],
            c["queries_per_s"],
            "-"
            if c["target_p50_ms"] is None
            else f"<= {c['target_p50_ms']:.0f} ms: "
            + ("met" if (c["p50_ms"] or 0) <= c["target_p50_ms"] else "missed"),
        )
        for c in cells
    ]


FOOTNOTE = (
    "Counted from the sender's COMMIT sent (through PgBouncer) to the receiver's "
    "read; ratio over\n'listen' at the same rate. queries/s: the receiver's own "
    "queries while it received (LISTEN\nruns none); twice: rows the receiver "
    "read more than once."
)


def report(cells, machine):
    print_table(
        "Poll mode against listen mode, without Odoo\n" + machine_line(machine),
        TABLE_HEADER,
        table_rows(cells),
    )
    say(FOOTNOTE)


def options(parser):
    parser.add_argument("--quick", action="store_true", help="fewer notifications")
    parser.add_argument("--interval", type=int, default=INTERVAL_MS, help="ms")
    parser.add_argument("--rates", type=int, nargs="+", default=list(RATES))


def measure_in(setting):
    args = setting.args
    counts = QUICK_COUNTS if args.quick else COUNTS
    return run(setting.sandbox, args.rates, counts, args.interval)


SCRIPT = entry.Script("poll_latency", __doc__, options, measure_in, report)


main = SCRIPT.main


if __name__ == "__main__":
    sys.exit(main())
