"""Retry policy, logs and state of the bus listener.

Plain Python. The Odoo glue hands each attempt of core's dispatcher loop to
``ListenerSupervisor.run_attempt``; this module decides what is logged, how
long to wait before the next attempt, and what happens once the listener is
back (catch-up).
"""

import dataclasses
import logging
import random
import threading
import time

from ..route.config import BUS_DATABASE, RouteConfigError
from ..route.connection import (
    StandbyRoute,
    diagnose_connection_error,
    first_line,
)

_logger = logging.getLogger(__name__)

FIRST_RETRY_DELAY = 1.0
FAST_RETRIES = 10
MAX_RETRY_DELAY = 30.0
#: How long the dispatcher idles between checks when the route is unusable.
IDLE_WAIT = 3600.0
#: auto mode: failed connects of a route that never worked before polling
AUTO_SWITCH_FAILURES = FAST_RETRIES
LISTEN_BACK_HINT = (
    "for LISTEN, point imdispatcher_db_host/imdispatcher_db_port at "
    "PostgreSQL itself or at a session-mode pool of database 'postgres' "
    "(check with odoo-bin bus_check)"
)
#: auto mode: how often a polling bus tries the listener route again
LISTEN_RETRY_INTERVAL = 300.0


@dataclasses.dataclass
class ListenerState:
    """What a health check wants to know about the listener."""

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


@dataclasses.dataclass
class ModeState:
    """Which way the dispatcher learns about new notifications, and why."""

    configured: str = "listen"
    configured_source: str = "default"
    #: "listen" or "poll"
    active: str = "listen"
    reason: str = "configured"
    #: seconds between polls
    poll_interval: float = 0.25


def retry_delay(failures, rng=random.random, first=FIRST_RETRY_DELAY, cap=None):
    """Seconds to wait after ``failures`` consecutive failed attempts (>= 1).

    The first ``FAST_RETRIES`` waits are at most ``first`` seconds, so that
    a restart or a failover (a few seconds) costs at most about a second
    once the server is back; after that the wait doubles up to ``cap``.
    Each wait is jittered ("equal jitter": between half and all of it), so
    that the servers of a cluster do not reconnect in step.
    """
    cap = MAX_RETRY_DELAY if cap is None else cap
    ceiling = min(cap, first * 2 ** max(0, failures - FAST_RETRIES))
    return ceiling / 2 + rng() * ceiling / 2


class ListenerSupervisor:
    """Runs attempts of core's dispatcher loop on the listener route."""

    def __init__(
        self,
        resolve_route,
        stop_event,
        clock=time.monotonic,
        rng=random.random,
        max_delay=MAX_RETRY_DELAY,
        mode=None,
        db_host_works=None,
        listen_works=None,
        retry_interval=LISTEN_RETRY_INTERVAL,
    ):
        """:param mode: a ModeState (listen, as configured, by default)
        :param db_host_works: auto mode: returns whether Odoo's own route
            answers, before polling for a listener route that fails
        :param listen_works: auto mode: ``listen_works(route)`` returns
            (True, detail) when a NOTIFY through db_host reaches a LISTEN on
            the route; tried every ``retry_interval`` seconds while polling
        """
        self._resolve_route = resolve_route
        self._stop_event = stop_event
        self._clock = clock
        self._rng = rng
        self._max_delay = max_delay
        self._route = None
        self._route_error_logged = False
        self._last_logged_reason = None
        self._traceback_logged = set()
        self._consecutive_failures = 0
        self.state = ListenerState()
        self.mode = mode or ModeState()
        self._db_host_works = db_host_works or (lambda: True)
        self._listen_works = listen_works
        self._retry_interval = retry_interval
        #: the ListenerWatch (self-check, heartbeat), once the glue starts it
        self.watch = None

    def route(self):
        """The resolved route, or None (logged once) when it cannot work."""
        if self._route is None and not self._route_error_logged:
            try:
                self._route = self._resolve_route()
            except RouteConfigError as error:
                self._route_error_logged = True
                self.state.last_error = str(error)
                if self.mode.configured != "listen":
                    return None  # polling does not need the route
                _logger.error(
                    "bus_alt_connection: the bus listener is not started: %s. "
                    "Fix the value and restart Odoo; HTTP keeps serving, but "
                    "live notifications wait for a page reload.",
                    error,
                )
                return None
            self._log_route(self._route)
        return self._route

    def _log_route(self, route):
        # in auto mode the self-check finds out whether db_host can listen
        if not route.configured and self.mode.configured == "listen":
            _logger.warning(
                "bus_alt_connection is loaded but no imdispatcher_db_* option "
                "is set: the bus still listens through db_host (%s). Behind "
                "a transaction-mode pooler such as PgBouncer it receives "
                "nothing; set imdispatcher_db_host and imdispatcher_db_port "
                "to a direct PostgreSQL route.",
                route.describe(),
            )
        if route.name != BUS_DATABASE:
            _logger.info(
                "bus_alt_connection: the listener uses database %r (%s); "
                "Odoo sends bus notifications to database %r through "
                "db_host, so %r must reach that same database (e.g. a "
                "session-mode PgBouncer alias of %r) or nothing arrives.",
                route.name,
                route.source("name"),
                BUS_DATABASE,
                route.name,
                BUS_DATABASE,
            )

    def run_attempt(self, core_loop, catch_up):
        """Run one attempt of core's loop; never raises, except on shutdown.

        :param core_loop: ``core_loop(route, on_listening)`` runs core's
            dispatcher loop with its LISTEN connection on ``route`` and calls
            ``on_listening(connection)`` once LISTEN is committed.
        :param catch_up: called once listening, to wake the websockets so
            that they read what was committed while the listener was down.
        """
        route = self.route()
        if route is None:
            if self.mode.configured == "auto":
                self.switch_to_polling(
                    f"the listener route cannot work: {self.state.last_error}",
                    level=logging.WARNING,
                )
            else:
                self._stop_event.wait(IDLE_WAIT)
            return
        listening = []

        def on_listening(connection=None):
            listening.append(True)
            self._on_listening(route)
            watch = self.watch  # read once: auto mode may drop it meanwhile
            if watch is not None:
                watch.listener_connected(connection)
            catch_up()

        try:
            core_loop(route, on_listening)
        except Exception as error:
            if self._stop_event.is_set() or self.mode.active != "listen":
                return
            delay = self._on_failure(route, error, was_listening=bool(listening))
            if self._auto_switch_after_failures():
                return
            self._stop_event.wait(delay)

    def _auto_switch_after_failures(self):
        """auto mode: a route that never connected, while db_host answers."""
        if (
            self.mode.configured != "auto"
            or self.state.connects
            or self._consecutive_failures < AUTO_SWITCH_FAILURES
            or not self._db_host_works()
        ):
            return False
        self.switch_to_polling(
            f"the listener route failed {self._consecutive_failures} connect "
            f"attempts in a row ({self.state.last_error})"
        )
        return True

    def switch_to_polling(self, reason, level=logging.INFO):
        """auto mode: poll, and try the route again in the background.

        ``level``: WARNING when the route's configuration cannot work (it
        is not tried again: Odoo reads it at start), INFO otherwise.
        """
        self.mode.active = "poll"
        self.mode.reason = f"auto-switched: {reason}"
        self._reset_state()
        watch, self.watch = self.watch, None
        if watch is not None:
            watch.stop()
        retry = self._listen_works is not None and self._route is not None
        _logger.log(
            level,
            "bus_alt_connection: %s; imdispatcher_mode is auto, so the bus now "
            "polls bus.bus through db_host%s; %s.",
            reason,
            f", and tries the listener route again every {self._retry_interval:g} "
            "s (imdispatcher_listen_retry_interval)"
            if retry
            else "",
            LISTEN_BACK_HINT if retry else LISTEN_BACK_HINT + ", then restart Odoo",
        )
        if retry:
            threading.Thread(
                target=self._retry_listening,
                name="bus_alt_connection.listen_retry",
                daemon=True,
            ).start()

    def _retry_listening(self):
        route = self._route
        while self.mode.active == "poll":
            if self._stop_event.wait(self._retry_interval):
                return
            works, detail = self._listen_works(route)
            if works:
                self.switch_to_listening(route, detail)
                return
            _logger.debug("bus_alt_connection: listener route still deaf: %s", detail)

    def switch_to_listening(self, route, detail):
        """auto mode: the route hears Odoo again; the poll loop ends, and
        core's loop listens (and wakes the websockets to catch up)."""
        self.mode.active = "listen"
        self.mode.reason = f"auto: the listener route hears Odoo again ({detail})"
        self._reset_state()
        _logger.info(
            "bus_alt_connection: the listener route %s hears what Odoo sends "
            "again (%s); imdispatcher_mode is auto, so the bus listens again.",
            route.describe(),
            detail,
        )

    def _reset_state(self):
        self.state = ListenerState()
        self._consecutive_failures = 0
        self._last_logged_reason = None

    def run_polling(self, poll_loop, catch_up, describe):
        """Run the poll loop until it fails; never raises, except on shutdown.

        :param poll_loop: ``poll_loop(on_polling)`` polls until stopped or a
            poll fails (raises); calls ``on_polling()`` after its first
            successful round and ``self.polled()`` after every round.
        :param catch_up: called once polling works, to wake the websockets.
        :param describe: what the poller reaches, for logs (db_host).
        """
        polling = []

        def on_polling():
            polling.append(True)
            self._on_polling(describe)
            catch_up()

        try:
            poll_loop(on_polling)
        except Exception as error:
            if self._stop_event.is_set():
                return
            delay = self._on_poll_failure(error, describe, bool(polling))
            self._stop_event.wait(delay)

    def polled(self, queries=0):
        """A poll round succeeded, with ``queries`` bus.bus queries."""
        self.state.last_poll_at = self._clock()
        self.state.poll_queries += queries

    def _on_polling(self, describe):
        now = self._clock()
        state = self.state
        if state.connects:
            _logger.info(
                "bus_alt_connection: bus poller back on %s after %.1f s down; "
                "waking the websockets to catch up.",
                describe,
                now - state.down_since if state.down_since is not None else 0.0,
            )
        else:
            _logger.info(
                "bus_alt_connection: bus poller started: new bus.bus rows are "
                "read through %s every %.0f ms (imdispatcher_mode %s%s).",
                describe,
                self.mode.poll_interval * 1000,
                self.mode.configured,
                ", switched from LISTEN" if self.mode.configured == "auto" else "",
            )
        state.last_poll_at = now
        self._mark_up(now)

    def _on_poll_failure(self, error, describe, was_polling):
        self._mark_down()
        reason = (
            f"{first_line(error)} [db_host {describe}]; check that db_host, "
            "db_port, db_user and db_password reach the databases"
        )
        self.state.last_error = reason
        delay = retry_delay(self._consecutive_failures, self._rng, cap=self._max_delay)
        self._log_failure(error, reason, was_polling, delay, subject="bus poller")
        return delay

    def _on_listening(self, route):
        now = self._clock()
        state = self.state
        down_for = now - state.down_since if state.down_since is not None else None
        if state.connects:
            _logger.info(
                "bus_alt_connection: bus listener back on %s after %.1f s "
                "down; waking the websockets to catch up.",
                route.describe(),
                down_for or 0.0,
            )
        else:
            _logger.info(
                "bus_alt_connection: bus listener connected to %s "
                "(host %s, port %s, database %s, user %s)%s.",
                route.describe(),
                route.source("host"),
                route.source("port"),
                route.source("name"),
                route.source("user"),
                f" after {down_for:.1f} s of failed attempts" if down_for else "",
            )
        self._mark_up(now)

    def _mark_up(self, now):
        state = self.state
        state.connected = True
        state.connected_since = now
        state.down_since = None
        state.connects += 1
        self._consecutive_failures = 0
        self._last_logged_reason = None

    def _mark_down(self):
        state = self.state
        state.connected = False
        if state.down_since is None:
            state.down_since = self._clock()
        state.failed_attempts += 1
        self._consecutive_failures += 1

    def _on_failure(self, route, error, was_listening):
        watch = self.watch  # read once: auto mode may drop it meanwhile
        if watch is not None:
            watch.listener_lost()
        self._mark_down()
        _options, reason = diagnose_connection_error(error, route)
        self.state.last_error = reason
        delay = retry_delay(self._consecutive_failures, self._rng, cap=self._max_delay)
        self._log_failure(error, reason, was_listening, delay)
        return delay

    def _log_failure(self, error, reason, was_listening, delay, subject="bus listener"):
        """One line per failed try.

        ERROR the first time a route that never worked fails for a given
        reason (a configuration to fix); WARNING otherwise (a restart, a
        failover, the same reason again).
        """
        if was_listening:
            _logger.warning(
                "bus_alt_connection: %s lost its connection: %s; "
                "reconnecting in %.1f s.",
                subject,
                reason,
                delay,
            )
        elif reason == self._last_logged_reason:
            _logger.warning(
                "bus_alt_connection: %s still cannot connect "
                "(attempt %d): %s; retrying in %.1f s.",
                subject,
                self._consecutive_failures,
                first_line(error),
                delay,
            )
        else:
            level = logging.WARNING if self.state.connects else logging.ERROR
            _logger.log(
                level,
                "bus_alt_connection: %s cannot connect: %s; retrying in %.1f s.",
                subject,
                reason,
                delay,
            )
        self._last_logged_reason = reason
        self._log_traceback_once(error)

    def _log_traceback_once(self, error):
        """A bug (not a database error) deserves its traceback, once."""
        kind = type(error)
        if _is_database_error(error) or kind in self._traceback_logged:
            return
        self._traceback_logged.add(kind)
        _logger.error(
            "bus_alt_connection: unexpected error in the bus listener "
            "(traceback shown once per error type)",
            exc_info=error,
        )


def _is_database_error(error):
    if isinstance(error, StandbyRoute):
        return True
    module = type(error).__module__ or ""
    return module.startswith("psycopg2") or type(error).__name__ == "PoolError"
