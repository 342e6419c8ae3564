"""Core's ``LISTEN cron_trigger`` connection, on the cron route and resilient.

Core's cron runners take a cursor on ``postgres``, run ``LISTEN
cron_trigger``, then ``select()`` on its connection and call ``poll()``. The
glue hands them a ``TriggerConnection``, both that cursor and ``cr._cnx``:
its own psycopg2 connection on the cron route (never Odoo's pool), read by
a reader thread that lives the listener's life (``life.py``) and wakes the
runner through a ``WakePipe``. A lost connection never makes ``poll()``
raise (core's threaded runner of 16.0-18.0 would die, a cron worker would
crash): the reader reconnects, LISTENs again and wakes the runner, whose
polling round is the catch-up."""

import contextlib
import logging
import os
import select
import threading

import psycopg2

from ..route.connection import (
    diagnose_connection_error,
    listener_params,
    refuse_standby,
)
from .life import ListenerLife
from .watch import ListenerWatch, is_token, token_probe

CRON_CHANNEL = "cron_trigger"
#: Core's runners of 16.0-18.0 never read ``notifies``; keep it bounded.
MAX_KEPT_NOTIFIES = 1000
READ_TIMEOUT = 1.0
FIRST_TRY_WAIT = 15.0  # ``start`` waits for the first connect; libpq's is 10 s


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


class TriggerConnection(ListenerLife):
    """The cursor core's cron runner gets, and its connection (``cr._cnx``).
    While the route is down, a query other than LISTEN (core's ``SELECT
    pg_is_in_recovery()``) runs through ``fallback_execute`` on db_host, and
    LISTEN waits for the connect."""

    catch_up_text = "the cron runner polls for jobs now to catch up"
    while_down = "; triggered jobs wait for core's polling round until then"
    deaf_consequence = (
        ". Triggered cron jobs wait for core's polling round (about a minute); "
        "set cron_db_host and cron_db_port (or the bus's imdispatcher_db_host "
        "and imdispatcher_db_port) to a direct PostgreSQL route."
    )

    def __init__(
        self,
        route,
        name,
        settings,
        send_notify=None,
        explain_deafness=None,
        fallback_execute=None,
        on_close=None,
    ):
        """``send_notify(payload)`` NOTIFYs ``cron_trigger`` through db_host
        for the checks (None: no checks); ``on_close()`` is called once."""
        self.route = route
        self.name = name
        self.subject = f"cron trigger listener ({name})"
        self._send_notify = send_notify
        self._explain_deafness = explain_deafness
        self._fallback_execute = fallback_execute
        self._on_close = on_close
        self._lock = threading.RLock()
        self._wake = WakePipe()
        self._pg = None
        self._listens = []
        self._inbox = []
        self._rows = []
        self._first_try = threading.Event()
        self.closed = threading.Event()  # ends the reader thread and the watch
        self.probes = {}  # {payload: {probe}} of the checks under way
        self.triggers = 0  # cron triggers received, the checks' excluded
        self.notifies = []  # what core's runner reads after ``poll()``
        super().__init__(settings, self.closed)
        if send_notify is not None:
            self.watch = ListenerWatch(self, route)

    @property
    def deaf_level(self):  # auto mode expects deaf routes: the bus polls
        return logging.WARNING if self.settings.mode == "auto" else logging.ERROR

    @property
    def backend_pid(self):
        pg = self._pg
        return pg.get_backend_pid() if pg is not None else None

    def start(self):
        """Try to connect now (core's next queries use the connection, or it is
        logged why not), then live on in the background."""
        threading.Thread(
            target=self._live, name=f"bus_alt_connection.{self.name}", daemon=True
        ).start()
        self._first_try.wait(FIRST_TRY_WAIT)
        if self.watch is not None:
            self.watch.start(f"bus_alt_connection.{self.name}.watch")

    def _live(self):
        delay = 0
        while not self.closed.wait(delay or 0):
            delay = self.attempt(self._connect_and_read)
            self._first_try.set()

    def _connect_and_read(self, on_connected):
        name = f"odoo-cron-listener-{os.getpid()}"  # in pg_stat_activity
        pg = psycopg2.connect(**listener_params(self.route, application_name=name))
        try:
            pg.autocommit = True
            # on a standby core would skip its LISTEN for good: retry instead
            refuse_standby(pg)
            with self._lock:
                with pg.cursor() as cr:
                    for statement in self._listens:
                        cr.execute(statement)
                self._pg = pg
            on_connected()
            self._first_try.set()
            if self._listens:  # ran them: a reconnect, or a late first connect
                self._listening()
            self._read(pg)
        finally:
            with self._lock:
                if self._pg is pg:
                    self._pg = None
            with contextlib.suppress(psycopg2.Error):
                pg.close()

    def _read(self, pg):
        while not self.closed.is_set():
            select.select([pg], [], [], READ_TIMEOUT)
            with self._lock:
                pg.poll()
                arrived = self._take_notifies(pg)
            if arrived:
                self.catch_up()

    def _take_notifies(self, pg):
        """Move what arrived to the inbox (probes excepted); True: wake core."""
        arrived = False
        for notify in pg.notifies:
            probes = self.probes.get(notify.payload, ())
            for probe in probes:
                probe.trigger_notification_dispatching()
            if not probes and not is_token(notify.payload):
                self._inbox.append(notify)
                self.triggers += 1
                arrived = True
        pg.notifies.clear()
        del self._inbox[:-MAX_KEPT_NOTIFIES]
        return arrived

    def _listening(self):  # a check sent now can arrive
        if self.watch is not None:
            self.watch.listener_connected(self._pg)

    def diagnose(self, error):
        return diagnose_connection_error(error, self.route)[1]

    def catch_up(self):  # core's runner polls for jobs
        with self._lock:
            self._wake.wake()

    def new_probe(self):
        return token_probe(self.probes)

    def send_probe(self, payload):
        self._send_notify(payload)

    def explain_deafness(self):
        if self._explain_deafness is None:
            return "the route cannot hear"
        return self._explain_deafness()

    @property
    def _cnx(self):
        return self

    def execute(self, query, params=None):
        self._rows = []
        if str(query).lstrip().upper().startswith("LISTEN"):
            self._listen(query)
            return
        rows = self._execute_here(query, params)
        if rows is None and self._fallback_execute is not None:
            rows = self._fallback_execute(query, params)
        self._rows = list(rows or ())

    def fetchone(self):
        return self._rows.pop(0) if self._rows else None

    def fetchall(self):
        rows, self._rows = self._rows, []
        return rows

    def commit(self):
        """In autocommit: LISTEN is active at once, nothing to roll back."""

    rollback = commit

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _listen(self, statement):
        """Remember a LISTEN for each connection to come; run it if connected."""
        with self._lock:
            first = statement not in self._listens
            if first:
                self._listens.append(statement)
            ran = self._execute_here(statement) is not None
        if ran and first:
            self._listening()  # the first LISTEN on this connection

    def _execute_here(self, query, params=None):
        """Run ``query`` on the connection; None when not connected."""
        with self._lock:
            pg = self._pg
            if pg is None:
                return None
            try:
                with pg.cursor() as cr:
                    cr.execute(query, params)
                    return cr.fetchall() if cr.description else []
            except psycopg2.Error:
                if not pg.closed:
                    raise
                return None  # lost: the reader thread reconnects

    def fileno(self):
        return self._wake.fileno()

    def poll(self):
        """Hand what the reader thread received to core."""
        if self.closed.is_set():
            raise psycopg2.InterfaceError("connection already closed")
        with self._lock:
            self._wake.drain()
            self.notifies.extend(self._inbox)
            self._inbox = []
        del self.notifies[:-MAX_KEPT_NOTIFIES]

    def close(self):
        with self._lock:
            if self.closed.is_set():
                return
            self.closed.set()
            self._wake.close()
            pg, self._pg = self._pg, None
        if pg is not None:
            with contextlib.suppress(psycopg2.Error):
                pg.close()
        if self.watch is not None:
            self.watch.stop()
        if self._on_close is not None:
            self._on_close()
