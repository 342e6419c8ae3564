"""The listener engine: what the bus and the cron trigger listeners share.

Plain Python. A listener reports each connect (``up``) and each failure
(``down``) to its ``ListenerEngine``, which keeps its state, says how long
to wait before the next attempt, writes the log lines, and tells the
listener's watch (self-check and heartbeat, ``watch.py``). So a change to
the retry policy, the failure logs or the checks lands in both listeners.

The failure policy: ERROR the first time a listener that never worked
fails for a given reason (a configuration to fix); WARNING otherwise (a
restart, a failover, the same reason again); a traceback only for an error
that is not a database error, once per error type.
"""

import dataclasses
import logging
import random
import time

from ..route.connection import StandbyRoute, first_line
from .retry import MAX_RETRY_DELAY, retry_delay

_logger = logging.getLogger(__name__)


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
    #: poll mode: bus.bus queries so far
    poll_queries: int = 0

    @property
    def reconnects(self):
        """Connects after the first."""
        return max(0, self.connects - 1)


@dataclasses.dataclass(frozen=True)
class ListenerTexts:
    """How one listener's log lines name it and what its downtime means."""

    #: "bus listener", "cron trigger listener (cron0)", "bus poller"
    subject: str
    #: what happens once it is back, e.g. "waking the websockets to catch up"
    catch_up: str
    #: appended to failure lines, e.g. "; triggered jobs wait for core's polling"
    while_down: str = ""


class ListenerEngine:
    """State, retry waits and log lines of one listener."""

    def __init__(
        self,
        texts,
        diagnose=first_line,
        clock=time.monotonic,
        rng=random.random,
        max_delay=MAX_RETRY_DELAY,
    ):
        """:param diagnose: ``diagnose(error)`` returns the reason to log,
        naming the options at fault"""
        self.texts = texts
        self._diagnose = diagnose
        self._clock = clock
        self._rng = rng
        self._max_delay = max_delay
        self.state = ListenerState()
        #: the ListenerWatch told about each connect and loss, if any
        self.watch = None
        #: attempts that failed in a row, a lost connection included
        self.failures = 0
        #: connects that failed in a row since the last connect or loss
        self.failed_connects = 0
        self._last_logged_reason = None
        self._traceback_logged = set()

    def up(self, where, first_connect, connection=None):
        """The listener works (LISTEN active, or a poll round passed).

        :param first_connect: the INFO line of the first connect; later
            connects log that the listener is back, and for how long it
            was down.
        """
        now = self._clock()
        if self.state.connects:
            _logger.info(
                "bus_alt_connection: %s back on %s after %.1f s down; %s.",
                self.texts.subject,
                where,
                self.down_for(now) or 0.0,
                self.texts.catch_up,
            )
        else:
            _logger.info("bus_alt_connection: %s", first_connect)
        state = self.state
        state.connected = True
        state.connected_since = now
        state.down_since = None
        state.connects += 1
        self.failures = self.failed_connects = 0
        self._last_logged_reason = None
        watch = self.watch  # read once: auto mode may drop it meanwhile
        if watch is not None:
            watch.listener_connected(connection)

    def connected_line(self, route):
        """The first connect's line of a listener on ``route``."""
        down_for = self.down_for()
        return (
            f"{self.texts.subject} connected to {route.describe()} (host "
            f"{route.source('host')}, port {route.source('port')}, database "
            f"{route.source('name')}, user {route.source('user')})"
            + (f" after {down_for:.1f} s of failed attempts" if down_for else "")
            + "."
        )

    def down_for(self, now=None):
        """Seconds since the listener went down, None while up."""
        if self.state.down_since is None:
            return None
        return (self._clock() if now is None else now) - self.state.down_since

    def down(self, error, was_up, reason=None):
        """An attempt failed or the connection was lost; returns the wait.

        :param reason: the line to log; by default ``diagnose(error)``
        """
        watch = self.watch
        if watch is not None:
            watch.listener_lost()
        state = self.state
        state.connected = False
        if state.down_since is None:
            state.down_since = self._clock()
        state.failed_attempts += 1
        self.failures += 1
        self.failed_connects = 0 if was_up else self.failed_connects + 1
        reason = reason or self._diagnose(error)
        state.last_error = reason
        delay = retry_delay(self.failures, self._rng, cap=self._max_delay)
        self._log_down(error, reason, was_up, delay)
        return delay

    def _log_down(self, error, reason, was_up, delay):
        subject, while_down = self.texts.subject, self.texts.while_down
        if was_up:
            _logger.warning(
                "bus_alt_connection: %s lost its connection: %s; reconnecting "
                "in %.1f s%s.",
                subject,
                reason,
                delay,
                while_down,
            )
        elif reason == self._last_logged_reason:
            _logger.warning(
                "bus_alt_connection: %s still cannot connect (attempt %d): %s; "
                "retrying in %.1f s%s.",
                subject,
                self.failures,
                first_line(error),
                delay,
                while_down,
            )
        else:
            _logger.log(
                logging.WARNING if self.state.connects else logging.ERROR,
                "bus_alt_connection: %s cannot connect: %s; retrying in %.1f s%s.",
                subject,
                reason,
                delay,
                while_down,
            )
        self._last_logged_reason = reason
        self._log_traceback_once(error)

    def _log_traceback_once(self, error):
        """A bug (not a database error) deserves its traceback, once."""
        if not is_database_error(error):
            traceback_once(
                _logger,
                self._traceback_logged,
                error,
                "bus_alt_connection: unexpected error in the %s (traceback "
                "shown once per error type)",
                self.texts.subject,
            )


def traceback_once(logger, logged, error, message, *args):
    """An ERROR with ``error``'s traceback, once per error type; ``logged``
    is the set of the types already shown."""
    if type(error) in logged:
        return
    logged.add(type(error))
    logger.error(message, *args, exc_info=error)


def is_database_error(error):
    if isinstance(error, StandbyRoute):
        return True
    module = type(error).__module__ or ""
    return module.startswith("psycopg2") or type(error).__name__ == "PoolError"
