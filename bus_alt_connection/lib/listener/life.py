"""The life of a listener, written once: connect, self-check, serve, lost,
back off. The bus listener (``bus.py``) and each cron runner's trigger
connection (``cron.py``) live it through ``ListenerLife.attempt``.

Logs: ERROR the first time a listener that never worked fails for a given
reason (a configuration to fix), WARNING otherwise (a restart, a failover);
a traceback only for an error that is not a database error, once per type."""

import dataclasses
import logging
import random
import time

from ..log_once import traceback_once
from ..route.connection import StandbyRoute, first_line, interrupt_connection

_logger = logging.getLogger(__name__)

FIRST_RETRY_DELAY = 1.0
FAST_RETRIES = 10


def retry_delay(failures, rng=random.random, cap=30.0):
    """Seconds to wait after ``failures`` failed attempts in a row: under a
    second for the first ``FAST_RETRIES`` (a restart or a failover is over
    in about a second), then doubling up to ``cap``; jittered (half to all of
    it) so that the servers of a cluster do not reconnect in step."""
    ceiling = min(cap, FIRST_RETRY_DELAY * 2 ** max(0, failures - FAST_RETRIES))
    return ceiling / 2 + rng() * ceiling / 2


@dataclasses.dataclass
class ListenerState:
    """What a health check or a metric wants to know about a listener."""

    connected: bool = False
    connected_since: float | None = None
    down_since: float | None = None
    connects: int = 0
    failed_attempts: int = 0
    last_error: str | None = None
    #: poll mode: when the last poll of every database succeeded
    last_poll_at: float | None = None
    poll_queries: int = 0  # poll mode: bus.bus queries so far

    @property
    def reconnects(self):
        return max(0, self.connects - 1)


class ListenerLife:
    """What every listener does; subclasses say how they connect, catch up,
    and what the watch needs (``new_probe``, ``send_probe``,
    ``explain_deafness``, ``deaf``)."""

    #: how log lines name it: "bus listener", "cron trigger listener (cron0)"
    subject = "listener"
    #: what happens once it is back, e.g. "waking the websockets to catch up"
    catch_up_text = "catching up"
    while_down = ""  # appended to failure lines: what waits meanwhile
    #: how a route that connects but cannot hear is logged, and what waits
    deaf_level = logging.ERROR
    deaf_consequence = ""
    #: auto mode: failed checks call ``deaf`` instead of logging an ERROR
    polls_when_deaf = False

    def __init__(self, settings, stop_event, clock=time.monotonic, rng=random.random):
        self.settings = settings
        self.stop_event = stop_event
        self.clock = clock
        self._rng = rng
        self.watch = None  # a ListenerWatch, told of each connect and loss
        self._traceback_logged = set()
        self._lives = 0
        self._new_life()

    def start_afresh(self):
        """A new life (auto mode's switches): fresh state, the watch stopped;
        a failure of the previous life is then no failure of this one."""
        watch, self.watch = self.watch, None
        if watch is not None:
            watch.stop()
        self._new_life()

    def _new_life(self):
        self._lives += 1
        self.state = ListenerState()
        self.failures = 0  # attempts that failed in a row, a lost connection included
        #: connects that failed in a row since the last connect or loss
        self.failed_connects = 0
        self._last_logged_reason = None

    def attempt(self, connect_and_serve):
        """Connect, serve until it ends; return the seconds to wait before
        the next attempt, or None after an end on purpose (shutdown, a new
        life)."""
        life = self._lives
        connected = []

        def on_connected(connection=None):
            connected.append(True)
            self.connected(connection)

        try:
            connect_and_serve(on_connected)
        except Exception as error:
            if not self.stop_event.is_set() and life == self._lives:
                return self.lost(error, was_up=bool(connected))
        return None

    def connected(self, connection=None):
        """LISTEN is active (or a poll round passed): log, check, catch up."""
        now = self.clock()
        state = self.state
        if state.connects:
            _logger.info(
                "bus_alt_connection: %s back on %s after %.1f s down; %s.",
                self.subject,
                self.describe(),
                now - (state.down_since or now),
                self.catch_up_text,
            )
        else:
            _logger.info("bus_alt_connection: %s", self.first_connect_line(now))
        state.connected, state.connected_since, state.down_since = True, now, None
        state.connects += 1
        self.failures = self.failed_connects = 0
        self._last_logged_reason = None
        watch = self.watch  # read once: auto mode may drop it meanwhile
        if watch is not None:
            watch.listener_connected(connection)
        self.catch_up()

    def lost(self, error, was_up):
        """The attempt failed, or the connection was lost; returns the wait."""
        watch = self.watch
        if watch is not None:
            watch.listener_lost()
        state = self.state
        state.connected = False
        if state.down_since is None:
            state.down_since = self.clock()
        state.failed_attempts += 1
        self.failures += 1
        self.failed_connects = 0 if was_up else self.failed_connects + 1
        reason = state.last_error = self.diagnose(error)
        delay = retry_delay(self.failures, self._rng, self.settings.reconnect_max_delay)
        self._log_lost(error, reason, was_up, delay)
        return delay

    def describe(self):
        return self.route.describe()

    def first_connect_line(self, now):
        return self.route_connected_line(self.route, now)

    def route_connected_line(self, route, now):
        down_since = self.state.down_since
        down_for = None if down_since is None else now - down_since
        return (
            f"{self.subject} connected to {route.describe()} (host "
            f"{route.source('host')}, port {route.source('port')}, database "
            f"{route.source('name')}, user {route.source('user')})"
            + (f" after {down_for:.1f} s of failed attempts" if down_for else "")
            + "."
        )

    def diagnose(self, error):
        """The reason to log, naming the options at fault."""
        return first_line(error)

    def catch_up(self):
        """Once connected: make up for what was sent while it was down."""

    def interrupt(self, connection):
        """The watch found it deaf: make its connection fail, to reconnect."""
        interrupt_connection(connection)

    def _log_lost(self, error, reason, was_up, delay):
        subject, while_down, level = self.subject, self.while_down, logging.WARNING
        if was_up:
            message = "%s lost its connection: %s; reconnecting in %.1f s%s."
            args = (subject, reason, delay, while_down)
        elif reason == self._last_logged_reason:
            message = "%s still cannot connect (attempt %d): %s; retrying in %.1f s%s."
            args = (subject, self.failures, first_line(error), delay, while_down)
        else:
            message = "%s cannot connect: %s; retrying in %.1f s%s."
            args = (subject, reason, delay, while_down)
            if not self.state.connects:
                level = logging.ERROR  # never worked: a configuration to fix
        _logger.log(level, "bus_alt_connection: " + message, *args)
        self._last_logged_reason = reason
        if not is_database_error(error):
            traceback_once(
                _logger,
                self._traceback_logged,
                error,
                "bus_alt_connection: unexpected error in the %s (traceback "
                "shown once per error type)",
                subject,
            )


def is_database_error(error):
    if isinstance(error, StandbyRoute):
        return True
    module = type(error).__module__ or ""
    return module.startswith("psycopg2") or type(error).__name__ == "PoolError"
