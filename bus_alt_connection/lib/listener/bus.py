"""The bus listener: each call of core's ``ImDispatch.loop`` is one
``BusListener.run_once``, which listens (core's loop on the listener route)
or polls (the glue's poll loop through db_host), by ``imdispatcher_mode``.

Auto mode polls after ``imdispatcher_auto_failed_checks`` failed connects or
checks in a row while db_host answers, or at once when the route's
configuration cannot work; meanwhile it tries the route every
``imdispatcher_listen_retry_interval`` seconds, and listens again once a
NOTIFY sent through db_host reaches it. The glue's subclass says how Odoo
sends a NOTIFY, wakes websockets and subscribes the watch's probe."""

import dataclasses
import logging
import threading

from ..route.config import BUS_DATABASE, DIRECT_ROUTE_HINT, OptionError
from ..route.connection import diagnose_connection_error, first_line, listener_params
from .life import ListenerLife
from .round_trip import notify_roundtrip
from .watch import ListenerWatch

_logger = logging.getLogger(__name__)

#: How long the dispatcher idles between checks when the route is unusable.
IDLE_WAIT = 3600.0
LISTEN_BACK_HINT = f"for LISTEN, {DIRECT_ROUTE_HINT} (check with odoo-bin bus_check)"


@dataclasses.dataclass
class ModeState:
    """Which way the bus learns about new notifications, and why."""

    configured: str = "listen"
    active: str = "listen"  # or "poll"
    reason: str = "configured"


class BusListener(ListenerLife):
    """The bus dispatcher's listener (or poller) of one process."""

    catch_up_text = "waking the websockets to catch up"

    def __init__(self, settings, resolve_route, stop_event, **life_options):
        source = settings.values["mode"].source if settings.values else "default"
        self.mode = ModeState(
            configured=settings.mode,
            active="poll" if settings.mode == "poll" else "listen",
            reason=f"configured ({source})",
        )
        self._resolve_route = resolve_route
        self._route = None
        self._route_error_logged = False
        super().__init__(settings, stop_event, **life_options)

    @property
    def subject(self):
        return "bus poller" if self.mode.active == "poll" else "bus listener"

    @property
    def polls_when_deaf(self):
        return self.mode.configured == "auto"

    def run_once(self, listen, poll):
        """One call of core's loop; never raises, except on shutdown.
        ``listen(route, on_connected)`` runs core's loop on ``route``;
        ``poll(on_connected)`` polls until a poll fails or the bus listens."""
        if self.mode.active == "poll":
            delay = self.attempt(poll)
        else:
            route = self.route()
            if route is None:
                self._route_cannot_work()
                return
            if self.watch is None:
                self.watch = self.start_watch(route)
            delay = self.attempt(lambda on_connected: listen(route, on_connected))
            if delay is not None and self._poll_after_failed_connects(route):
                return
        if delay is not None:
            self.stop_event.wait(delay)

    def start_watch(self, route):
        return ListenerWatch(self, route).start("bus_alt_connection.watch")

    def _route_cannot_work(self):
        if self.mode.configured == "auto":
            self.to_polling(
                f"the listener route cannot work: {self.state.last_error}",
                None,
                level=logging.WARNING,
            )
        else:
            self.stop_event.wait(IDLE_WAIT)

    def _poll_after_failed_connects(self, route):
        """auto mode, whether the route worked before or not (its host down for
        good, a firewall or pg_hba change)."""
        failed = self.failed_connects
        if (
            self.mode.configured != "auto"
            or failed < self.settings.auto_failed_checks
            or not self.db_host_answers()
        ):
            return False
        self.to_polling(
            f"the listener route failed {failed} connect attempts in a row "
            f"({self.state.last_error})",
            route,
        )
        return True

    def deaf(self, detail, failures):
        """The watch's failed check in auto mode; True once it polls."""
        needed, route = self.settings.auto_failed_checks, self._route
        if failures < needed:
            _logger.info(
                "bus_alt_connection: check %d of %d failed on the listener "
                "route %s (%s); imdispatcher_mode is auto: the bus polls "
                "after %d failed checks in a row.",
                failures,
                needed,
                route.describe(),
                detail,
                needed,
            )
            return False
        self.to_polling(
            f"{failures} checks in a row found that the bus listener on "
            f"{route.describe()} receives nothing sent through db_host ({detail})",
            route,
        )
        return True

    def to_polling(self, reason, route, level=logging.INFO):
        """Poll, and try ``route`` again in the background (``route`` None:
        its configuration cannot work, Odoo reads it at start)."""
        self.mode.active = "poll"
        self.mode.reason = f"auto-switched: {reason}"
        self.start_afresh()
        retry = route is not None
        interval = self.settings.listen_retry_interval
        _logger.log(
            level,
            "bus_alt_connection: %s; imdispatcher_mode is auto, so the bus now "
            "polls bus.bus through db_host%s; %s.",
            reason,
            f", and tries the listener route again every {interval:g} s "
            "(imdispatcher_listen_retry_interval)"
            if retry
            else "",
            LISTEN_BACK_HINT if retry else LISTEN_BACK_HINT + ", then restart Odoo",
        )
        if retry:
            threading.Thread(
                target=self._retry_listening,
                args=(route,),
                name="bus_alt_connection.listen_retry",
                daemon=True,
            ).start()

    def _retry_listening(self, route):
        while self.mode.active == "poll":
            if self.stop_event.wait(self.settings.listen_retry_interval):
                return
            works, detail = self.listen_works(route)
            if works:
                self.to_listening(route, detail)
                return
            _logger.debug("bus_alt_connection: listener route still deaf: %s", detail)

    def to_listening(self, route, detail):
        """The route hears Odoo again: the poll loop ends, core's loop listens."""
        self.mode.active = "listen"
        self.mode.reason = f"auto: the listener route hears Odoo again ({detail})"
        self.start_afresh()
        _logger.info(
            "bus_alt_connection: the listener route %s hears what Odoo sends "
            "again (%s); imdispatcher_mode is auto, so the bus listens again.",
            route.describe(),
            detail,
        )

    def listen_works(self, route):
        """(True, detail) when a NOTIFY through db_host reaches ``route``."""
        timeout = self.settings.selfcheck_timeout
        try:
            trip = notify_roundtrip(listener_params(route), self.send, timeout=timeout)
        except Exception as error:
            return False, first_line(error)
        if not trip["received"]:
            return False, f"nothing arrived within {timeout:g} s"
        return True, f"a NOTIFY through db_host arrived in {trip['ms']:.0f} ms"

    def route(self):
        """The resolved route, or None (logged once) when it cannot work."""
        if self._route is None and not self._route_error_logged:
            try:
                self._route = self._resolve_route()
            except OptionError as error:
                self._route_error_logged = True
                self.state.last_error = str(error)
                if self.mode.configured == "listen":
                    _logger.error(
                        "bus_alt_connection: the bus listener is not started: "
                        "%s. Fix the value and restart Odoo; HTTP keeps "
                        "serving, but live notifications wait for a page reload.",
                        error,
                    )
                return None  # polling does not need the route
            self._report_route(self._route)
        return self._route

    def configured_route(self):
        """The route, unless the configured mode is poll, which needs none."""
        return self.route() if self.mode.configured != "poll" else None

    def _report_route(self, route):
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

    def describe(self):
        if self.mode.active == "poll":
            return self.describe_db_host()
        return self._route.describe()

    def first_connect_line(self, now):
        if self.mode.active != "poll":
            return self.route_connected_line(self._route, now)
        mode = self.mode
        return (
            f"bus poller started: new bus.bus rows are read through "
            f"{self.describe_db_host()} every {self.settings.poll_interval * 1000:.0f} "
            f"ms (imdispatcher_mode {mode.configured}"
            + (", switched from LISTEN" if mode.configured == "auto" else "")
            + ")."
        )

    def diagnose(self, error):
        if self.mode.active != "poll":
            return diagnose_connection_error(error, self._route)[1]
        return (
            f"{first_line(error)} [db_host {self.describe_db_host()}]; check "
            "that db_host, db_port, db_user and db_password reach the databases"
        )

    def polled(self, queries=0):
        """A poll round succeeded, with ``queries`` bus.bus queries."""
        self.state.last_poll_at = self.clock()
        self.state.poll_queries += queries

    def send_notify(self, channel, payload):
        """NOTIFY ``channel`` the way core does, through db_host."""
        raise NotImplementedError

    def send_probe(self, payload):
        self.send_notify("imbus", payload)

    def send(self, channel, count):
        for number in range(count):
            self.send_notify(channel, f"[{number}]")

    def db_host_answers(self):
        return True

    def describe_db_host(self):
        return "db_host"
