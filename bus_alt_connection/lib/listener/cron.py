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
  runner through a pipe (``fileno()``) when a trigger arrives, so only one
  thread ever reads the socket;
* when the connection is lost, ``poll()`` does not raise (core's threaded
  runner of 16.0-18.0 would die, and the cron worker would crash): the
  reader reconnects with the bus listener's retry policy, runs the LISTEN
  again and wakes the runner, whose polling round is the catch-up;
  meanwhile the runner keeps core's polling pace;
* after each connect a self-check NOTIFY goes through Odoo's own route: if
  it does not arrive, one ERROR says that triggers cannot reach this route.
"""

import contextlib
import logging
import os
import secrets
import select
import threading
import time

import psycopg2

from ..route.connection import (
    diagnose_connection_error,
    first_line,
    listener_params,
)
from .bus import MAX_RETRY_DELAY, retry_delay
from .watch import SELF_CHECK_TIMEOUT

_logger = logging.getLogger(__name__)

CRON_CHANNEL = "cron_trigger"
SELF_CHECK_PREFIX = "bus_alt_connection-selfcheck-"
#: Core's runners of 16.0-18.0 never read ``notifies``; keep it bounded.
MAX_KEPT_NOTIFIES = 1000
#: How long the reader waits on the socket before it looks again.
READ_TIMEOUT = 1.0


def trigger_application_name():
    """How a cron trigger listener shows in ``pg_stat_activity``."""
    return f"odoo-cron-listener-{os.getpid()}"


def is_listen(query):
    return str(query).lstrip().upper().startswith("LISTEN")


class TriggerConnection:
    """What core's cron runner selects on and polls (``cr._cnx``).

    One reader thread owns the psycopg2 connection: it waits on it, reads
    the notifications into an inbox, and wakes core's runner through a pipe.
    Core's runner selects on that pipe, so no notification can be read by
    one thread while another waits on the socket. Wake-ups coalesce: the
    pipe holds at most one byte until the runner polls, so a flood of
    triggers while a long job runs never fills it.
    """

    def __init__(
        self,
        route,
        name,
        send_notify=None,
        explain_deafness=None,
        connect=psycopg2.connect,
        selfcheck_timeout=SELF_CHECK_TIMEOUT,
        max_delay=MAX_RETRY_DELAY,
        deaf_level=logging.ERROR,
        on_close=None,
    ):
        """:param send_notify: ``send_notify(payload)`` sends a NOTIFY on
            ``cron_trigger`` through Odoo's own route (the self-check)
        :param deaf_level: how a failed self-check is logged (WARNING when
            a deaf route is expected to happen, in imdispatcher_mode auto)
        :param on_close: called once, in the thread that closes it"""
        self.route = route
        self._deaf_level = deaf_level
        self._on_close = on_close
        self.name = name
        self._send_notify = send_notify
        self._explain_deafness = explain_deafness
        self._connect = connect
        self._selfcheck_timeout = selfcheck_timeout
        self._max_delay = max_delay
        self._lock = threading.RLock()
        self._pg = None
        self._listens = []
        self._inbox = []
        self._closed = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._wake_pending = False
        self._failures = 0
        self._down_since = None
        self._last_reason = None
        self._self_checks = {}
        self.connects = 0
        #: cron triggers received (the self-check's own excluded)
        self.triggers = 0
        self.notifies = []
        self.heard_self_check = None

    # what core uses --------------------------------------------------------

    @property
    def closed(self):
        return self._closed.is_set()

    def fileno(self):
        return self._wake_r

    def poll(self):
        """Hand the notifications the reader thread received to core."""
        if self.closed:
            raise psycopg2.InterfaceError("connection already closed")
        with self._lock:
            self._drain_wake_pipe()
            self._wake_pending = False
            self.notifies.extend(self._inbox)
            self._inbox.clear()
        del self.notifies[:-MAX_KEPT_NOTIFIES]

    def close(self):
        with self._lock:
            if self.closed:
                return
            self._closed.set()
            pg, self._pg = self._pg, None
            os.close(self._wake_w)
            os.close(self._wake_r)
        if pg is not None:
            pg.close()
        if self._on_close is not None:
            self._on_close()

    # life cycle ------------------------------------------------------------

    def start(self):
        """Connect once now (or log why not), then read in the background."""
        try:
            self._open()
        except Exception as error:
            self._failed(error)
        threading.Thread(
            target=self._read, name=f"bus_alt_connection.{self.name}", daemon=True
        ).start()

    def listen(self, statement):
        """Remember a LISTEN for every connection; run it if connected."""
        first = statement not in self._listens
        if first:
            self._listens.append(statement)
        if self.execute(statement) is not None and first:
            self._start_self_check()  # the first LISTEN on this connection

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

    @property
    def backend_pid(self):
        """The PostgreSQL backend's pid while connected, else None."""
        pg = self._pg
        return pg.get_backend_pid() if pg is not None else None

    def _open(self):
        pg = self._connect(
            **listener_params(self.route, application_name=trigger_application_name())
        )
        try:
            pg.autocommit = True
            with pg.cursor() as cr:
                for statement in self._listens:
                    cr.execute(statement)
        except Exception:
            pg.close()
            raise
        with self._lock:
            self._pg = pg
        self._connected()

    def _connected(self):
        now = time.monotonic()
        if self.connects:
            _logger.info(
                "bus_alt_connection: cron trigger listener (%s) back on %s after "
                "%.1f s down; the cron runner polls for jobs now to catch up.",
                self.name,
                self.route.describe(),
                now - (self._down_since or now),
            )
        else:
            _logger.info(
                "bus_alt_connection: cron trigger listener (%s) connected to %s "
                "(host %s, port %s).",
                self.name,
                self.route.describe(),
                self.route.source("host"),
                self.route.source("port"),
            )
        self.connects += 1
        self._failures = 0
        self._down_since = None
        self._last_reason = None
        if self._listens:  # _open ran them: a reconnect, or a late first connect
            self._start_self_check()

    def _start_self_check(self):
        """Check, in the background, that a NOTIFY through db_host arrives.

        Only once a LISTEN is active: sent before, it would be lost.
        """
        if self._send_notify is not None:
            threading.Thread(
                target=self._self_check,
                name=f"bus_alt_connection.{self.name}.selfcheck",
                daemon=True,
            ).start()

    def _lost(self, pg, error):
        with self._lock:
            if self._pg is not pg:
                return  # already handled
            self._pg = None
        with contextlib.suppress(psycopg2.Error):
            pg.close()
        self._down_since = time.monotonic()
        _options, reason = diagnose_connection_error(error, self.route)
        _logger.warning(
            "bus_alt_connection: cron trigger listener (%s) lost its "
            "connection: %s; reconnecting, cron jobs keep being polled.",
            self.name,
            reason,
        )

    def _failed(self, error):
        if self._down_since is None:
            self._down_since = time.monotonic()
        self._failures += 1
        _options, reason = diagnose_connection_error(error, self.route)
        new_problem = not self.connects and reason != self._last_reason
        _logger.log(
            logging.ERROR if new_problem else logging.WARNING,
            "bus_alt_connection: cron trigger listener (%s) cannot connect "
            "(attempt %d): %s; triggered jobs wait for core's polling round "
            "until it can.",
            self.name,
            self._failures,
            reason if new_problem else first_line(error),
        )
        self._last_reason = reason

    # the reader thread -----------------------------------------------------

    def _read(self):
        while not self.closed:
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
                if not self.closed:
                    self._lost(pg, error)
                continue
            if arrived:
                self._wake_runner()

    def _reconnect(self):
        delay = retry_delay(max(1, self._failures), cap=self._max_delay)
        if self._closed.wait(delay):
            return
        try:
            self._open()
        except Exception as error:
            self._failed(error)
            return
        self._wake_runner()  # core's runner polls for jobs: the catch-up

    def _take_notifies(self, pg):
        """Move what arrived to the inbox; True if core should wake."""
        arrived = False
        for notify in pg.notifies:
            if notify.payload.startswith(SELF_CHECK_PREFIX):
                heard = self._self_checks.get(notify.payload)
                if heard is not None:
                    heard.set()
            else:
                self._inbox.append(notify)
                self.triggers += 1
                arrived = True
        pg.notifies.clear()
        del self._inbox[:-MAX_KEPT_NOTIFIES]
        return arrived

    def _wake_runner(self):
        """One byte in the pipe until the runner polls; never blocks."""
        with self._lock, contextlib.suppress(OSError):
            if not self.closed and not self._wake_pending:
                self._wake_pending = True
                os.write(self._wake_w, b"!")

    def _drain_wake_pipe(self):
        with contextlib.suppress(OSError):
            while os.read(self._wake_r, 512):
                pass

    # self-check ------------------------------------------------------------

    def _self_check(self):
        token = SELF_CHECK_PREFIX + secrets.token_hex(8)
        heard = self._self_checks[token] = threading.Event()
        started = time.monotonic()
        try:
            self._send_notify(token)
            heard.wait(self._selfcheck_timeout)
        except Exception as error:
            _logger.warning(
                "bus_alt_connection: cron trigger listener (%s) could not run "
                "its self-check: %s",
                self.name,
                first_line(error),
            )
            return
        finally:
            self._self_checks.pop(token, None)
        self.heard_self_check = heard.is_set()
        if heard.is_set():
            _logger.info(
                "bus_alt_connection: cron trigger listener (%s) hears Odoo's "
                "NOTIFY (self-check in %.0f ms).",
                self.name,
                (time.monotonic() - started) * 1000,
            )
        elif not self.closed:
            self._log_deaf()

    def _log_deaf(self):
        explanation = (
            self._explain_deafness() if self._explain_deafness is not None else ""
        )
        _logger.log(
            self._deaf_level,
            "bus_alt_connection: cron trigger listener (%s) on %s did not "
            "receive a NOTIFY sent through db_host within %.0f s: %s. "
            "Triggered cron jobs wait for core's polling round (about a "
            "minute); set cron_db_host and cron_db_port (or the bus's "
            "imdispatcher_db_host and imdispatcher_db_port) to a direct "
            "PostgreSQL route.",
            self.name,
            self.route.describe(),
            self._selfcheck_timeout,
            explanation or "the route cannot hear Odoo",
        )


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
