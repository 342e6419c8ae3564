"""PostgreSQL backends under load: PgBouncer + addon vs Odoo connected directly.

Needs ODOO_PATH and ODOO_PYTHON. For each configuration (workers per Odoo
instance, number of instances) and each mode, it starts Odoo in prefork
mode, connects 50 websocket clients (spread over the instances) to the
gevent port, keeps a steady HTTP load on ``/web/binary/company_logo`` (a
route that reads the database on 16.0 to 19.0) from a few threads, and has
an ``odoo-bin shell`` send 10 bus notifications a second. Twice a second it
counts the backends of role ``odoo`` in ``pg_stat_activity``, split by
database and by how they connect: through PgBouncer (a PgBouncer server
connection), the addon's listener (``odoo-bus-listener-<pid>``), or another
direct connection. The sender logs in as a role of its own, so it is not
counted. Reported: the peak and the median over the measurement, the
ceiling PgBouncer allows (pool size per pool in use, plus one listener per
instance), and the ratio to the direct setup with the same workers and
instances. Writes ``bench/results/backends.json``.
"""

import os
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request

import psycopg2

from tools.odoo_harness import BusClient, OdooServer
from tools.pg_sandbox import LOOPBACK, ODOO_USER

from . import entry
from .common import machine_line, print_table, ratio, say
from .odoo_common import (
    ADDON,
    CORE_DIRECT,
    Collector,
    ShellSender,
    db_params,
    make_server,
    start_server,
)

#: why it needs ODOO_PATH and ODOO_PYTHON
NEEDS_ODOO = "a real Odoo tree"
MODES = (CORE_DIRECT, ADDON)
#: (HTTP workers per instance, instances)
CONFIGS = ((2, 1), (4, 1), (8, 1), (4, 2))
QUICK_CONFIGS = ((4, 1),)
WEBSOCKETS = 50
HTTP_THREADS = 6
HTTP_PATH = "/web/binary/company_logo"
NOTIFY_RATE = 10
WARMUP_S = 5.0
MEASURE_S = 20.0
QUICK_MEASURE_S = 8.0
SAMPLE_EVERY_S = 0.5
SENDER_ROLE, SENDER_PASSWORD = "bench_sender", "bench-sender-pw"
LISTENER_APP = "odoo-bus-listener-"
CRON_LISTENER_APP = "odoo-cron-listener-"
#: Odoo's default max_cron_threads: cron workers in prefork
CRON_RUNNERS = 2


# load -------------------------------------------------------------------------


class HttpLoad:
    """Threads that GET ``HTTP_PATH`` back to back, round-robin over ports."""

    def __init__(self, ports, threads=HTTP_THREADS):
        self.urls = [f"http://{LOOPBACK}:{port}{HTTP_PATH}" for port in ports]
        self.ok = self.errors = 0
        self.halt = threading.Event()
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._loop, args=(index,), daemon=True)
            for index in range(threads)
        ]

    def _loop(self, index):
        while not self.halt.is_set():
            url = self.urls[index % len(self.urls)]
            index += 1
            try:
                with urllib.request.urlopen(url, timeout=30) as response:
                    response.read()
                    good = response.status == 200
            except (urllib.error.URLError, OSError):
                good = False
            with self.lock:
                if good:
                    self.ok += 1
                else:
                    self.errors += 1

    def start(self):
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()
        return self

    def stop(self):
        self.halt.set()
        for thread in self.threads:
            thread.join(35)
        self.elapsed = time.monotonic() - self.started


# counting ---------------------------------------------------------------------

ACTIVITY_SQL = """
SELECT datname, application_name, client_port
  FROM pg_stat_activity
 WHERE usename = %s AND backend_type = 'client backend'
"""


def sample(monitor, pgbouncer):
    """One count of the ``odoo`` role's backends, split by how they connect."""
    bouncer_ports = pgbouncer.server_local_ports()
    with monitor.cursor() as cr:
        cr.execute(ACTIVITY_SQL, (ODOO_USER,))
        rows = cr.fetchall()
    counts = {
        "total": len(rows),
        "via_pgbouncer": 0,
        "listener": 0,
        "cron_listener": 0,
        "direct": 0,
    }
    by_db = {}
    for datname, app_name, client_port in rows:
        if client_port in bouncer_ports:
            counts["via_pgbouncer"] += 1
        elif (app_name or "").startswith(LISTENER_APP):
            counts["listener"] += 1
        elif (app_name or "").startswith(CRON_LISTENER_APP):
            counts["cron_listener"] += 1
        else:
            counts["direct"] += 1
        by_db[datname] = by_db.get(datname, 0) + 1
    counts["by_database"] = by_db
    return counts


def summarize(samples):
    def peak(key):
        return max((s[key] for s in samples), default=0)

    databases = sorted({db for s in samples for db in s["by_database"]})
    return {
        "samples": len(samples),
        "peak": peak("total"),
        "median": statistics.median(s["total"] for s in samples) if samples else 0,
        "peak_via_pgbouncer": peak("via_pgbouncer"),
        "peak_listener": peak("listener"),
        "peak_cron_listener": peak("cron_listener"),
        "peak_direct": peak("direct"),
        "peak_by_database": {
            db: max(s["by_database"].get(db, 0) for s in samples) for db in databases
        },
        "series": [s["total"] for s in samples],
    }


# one configuration -------------------------------------------------------------


def fresh_pgbouncer(pgbouncer, timeout=10):
    """Restart PgBouncer and wait until it holds no server connection: none
    left from the last configuration, nor from its own start-up check."""
    pgbouncer.stop()
    pgbouncer.start()
    pgbouncer.drop_server_connections()
    deadline = time.monotonic() + timeout
    while pgbouncer.server_local_ports() and time.monotonic() < deadline:
        time.sleep(0.2)


def measure_config(sandbox, odoo, workdir, mode, workers, instances, measure_s):
    fresh_pgbouncer(sandbox.pgbouncer)
    servers = [
        make_server(
            sandbox,
            odoo,
            os.path.join(workdir, f"{mode.key}-{workers}-{i}"),
            mode,
            workers=workers,
            options={"max_cron_threads": CRON_RUNNERS},
        )
        for i in range(instances)
    ]
    sender_conf = OdooServer(
        *odoo,
        os.path.join(workdir, f"sender-{mode.key}-{workers}-{instances}"),
        servers[0].dbname,
        {
            **db_params(sandbox, mode.db_via),
            "user": SENDER_ROLE,
            "password": SENDER_PASSWORD,
        },
        with_addon=False,
    )
    sender_conf.write_config()
    monitor = psycopg2.connect(**sandbox.postgres.superuser_params())
    monitor.autocommit = True
    collectors, load, sender = [], None, None
    try:
        for server in servers:
            start_server(server)
        channel = f"backends_{int(time.time() * 1000)}"
        collectors = [
            Collector(BusClient(servers[i % instances].websocket_url(), channel))
            for i in range(WEBSOCKETS)
        ]
        for collector in collectors:
            collector.start()
        count = int(NOTIFY_RATE * (WARMUP_S + measure_s + 30))
        sender = ShellSender(sender_conf, channel, count, NOTIFY_RATE)
        sender.go()
        load = HttpLoad([s.http_port for s in servers]).start()
        time.sleep(WARMUP_S)
        samples = []
        deadline = time.monotonic() + measure_s
        while time.monotonic() < deadline:
            samples.append(sample(monitor, sandbox.pgbouncer))
            time.sleep(SAMPLE_EVERY_S)
        pools = sandbox.pgbouncer.pools()
    finally:
        if load:
            load.stop()
        if sender:
            sender.stop()
        for collector in collectors:
            collector.stop()
        for server in servers:
            server.stop()
        monitor.close()
    return config_result(
        mode, workers, instances, samples, load, sender, collectors, pools, sandbox
    )


def config_result(
    mode, workers, instances, samples, load, sender, collectors, pools, sandbox
):
    result = {
        "mode": mode.key,
        "label": mode.label,
        "workers": workers,
        "instances": instances,
        "websockets": WEBSOCKETS,
        "cron_runners": CRON_RUNNERS,
        "http_requests_per_s": round(load.ok / load.elapsed, 1),
        "http_errors": load.errors,
        "notifications_committed": len(sender.times),
        "deliveries": sum(len(c.arrivals) for c in collectors),
        **summarize(samples),
    }
    if mode.db_via == "pgbouncer":
        pool_size = int(sandbox.pgbouncer.config_value("default_pool_size"))
        odoo_pools = [
            p for p in pools if p["user"] == ODOO_USER and p["database"] != "pgbouncer"
        ]
        result["pool_size"] = pool_size
        result["pgbouncer_pools"] = sorted(p["database"] for p in odoo_pools)
        result["ceiling"] = pool_size * len(odoo_pools) + instances * (1 + CRON_RUNNERS)
    return result


def add_ratios(rows, baseline=MODES[0].key):
    bases = {(r["workers"], r["instances"]): r for r in rows if r["mode"] == baseline}
    for row in rows:
        base = bases.get((row["workers"], row["instances"]), {})
        row["peak_ratio"] = ratio(row["peak"], base.get("peak"))
        row["median_ratio"] = ratio(row["median"], base.get("median"))
    return rows


def run(sandbox, odoo, workdir, configs=CONFIGS, modes=MODES, measure_s=None):
    """Every configuration in every mode; the database must exist."""
    measure_s = measure_s or MEASURE_S
    sandbox.add_superuser_role(SENDER_ROLE, SENDER_PASSWORD)
    rows = []
    for workers, instances in configs:
        for mode in modes:
            say(
                f"backends: {mode.key}, {instances} instance(s) x {workers} "
                f"workers, {WEBSOCKETS} websockets, HTTP load ..."
            )
            row = measure_config(
                sandbox, odoo, workdir, mode, workers, instances, measure_s
            )
            say(
                f"  peak {row['peak']} backends, median {row['median']}; "
                f"{row['http_requests_per_s']} HTTP req/s, "
                f"{row['deliveries']} websocket deliveries"
            )
            rows.append(row)
    return add_ratios(rows, modes[0].key)


TABLE_HEADER = (
    "mode",
    "workers",
    "instances",
    "peak",
    "median",
    "via PgBouncer",
    "bus listener",
    "cron listeners",
    "other direct",
    "pools",
    "ceiling",
    "peak ratio",
    "HTTP req/s",
)


def pools_cell(row):
    """'20 x 2': PgBouncer's pool size times the pools in use; '-' direct."""
    if "pool_size" not in row:
        return "-"
    return f"{row['pool_size']} x {len(row['pgbouncer_pools'])}"


def table_rows(rows):
    return [
        (
            r["mode"],
            r["workers"],
            r["instances"],
            r["peak"],
            f"{r['median']:g}",
            r["peak_via_pgbouncer"],
            r["peak_listener"],
            r.get("peak_cron_listener", "-"),
            r["peak_direct"],
            pools_cell(r),
            r.get("ceiling"),
            r["peak_ratio"],
            r["http_requests_per_s"],
        )
        for r in rows
    ]


TITLE = (
    f"PostgreSQL backends of role odoo, Odoo prefork with {CRON_RUNNERS} cron "
    f"workers, {WEBSOCKETS} websockets,\n{HTTP_THREADS} HTTP threads, "
    f"{NOTIFY_RATE} notifications/s "
    f"(ratio: peak over '{MODES[0].key}' with the same workers and instances)"
)
FOOTNOTE = (
    "pools: PgBouncer's pool size x the (database, user) pools in use; "
    "ceiling: that, plus per\ninstance one bus listener and one cron listener "
    f"per cron runner; peak and median over samples taken every {SAMPLE_EVERY_S} s."
)


def report(rows, machine):
    print_table(f"{TITLE}\n{machine_line(machine)}", TABLE_HEADER, table_rows(rows))
    say(FOOTNOTE)


def options(parser):
    parser.add_argument("--quick", action="store_true", help="4 workers, 1 instance")


def measure_in(setting):
    quick = setting.args.quick
    configs = QUICK_CONFIGS if quick else CONFIGS
    measure_s = QUICK_MEASURE_S if quick else MEASURE_S
    return run(
        setting.sandbox, setting.odoo, setting.workdir, configs, measure_s=measure_s
    )


payload = entry.machine_and("rows")
SCRIPT = entry.Script(
    "backends", __doc__, options, measure_in, report, payload, NEEDS_ODOO
)


main = SCRIPT.main


if __name__ == "__main__":
    sys.exit(main())
