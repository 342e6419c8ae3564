"""Self-check and heartbeat of the bus listener, end to end.

Plain Python. The watch sends a NOTIFY on the bus channel through Odoo's own
route (``db_host``, i.e. the pooler) whose payload names a private channel
that only a ``WatchProbe`` is subscribed to, and waits until core's
dispatcher loop "wakes" that probe exactly as it would wake a websocket. So
the check covers the whole path: Odoo's NOTIFY route, PostgreSQL, the
listener's route and connection, and core's dispatch.

* Right after each (re)connect it is the self-check: if nothing arrives, the
  route connects but cannot hear Odoo (a transaction-mode pooler on the way,
  another cluster or database): one ERROR naming the route.
* Then, every ``interval`` seconds, it is the heartbeat: if a listener that
  worked stops hearing, its connection is closed so that the supervisor
  reconnects at once, instead of waiting for TCP keepalives.
"""

import collections
import dataclasses
import json
import logging
import os
import secrets
import threading
import time

_logger = logging.getLogger(__name__)

SELF_CHECK_TIMEOUT = 5.0
HEARTBEAT_INTERVAL = 30.0
SEND_RETRY_DELAY = 1.0
PROBE_CHANNEL_PREFIX = "bus_alt_connection_watch"


class WatchProbe:
    """Subscribed to a private channel in place of a websocket, for one check.

    Each check has its own channel, so a late answer to an earlier check
    wakes nobody and cannot pass a later one.
    """

    def __init__(self):
        self.key = (PROBE_CHANNEL_PREFIX, f"{os.getpid()}-{secrets.token_hex(8)}")
        self._arrived = threading.Event()

    def payload(self):
        """A core bus payload: the JSON list of channels to wake."""
        return json.dumps([list(self.key)])

    def trigger_notification_dispatching(self):
        """Called by core's dispatcher loop when our NOTIFY arrives."""
        self._arrived.set()

    def wait(self, timeout):
        return self._arrived.wait(timeout)


@dataclasses.dataclass
class CheckResult:
    ok: bool
    kind: str  # "self-check" or "heartbeat"
    at: float
    detail: str = ""


class ListenerWatch:
    """Runs in its own thread (a greenlet in the gevent worker)."""

    def __init__(
        self,
        route,
        send_notify,
        explain_deafness,
        interrupt_listener,
        stop_event,
        channels,
        interval=HEARTBEAT_INTERVAL,
        timeout=SELF_CHECK_TIMEOUT,
        clock=time.monotonic,
        on_deaf=None,
    ):
        """:param channels: core's channel -> websockets map, where each
            check subscribes its probe while it waits
        :param on_deaf: auto mode: ``on_deaf(detail, failures)`` replaces
            the self-check's ERROR at each failed check (``failures`` in a
            row); it returns True when the bus switched to polling. While
            checks fail, the next one comes ``timeout`` seconds later."""
        self.route = route
        self._channels = channels
        self._send_notify = send_notify
        self._explain_deafness = explain_deafness
        self._interrupt_listener = interrupt_listener
        self._stop_event = stop_event
        self._interval = interval
        self._timeout = timeout
        self._clock = clock
        self._connected = threading.Event()
        self._connection = None
        self._hearing = None  # None: not checked since connect
        self._reported_deaf = False
        self._on_deaf_hook = on_deaf
        #: failed checks in a row, and why (explained once per stretch)
        self.failures = 0
        self._deaf_detail = None
        self._stopped = False
        self.last_result = None
        #: {(kind, "pass" or "fail"): count}, for metrics
        self.counts = collections.Counter()
        self.last_pass_at = None
        #: seconds from NOTIFY to core's dispatch, of the last passing check
        self.last_round_trip = None

    def stop(self):
        """The dispatcher no longer listens: end the watch's thread."""
        self._stopped = True
        self._connection = None
        self._connected.set()

    # called by the supervisor -------------------------------------------

    def listener_connected(self, connection):
        self._connection = connection
        self._hearing = None
        self._connected.set()

    def listener_lost(self):
        self._connection = None

    # the watch ------------------------------------------------------------

    def run(self):
        while not self._stop_event.is_set():
            confirming = self.failures and self._on_deaf_hook is not None
            fresh = self._connected.wait(
                self._timeout if confirming else self._interval
            )
            if self._stop_event.is_set() or self._stopped:
                return
            if fresh:
                self._connected.clear()
            if self._connection is None:
                continue
            result = self.check_once(after_connect=fresh)
            if result is None and fresh:
                # db_host could not take the NOTIFY (PgBouncer restarting,
                # a failover): the self-check is owed, try again shortly
                self._stop_event.wait(SEND_RETRY_DELAY)
                self._connected.set()

    def check_once(self, after_connect):
        kind = "self-check" if after_connect else "heartbeat"
        probe = WatchProbe()
        self._channels[probe.key] = {probe}
        try:
            try:
                self._send_notify(probe.payload())
            except Exception as error:
                # db_host itself is down: Odoo is down too, nothing to tell
                _logger.debug("bus_alt_connection: %s not sent: %s", kind, error)
                return None
            sent_at = self._clock()
            heard = probe.wait(self._timeout)
        finally:
            self._channels.pop(probe.key, None)
        result = CheckResult(ok=heard, kind=kind, at=self._clock())
        if heard:
            self._on_heard(kind, (result.at - sent_at) * 1000)
        else:
            result.detail = self._on_deaf(kind)
        self._hearing = heard
        self.last_result = result
        self.counts[kind, "pass" if heard else "fail"] += 1
        if heard:
            self.last_pass_at = result.at
            self.last_round_trip = round(result.at - sent_at, 6)
            self.failures, self._deaf_detail = 0, None
        return result

    def _on_heard(self, kind, elapsed_ms):
        if self._reported_deaf or kind == "self-check":
            self._reported_deaf = False
            _logger.info(
                "bus_alt_connection: %s passed: a NOTIFY sent through db_host "
                "reached the bus listener on %s in %.0f ms.",
                kind,
                self.route.describe(),
                elapsed_ms,
            )

    def _on_deaf(self, kind):
        self.failures += 1
        if self._hearing:
            _logger.warning(
                "bus_alt_connection: heartbeat missed: the bus listener on %s "
                "stopped hearing what Odoo sends (no answer in %.0f s); "
                "closing its connection to reconnect.",
                self.route.describe(),
                self._timeout,
            )
            connection = self._connection
            if connection is not None:
                self._interrupt_listener(connection)
            return "heartbeat missed"
        if self._on_deaf_hook is not None:
            if self._deaf_detail is None:
                self._deaf_detail = self._explain_deafness()
            connection = self._connection
            if self._on_deaf_hook(self._deaf_detail, self.failures) and connection:
                self._interrupt_listener(connection)
            return self._deaf_detail
        if self._reported_deaf:
            return "still deaf"
        detail = self._explain_deafness()
        self._reported_deaf = True
        _logger.error(
            "bus_alt_connection: %s failed: the bus listener on %s "
            "received no notification sent through db_host within "
            "%.0f s; %s",
            kind,
            self.route.describe(),
            self._timeout,
            detail,
        )
        return detail


def deafness_explanation(route_facts, odoo_facts):
    """Why a connected listener hears nothing, from facts of both routes.

    Each argument is a dict with ``database`` and ``system_identifier``
    (None when unknown), as read through the listener's route and through
    Odoo's ``db_host`` route. A standby never gets here: PostgreSQL refuses
    LISTEN there, so the connect attempt fails and says so.
    """
    database = route_facts.get("database")
    if database and database != odoo_facts.get("database"):
        return (
            f"the route reaches database {database!r}, Odoo notifies "
            f"{odoo_facts.get('database')!r}; set imdispatcher_db_name to a "
            "name that leads to that database"
        )
    ours, theirs = (
        route_facts.get("system_identifier"),
        odoo_facts.get("system_identifier"),
    )
    if ours and theirs and ours != theirs:
        return (
            "the route reaches another PostgreSQL cluster than db_host; point "
            "imdispatcher_db_host/imdispatcher_db_port at the cluster Odoo "
            "writes to"
        )
    return (
        "the route most likely goes through a transaction-mode pooler such "
        "as PgBouncer, where LISTEN hears nothing; point "
        "imdispatcher_db_host/imdispatcher_db_port at PostgreSQL itself or at "
        "a session-mode pool of database 'postgres'"
    )
