"""Which way the bus learns about new notifications: listen, poll, auto.

Plain Python. In ``imdispatcher_mode = auto`` the bus polls ``bus.bus``
when its listener route cannot work (a bad value; while db_host answers,
``imdispatcher_auto_failed_checks`` failed connects or failed checks in a
row, whether or not the route worked before), and, while
it polls, tries the route again in the background until a NOTIFY sent
through db_host reaches a LISTEN on it.
"""

import dataclasses
import logging
import threading

from ..route.config import DIRECT_ROUTE_HINT

_logger = logging.getLogger(__name__)

#: how often a polling bus tries the listener route again
LISTEN_RETRY_INTERVAL = 300.0
LISTEN_BACK_HINT = f"for LISTEN, {DIRECT_ROUTE_HINT} (check with odoo-bin bus_check)"


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
    #: auto mode: failed connects, or failed checks, in a row before polling
    failed_checks: int = 3


class ModeSwitch:
    """auto mode: switches the bus between listening and polling."""

    def __init__(
        self,
        mode,
        stop_event,
        on_switch,
        listen_works=None,
        retry_interval=LISTEN_RETRY_INTERVAL,
    ):
        """:param on_switch: called at each switch, to start afresh
        :param listen_works: ``listen_works(route)`` returns (True, detail)
            when a NOTIFY through db_host reaches a LISTEN on the route"""
        self.mode = mode
        self._stop_event = stop_event
        self._on_switch = on_switch
        self._listen_works = listen_works
        self._retry_interval = retry_interval

    def to_polling(self, reason, route, level=logging.INFO):
        """Poll, and try ``route`` again in the background.

        ``level``: WARNING when the route's configuration cannot work
        (``route`` is None: Odoo reads it at start, so it is not tried
        again), INFO otherwise.
        """
        self.mode.active = "poll"
        self.mode.reason = f"auto-switched: {reason}"
        self._on_switch()
        retry = self._listen_works is not None and route is not None
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
                args=(route,),
                name="bus_alt_connection.listen_retry",
                daemon=True,
            ).start()

    def _retry_listening(self, route):
        while self.mode.active == "poll":
            if self._stop_event.wait(self._retry_interval):
                return
            works, detail = self._listen_works(route)
            if works:
                self.to_listening(route, detail)
                return
            _logger.debug("bus_alt_connection: listener route still deaf: %s", detail)

    def to_listening(self, route, detail):
        """The route hears Odoo again; the poll loop ends, and core's loop
        listens (and wakes the websockets to catch up)."""
        self.mode.active = "listen"
        self.mode.reason = f"auto: the listener route hears Odoo again ({detail})"
        self._on_switch()
        _logger.info(
            "bus_alt_connection: the listener route %s hears what Odoo sends "
            "again (%s); imdispatcher_mode is auto, so the bus listens again.",
            route.describe(),
            detail,
        )

    def on_failed_check(self, route, needed):
        """The watch's ``on_deaf``: poll after ``needed`` failed checks."""

        def on_deaf(detail, failures):
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
                f"{route.describe()} receives nothing sent through db_host "
                f"({detail})",
                route,
            )
            return True

        return on_deaf
