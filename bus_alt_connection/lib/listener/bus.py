"""The bus listener: core's dispatcher loop, run on the listener route.

Plain Python. The Odoo glue hands each attempt of core's dispatcher loop
to ``ListenerSupervisor.run_attempt`` (and, when the bus polls, each run of
the poll loop to its ``PollerSupervisor``); the listener engine decides what is
logged and how long to wait before the next attempt; once the listener is
back, the websockets are woken to catch up.
"""

import logging
import random
import time

from ..route.config import BUS_DATABASE, RouteConfigError
from ..route.connection import diagnose_connection_error, first_line
from .auto_mode import LISTEN_RETRY_INTERVAL, ModeState, ModeSwitch
from .engine import ListenerEngine, ListenerTexts
from .retry import MAX_RETRY_DELAY

_logger = logging.getLogger(__name__)

#: How long the dispatcher idles between checks when the route is unusable.
IDLE_WAIT = 3600.0
LISTENER_TEXTS = ListenerTexts("bus listener", "waking the websockets to catch up")
POLLER_TEXTS = ListenerTexts("bus poller", "waking the websockets to catch up")


def report_route(route, mode):
    """Say what an operator must know about the route before it connects."""
    # in auto mode the self-check finds out whether db_host can listen
    if not route.configured and mode.configured == "listen":
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
        self._engine_options = {"clock": clock, "rng": rng, "max_delay": max_delay}
        self._route = None
        self._route_error_logged = False
        self._db_host_works = db_host_works or (lambda: True)
        self.mode = mode or ModeState()
        self.switch = ModeSwitch(
            self.mode, stop_event, self._start_afresh, listen_works, retry_interval
        )
        self._start_afresh()

    def _start_afresh(self):
        """New state after a mode switch; the listening watch ends."""
        previous = getattr(self, "engine", None)
        self.engine = ListenerEngine(
            LISTENER_TEXTS,
            lambda error: diagnose_connection_error(error, self._route)[1],
            **self._engine_options,
        )
        self.poller = PollerSupervisor(
            self.mode, self._stop_event, **self._engine_options
        )
        if previous is not None and previous.watch is not None:
            previous.watch.stop()

    @property
    def state(self):
        """The state of what the bus runs now: the listener or the poller."""
        if self.mode.active == "poll":
            return self.poller.engine.state
        return self.engine.state

    @property
    def watch(self):
        """The ListenerWatch (self-check, heartbeat), once the glue starts it."""
        return self.engine.watch

    @watch.setter
    def watch(self, watch):
        self.engine.watch = watch

    def route(self):
        """The resolved route, or None (logged once) when it cannot work."""
        if self._route is None and not self._route_error_logged:
            try:
                self._route = self._resolve_route()
            except RouteConfigError as error:
                self._route_error_logged = True
                self.engine.state.last_error = str(error)
                if self.mode.configured != "listen":
                    return None  # polling does not need the route
                _logger.error(
                    "bus_alt_connection: the bus listener is not started: %s. "
                    "Fix the value and restart Odoo; HTTP keeps serving, but "
                    "live notifications wait for a page reload.",
                    error,
                )
                return None
            report_route(self._route, self.mode)
        return self._route

    def configured_route(self):
        """The route, unless the configured mode is poll, which needs none
        (and whose route is neither resolved nor reported)."""
        return self.route() if self.mode.configured != "poll" else None

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
                self.switch.to_polling(
                    "the listener route cannot work: "
                    f"{self.engine.state.last_error}",
                    None,
                    level=logging.WARNING,
                )
            else:
                self._stop_event.wait(IDLE_WAIT)
            return
        engine = self.engine
        listening = []

        def on_listening(connection=None):
            listening.append(True)
            engine.up(route.describe(), engine.connected_line(route), connection)
            catch_up()

        try:
            core_loop(route, on_listening)
        except Exception as error:
            if self._stop_event.is_set() or self.mode.active != "listen":
                return
            delay = engine.down(error, was_up=bool(listening))
            if self._auto_switch_after_failures(route):
                return
            self._stop_event.wait(delay)

    def _auto_switch_after_failures(self, route):
        """auto mode: enough failed connects in a row, while db_host answers,
        whether or not the route worked before (its host down for good, a
        firewall or pg_hba change)."""
        if (
            self.mode.configured != "auto"
            or self.engine.failed_connects < self.mode.failed_checks
            or not self._db_host_works()
        ):
            return False
        self.switch.to_polling(
            f"the listener route failed {self.engine.failed_connects} connect "
            f"attempts in a row ({self.engine.state.last_error})",
            route,
        )
        return True


class PollerSupervisor:
    """Runs the bus's poll loop (poll and auto modes) until it fails."""

    def __init__(self, mode, stop_event, **engine_options):
        self._mode = mode
        self._stop_event = stop_event
        self._clock = engine_options.get("clock", time.monotonic)
        self.engine = ListenerEngine(POLLER_TEXTS, **engine_options)

    def run(self, poll_loop, catch_up, describe):
        """Run the poll loop until it fails; never raises, except on shutdown.

        :param poll_loop: ``poll_loop(on_polling)`` polls until stopped or a
            poll fails (raises); calls ``on_polling()`` after its first
            successful round and ``self.polled()`` after every round.
        :param catch_up: called once polling works, to wake the websockets.
        :param describe: what the poller reaches, for logs (db_host).
        """
        engine = self.engine
        polling = []

        def on_polling():
            polling.append(True)
            engine.up(describe, self._started(describe))
            engine.state.last_poll_at = engine.state.connected_since
            catch_up()

        try:
            poll_loop(on_polling)
        except Exception as error:
            if self._stop_event.is_set():
                return
            reason = (
                f"{first_line(error)} [db_host {describe}]; check that db_host, "
                "db_port, db_user and db_password reach the databases"
            )
            self._stop_event.wait(engine.down(error, bool(polling), reason))

    def _started(self, describe):
        mode = self._mode
        return (
            f"bus poller started: new bus.bus rows are read through {describe} "
            f"every {mode.poll_interval * 1000:.0f} ms (imdispatcher_mode "
            f"{mode.configured}"
            + (", switched from LISTEN" if mode.configured == "auto" else "")
            + ")."
        )

    def polled(self, queries=0):
        """A poll round succeeded, with ``queries`` bus.bus queries."""
        state = self.engine.state
        state.last_poll_at = self._clock()
        state.poll_queries += queries
