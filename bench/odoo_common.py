"""Real-Odoo parts the benchmarks share: modes, servers, a sender, websockets.

A mode is how an Odoo server reaches PostgreSQL: a row of a benchmark. A new
way of running the bus (a later ``imdispatcher_mode = poll``, say) is one more
``OdooMode`` with its options, e.g.::

    OdooMode(
        "poll",
        "addon polling, db_host = PgBouncer",
        db_via="pgbouncer",
        with_addon=True,
        options={"imdispatcher_mode": "poll", "imdispatcher_poll_interval": 250},
    )
"""

import dataclasses
import json
import os
import subprocess
import threading
import time

import websocket  # websocket-client

from tools.odoo_harness import BusClient, OdooServer
from tools.pg_sandbox import SUPERUSER, SUPERUSER_PASSWORD

from .common import say
from .entry import DBNAME

NOTIFICATION = "bus_alt_bench"


@dataclasses.dataclass(frozen=True)
class OdooMode:
    """How one Odoo server is configured for a benchmark row.

    ``db_via``: ``postgres`` (``db_host`` on PostgreSQL itself) or
    ``pgbouncer`` (the transaction-mode PgBouncer). ``listener_via``: where
    the addon's ``imdispatcher_db_*`` route leads (``postgres``), or None to
    leave it unset. ``options``: any other Odoo options.
    """

    key: str
    label: str
    db_via: str
    with_addon: bool
    listener_via: str = None
    options: dict = dataclasses.field(default_factory=dict)


CORE_DIRECT = OdooMode(
    "core", "core Odoo, db_host = PostgreSQL (baseline)", "postgres", False
)
ADDON = OdooMode(
    "addon",
    "addon, db_host = PgBouncer, listener direct",
    "pgbouncer",
    True,
    listener_via="postgres",
)
POLL = OdooMode(
    "poll",
    "addon in poll mode, db_host = PgBouncer, no direct route",
    "pgbouncer",
    True,
    options={"imdispatcher_mode": "poll", "imdispatcher_poll_interval": 250},
)
#: what the dispatcher logs once it waits for notifications
DISPATCHER_READY = r"Bus\.loop listen imbus|bus poller started"


def db_params(sandbox, via, superuser=False):
    params = (
        sandbox.postgres.odoo_params()
        if via == "postgres"
        else sandbox.pgbouncer.odoo_params()
    )
    if superuser:
        params.update(user=SUPERUSER, password=SUPERUSER_PASSWORD)
    return params


def make_server(sandbox, odoo, workdir, mode, dbname=DBNAME, workers=0, options=None):
    """An (unstarted) OdooServer configured as ``mode`` says (and ``options``)."""
    listener = None
    if mode.listener_via == "postgres":
        listener = {"host": "127.0.0.1", "port": sandbox.postgres.port}
    return OdooServer(
        *odoo,
        workdir,
        dbname,
        db_params(sandbox, mode.db_via),
        listener_params=listener,
        with_addon=mode.with_addon,
        workers=workers,
        extra_options={**dict(mode.options), **(options or {})},
    )


def start_server(server, timeout=180):
    """Start ``server`` and wait until its bus listener has run LISTEN.

    Core starts its dispatcher thread with the first websocket: one connects,
    and leaves once the LISTEN is logged.
    """
    server.start(timeout=timeout)
    client = BusClient(server.websocket_url(), "bench_warmup")
    try:
        if not server.wait_for_log(DISPATCHER_READY, timeout=60):
            say("  (the dispatcher logged neither LISTEN nor polling in 60 s)")
    finally:
        client.close()
    return server


# the sender -------------------------------------------------------------------

SENDER = """
import os, sys, time
from odoo import api, SUPERUSER_ID
registry = odoo.modules.registry.Registry({dbname!r})
print("READY", flush=True)
while not os.path.exists({go!r}):
    time.sleep(0.01)
start = time.monotonic()
for n in range({count}):
    delay = start + n / {rate} - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    try:
        committed = []
        with registry.cursor() as cr:
            # runs first after the commit, right before core's NOTIFY hook
            cr.postcommit.add(lambda: committed.append(time.monotonic()))
            api.Environment(cr, SUPERUSER_ID, {{}})["bus.bus"]._sendone(
                {channel!r}, {kind!r}, {{"n": n}}
            )
        print("SENT", n, committed[0], time.monotonic(), flush=True)
    except Exception as error:
        print("FAILED", n, type(error).__name__, flush=True)
print("DONE", flush=True)
"""


class ShellSender:
    """An ``odoo-bin shell`` that commits bus notifications at a target rate.

    Each notification is one transaction, committed as Odoo commits (core's
    postcommit hook sends the NOTIFY through ``db_host``). ``times[n]`` holds,
    in ``time.monotonic()``: when the transaction had committed and core's
    NOTIFY was about to be sent (a postcommit hook of ours, added before
    core's), and when the cursor's commit returned, the NOTIFY sent.
    It waits for :meth:`go` once Odoo's registry is loaded.
    """

    def __init__(self, server, channel, count, rate, logname="sender.log"):
        self.go_file = os.path.join(server.workdir, f"go-{channel}")
        script = SENDER.format(
            dbname=server.dbname,
            go=self.go_file,
            count=count,
            rate=rate,
            channel=channel,
            kind=NOTIFICATION,
        )
        self.times, self.failed = {}, 0
        self.ready, self.done = threading.Event(), threading.Event()
        self.process = subprocess.Popen(
            server.shell_argv(logname),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.process.stdin.write(script)
        self.process.stdin.close()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stdout:
            parts = line.split()
            if parts[:1] == ["SENT"]:
                self.times[int(parts[1])] = (float(parts[2]), float(parts[3]))
            elif parts[:1] == ["FAILED"]:
                self.failed += 1
            elif parts[:1] == ["READY"]:
                self.ready.set()
            elif parts[:1] == ["DONE"]:
                self.done.set()
        self.done.set()

    def go(self, timeout=120):
        if not self.ready.wait(timeout):
            self.stop()
            raise RuntimeError("the Odoo shell sender did not start")
        self.started = time.monotonic()
        with open(self.go_file, "w"):
            pass

    def wait(self, timeout):
        self.done.wait(timeout)
        self.elapsed = time.monotonic() - self.started
        return self

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(30)
        self.reader.join(5)
        if os.path.exists(self.go_file):
            os.unlink(self.go_file)


# websocket clients ------------------------------------------------------------


class Collector(threading.Thread):
    """Reads one BusClient's frames; ``arrivals[n]`` = when ``n`` arrived."""

    def __init__(self, client):
        super().__init__(daemon=True)
        self.client = client
        self.arrivals = {}
        self.halt = threading.Event()

    def run(self):
        self.client.connection.settimeout(0.5)
        while not self.halt.is_set():
            try:
                frame = self.client.connection.recv()
            except websocket.WebSocketTimeoutException:
                continue
            except (websocket.WebSocketException, OSError):
                break
            now = time.monotonic()
            for notification in json.loads(frame) if frame else []:
                message = notification.get("message") or {}
                if message.get("type") == NOTIFICATION:
                    self.arrivals.setdefault(message["payload"]["n"], now)

    def stop(self):
        self.halt.set()
        self.join(5)
        try:
            self.client.close()
        except (websocket.WebSocketException, OSError) as error:
            say(f"  (closing a websocket: {error})")
