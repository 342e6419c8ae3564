"""Core's ``LISTEN cron_trigger`` connection, on the cron route and resilient.

Plain Python (psycopg2). Core's cron runners (the threaded server's cron
threads, prefork's cron workers) take a cursor on the ``postgres`` database,
run ``LISTEN cron_trigger`` on it, and between polling rounds wait with
``select()`` on its connection, then call the connection's ``poll()``. The
glue hands them a ``TriggerCursor`` whose connection (``cr._cnx``) is a
``TriggerConnection``:

* it connects on the cron route, with its own psycopg2 connection, never
  through Odoo's pool, so nothing else of the runner leaves ``db_host``;
* a reader thread of its own waits on that connection and wakes core's
  runner through a ``WakePipe`` (``fileno()``) when a trigger arrives, so
  only one thread ever reads the socket;
* when the connection is lost, ``poll()`` does not raise (core's threaded
  runner of 16.0-18.0 would die, and the cron worker would crash): the
  reader reconnects as the listener engine says, runs the LISTEN again and
  wakes the runner, whose polling round is the catch-up; meanwhile the
  runner keeps core's polling pace;
* the listener engine's watch sends a self-check NOTIFY through Odoo's own
  route after each connect, and heartbeats after it, as for the bus.
"""

import contextlib
import logging
import os
import select
import threading

import psycopg2

from ..route.connection import (
    diagnose_connection_error,
    interrupt_connection,
    listener_params,
    refuse_standby,
)
from .engine import ListenerEngine, ListenerTexts
from .retry import MAX_RETRY_DELAY, retry_delay
from .watch import (
    HEARTBEAT_INTERVAL,
    SELF_CHECK_TIMEOUT,
    ListenerWatch,
    TokenProbe,
    is_token,
)

_logger = logging.getLogger(__name__)

CRON_CHANNEL = "cron_trigger"
#: Core's runners of 16.0-18.0 never read ``notifies``; keep it bounded.
MAX_KEPT_NOTIFIES = 1000
#: How long the reader waits on the socket before it looks again.
READ_TIMEOUT = 1.0
WHILE_DOWN = "; triggered jobs wait for core's polling round until then"
DEAF_CONSEQUENCE = (
    ". Triggered cron jobs wait for core's polling round (about a minute); "
    "set cron_db_host and cron_db_port (or the bus's imdispatcher_db_host "
    "and imdispatcher_db_port) to a direct PostgreSQL route."
)


def trigger_application_name():
    """How a cron trigger listener shows in ``pg_stat_activity``."""
    return f"odoo-cron-listener-{os.getpid()}"


def is_listen(query):
    return str(query).lstrip().upper().startswith("LISTEN")


class WakePipe:
    """What core's runner selects on. Wake-ups coalesce: the pipe holds at
    most one byte until the runner drains it, so a flood of triggers while
    a long job runs never fills it, and ``wake`` never blocks."""

    def __init__(self):
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._pending = False
        self._closed = False

    def fileno(self):
        return self._read

    def wake(self):
        """Call with the connection's lock held, as ``drain``."""
        with contextlib.suppress(OSError):
            if not self._closed and not self._pending:
                self._pending = True
                os.write(self._write, b"!")

    def drain(self):
        with contextlib.suppress(OSError):
            while os.read(self._read, 512):
                pass
        self._pending = False

    def close(self):
        self._closed = True
        os.close(self._write)
        os.close(self._read)


def trigger_engine(name, route, max_delay=MAX_RETRY_DELAY):
    """The listener engine of one cron runner's trigger listener."""
    return ListenerEngine(
        ListenerTexts(
            f"cron trigger listener ({name})",
            "the cron runner polls for jobs now to catch up",
            WHILE_DOWN,
        ),
        lambda error: diagnose_connection_error(error, route)[1],
        max_delay=max_delay,
    )


class TriggerListener:
    """The trigger LISTEN of one runner, on its own psycopg2 connection.

    Its reader thread is the only one that reads the socket: it moves what
    arrives to an inbox and calls ``on_arrival``; when the connection is
    lost, it reconnects as the engine says and runs the LISTENs again.
    """

    def __init__(self, route, engine, on_arrival, connect=psycopg2.connect):
        self.route = route
        self.engine = engine
        self._on_arrival = on_arrival
        self._connect = connect
        self._lock = threading.RLock()
        self._pg = None
        self._listens = []
        self._inbox = []
        self._next_delay = None
        #: set when closed; ends the reader thread and the watch
        self.closed = threading.Event()
        #: {payload: TokenProbe} of the checks under way
        self.probes = {}
        #: cron triggers received (the checks' own excluded)
        self.triggers = 0

    def start(self, name):
        """Connect once now (or log why not), then read in the background."""
        try:
            self._open()
        except Exception as error:
            self._next_delay = self.engine.down(error, was_up=False)
        threading.Thread(
            target=self._read, name=f"bus_alt_connection.{name}", daemon=True
        ).start()

    def listen(self, statement):
        """Remember a LISTEN for every connection; run it if connected."""
        first = statement not in self._listens
        if first:
            self._listens.append(statement)
        if self.execute(statement) is not None and first:
            self._listening()  # the first LISTEN on this connection

    def execute(self, query, params=None):
        """Run ``query`` on the connection; None when not connected."""
        with self._lock:
            pg = self._pg
            if pg is None:
                return None
            try:
                with pg.cursor() as cr:
                    cr.execute(query, params)
                    return cr.fetchall() if cr.description else []
            except psycopg2.Error as error:
                if not pg.closed:
                    raise
                self._lost(pg, error)
                return None

    def take_inbox(self):
        with self._lock:
            arrived, self._inbox = self._inbox, []
        return arrived

    @property
    def backend_pid(self):
        """The PostgreSQL backend's pid while connected, else None."""
        pg = self._pg
        return pg.get_backend_pid() if pg is not None else None

    def close(self):
        with self._lock:
            self.closed.set()
            pg, self._pg = self._pg, None
        if pg is not None:
            pg.close()

    def _open(self):
        pg = self._connect(
            **listener_params(self.route, application_name=trigger_application_name())
        )
        try:
            pg.autocommit = True
            # on a standby core would skip its LISTEN for good: retry instead
            refuse_standby(pg)
            with pg.cursor() as cr:
                for statement in self._listens:
                    cr.execute(statement)
        except Exception:
            pg.close()
            raise
        with self._lock:
            self._pg = pg
        self.engine.up(self.route.describe(), self.engine.connected_line(self.route))
        if self._listens:  # _open ran them: a reconnect, or a late first connect
            self._listening()

    def _listening(self):
        """A LISTEN is active: a check sent now can arrive."""
        watch = self.engine.watch
        if watch is not None:
            watch.listener_connected(self._pg)

    def _lost(self, pg, error):
        with self._lock:
            if self._pg is not pg:
                return  # already handled
            self._pg = None
        with contextlib.suppress(psycopg2.Error):
            pg.close()
        self._next_delay = self.engine.down(error, was_up=True)

    def _read(self):
        while not self.closed.is_set():
            pg = self._pg
            if pg is None:
                self._reconnect()
                continue
            try:
                select.select([pg], [], [], READ_TIMEOUT)
                with self._lock:
                    pg.poll()
                    arrived = self._take_notifies(pg)
            except (psycopg2.Error, OSError, ValueError) as error:
                if not self.closed.is_set():
                    self._lost(pg, error)
                continue
            if arrived:
                self._on_arrival()

    def _reconnect(self):
        delay = self._next_delay if self._next_delay is not None else retry_delay(1)
        if self.closed.wait(delay):
            return
        try:
            self._open()
        except Exception as error:
            self._next_delay = self.engine.down(error, was_up=False)
            return
        self._on_arrival()  # core's runner polls for jobs: the catch-up

    def _take_notifies(self, pg):
        """Move what arrived to the inbox; True if core should wake."""
        arrived = False
        for notify in pg.notifies:
            probe = self.probes.get(notify.payload)
            if probe is not None:
                probe.arrived()
            elif not is_token(notify.payload):
                self._inbox.append(notify)
                self.triggers += 1
                arrived = True
        pg.notifies.clear()
        del self._inbox[:-MAX_KEPT_NOTIFIES]
        return arrived


class TriggerConnection:
    """What core's cron runner selects on and polls (``cr._cnx``).

    Core's runner selects on a wake pipe, never on the socket, so no
    notification can be read by one thread while another waits on it.
    """

    def __init__(
        self,
        route,
        name,
        send_notify=None,
        explain_deafness=None,
        connect=psycopg2.connect,
        selfcheck_timeout=SELF_CHECK_TIMEOUT,
        heartbeat_interval=HEARTBEAT_INTERVAL,
        max_delay=MAX_RETRY_DELAY,
        deaf_level=logging.ERROR,
        on_close=None,
    ):
        """:param send_notify: ``send_notify(payload)`` sends a NOTIFY on
            ``cron_trigger`` through Odoo's own route (the checks); None: no
            checks
        :param deaf_level: how a failed self-check is logged (WARNING when
            a deaf route is expected to happen, in imdispatcher_mode auto)
        :param on_close: called once, in the thread that closes it"""
        self.route = route
        self.name = name
        self._on_close = on_close
        self._lock = threading.Lock()
        self._wake = WakePipe()
        self.engine = trigger_engine(name, route, max_delay)
        self.listener = TriggerListener(route, self.engine, self._wake_runner, connect)
        if send_notify is not None:
            self.engine.watch = ListenerWatch(
                self.engine.texts.subject,
                route,
                new_probe=lambda: TokenProbe(self.listener.probes),
                send_notify=send_notify,
                explain_deafness=explain_deafness or (lambda: "the route cannot hear"),
                interrupt_listener=interrupt_connection,
                stop_event=self.listener.closed,
                interval=heartbeat_interval,
                timeout=selfcheck_timeout,
                deaf_level=deaf_level,
                deaf_consequence=DEAF_CONSEQUENCE,
            )
        self.notifies = []

    @property
    def watch(self):
        return self.engine.watch

    @property
    def state(self):
        return self.engine.state

    @property
    def backend_pid(self):
        return self.listener.backend_pid

    @property
    def triggers(self):
        return self.listener.triggers

    @property
    def closed(self):
        return self.listener.closed.is_set()

    def start(self):
        """Connect, then read (and check) in the background."""
        self.listener.start(self.name)
        if self.watch is not None:
            self.watch.start(f"bus_alt_connection.{self.name}.watch")

    def listen(self, statement):
        self.listener.listen(statement)

    def execute(self, query, params=None):
        return self.listener.execute(query, params)

    # what core uses --------------------------------------------------------

    def fileno(self):
        return self._wake.fileno()

    def poll(self):
        """Hand the notifications the reader thread received to core."""
        if self.closed:
            raise psycopg2.InterfaceError("connection already closed")
        with self._lock:
            self._wake.drain()
            self.notifies.extend(self.listener.take_inbox())
        del self.notifies[:-MAX_KEPT_NOTIFIES]

    def close(self):
        with self._lock:
            if self.closed:
                return
            self.listener.closed.set()
            self._wake.close()
        self.listener.close()
        if self.watch is not None:
            self.watch.stop()
        if self._on_close is not None:
            self._on_close()

    def _wake_runner(self):
        with self._lock:
            self._wake.wake()


class TriggerCursor:
    """What core's cron runner gets from ``db_connect('postgres').cursor()``.

    Core runs ``SELECT pg_is_in_recovery()`` and ``LISTEN cron_trigger`` on
    it, commits, then only uses ``_cnx``. While the route is down, a query
    other than LISTEN runs through ``fallback_execute`` (Odoo's own route),
    and LISTEN waits for the reconnect.
    """

    def __init__(self, connection, fallback_execute):
        self._cnx = connection
        self._fallback_execute = fallback_execute
        self._rows = []

    def execute(self, query, params=None):
        self._rows = []
        if is_listen(query):
            self._cnx.listen(query)
            return
        rows = self._cnx.execute(query, params)
        if rows is None:
            rows = self._fallback_execute(query, params)
        self._rows = list(rows)

    def fetchone(self):
        return self._rows.pop(0) if self._rows else None

    def fetchall(self):
        rows, self._rows = self._rows, []
        return rows

    def commit(self):
        """The connection is in autocommit: LISTEN is active at once."""

    def rollback(self):
        """Nothing to roll back in autocommit."""

    def close(self):
        self._cnx.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
