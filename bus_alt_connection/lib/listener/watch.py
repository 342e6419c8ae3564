"""Self-check and heartbeat of a listener, end to end.

Plain Python. The watch sends a NOTIFY through Odoo's own route
(``db_host``, i.e. the pooler) and waits until the listener hands it on
exactly as it hands on what Odoo sends. Each check has a probe of its own:

* the bus: a ``ChannelProbe``, subscribed to a private channel in core's
  channel map in place of a websocket; core's dispatcher loop "wakes" it,
  so the check covers core's dispatch too;
* the cron trigger listener: a ``TokenProbe``, whose payload the listener
  recognises and keeps from core's runner.

Right after each (re)connect the check is the self-check: if nothing
arrives, the route connects but cannot hear Odoo (a transaction-mode
pooler on the way, another cluster or database): one ERROR naming the
route. Then, every ``interval`` seconds, it is the heartbeat: if a listener
that worked stops hearing, its connection is closed so that it reconnects
at once, instead of waiting for TCP keepalives.
"""

import collections
import dataclasses
import json
import logging
import os
import secrets
import threading
import time

from ..route.config import DIRECT_ROUTE_HINT
from .engine import traceback_once

_logger = logging.getLogger(__name__)

SELF_CHECK_TIMEOUT = 5.0
HEARTBEAT_INTERVAL = 30.0
SEND_RETRY_DELAY = 1.0
#: a check later than due by this many seconds means the watch is stuck
OVERDUE_AFTER = 30.0
PROBE_CHANNEL_PREFIX = "bus_alt_connection_watch"
TOKEN_PREFIX = "bus_alt_connection-selfcheck-"


class ChannelProbe:
    """Subscribed to a private channel in place of a websocket, for one check.

    Each check has its own channel, so a late answer to an earlier check
    wakes nobody and cannot pass a later one.
    """

    def __init__(self, channels):
        """:param channels: core's channel -> websockets map"""
        self.key = (PROBE_CHANNEL_PREFIX, f"{os.getpid()}-{secrets.token_hex(8)}")
        self._channels = channels
        self._arrived = threading.Event()

    def __enter__(self):
        self._channels[self.key] = {self}
        return self

    def __exit__(self, *exc_info):
        self._channels.pop(self.key, None)

    def payload(self):
        """A core bus payload: the JSON list of channels to wake."""
        return json.dumps([list(self.key)])

    def trigger_notification_dispatching(self):
        """Called by core's dispatcher loop when our NOTIFY arrives."""
        self._arrived.set()

    def wait(self, timeout):
        return self._arrived.wait(timeout)


class TokenProbe:
    """A payload of its own, awaited in ``waiting`` while the check runs."""

    def __init__(self, waiting):
        """:param waiting: {payload: TokenProbe}, read by the listener"""
        self._payload = TOKEN_PREFIX + secrets.token_hex(8)
        self._waiting = waiting
        self._arrived = threading.Event()

    def __enter__(self):
        self._waiting[self._payload] = self
        return self

    def __exit__(self, *exc_info):
        self._waiting.pop(self._payload, None)

    def payload(self):
        return self._payload

    def arrived(self):
        self._arrived.set()

    def wait(self, timeout):
        return self._arrived.wait(timeout)


def is_token(payload):
    """Whether a payload is a TokenProbe's, never meant for core."""
    return payload.startswith(TOKEN_PREFIX)


@dataclasses.dataclass
class CheckResult:
    ok: bool
    kind: str  # "self-check" or "heartbeat"
    at: float
    detail: str = ""


@dataclasses.dataclass
class CheckRecord:
    """What a watch's checks found so far, for health and metrics."""

    last_result: CheckResult | None = None
    #: {(kind, "pass" or "fail"): count}
    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    last_pass_at: float | None = None
    #: seconds from NOTIFY to the listener's hand-on, of the last pass
    last_round_trip: float | None = None

    @property
    def last_check_passed(self):
        """True or False for the last check; None before the first."""
        return None if self.last_result is None else self.last_result.ok

    def add(self, result, sent_at):
        self.last_result = result
        self.counts[result.kind, "pass" if result.ok else "fail"] += 1
        if result.ok:
            self.last_pass_at = result.at
            self.last_round_trip = round(result.at - sent_at, 6)


class CheckJudge:
    """What a check's result means: the log line, and whether to cut the
    listener's connection so that it reconnects."""

    def __init__(
        self,
        subject,
        route,
        timeout,
        explain_deafness,
        on_deaf=None,
        deaf_level=logging.ERROR,
        deaf_consequence="",
    ):
        self.subject = subject
        self.route = route
        self._timeout = timeout
        self._explain_deafness = explain_deafness
        self.on_deaf = on_deaf
        self._deaf_level = deaf_level
        self._deaf_consequence = deaf_consequence
        self._reported_deaf = False
        #: failed checks in a row, and why (explained once per stretch)
        self.failures = 0
        self._deaf_detail = None

    def heard(self, kind, elapsed_ms):
        self.failures, self._deaf_detail = 0, None
        if self._reported_deaf or kind == "self-check":
            self._reported_deaf = False
            _logger.info(
                "bus_alt_connection: %s %s passed: a NOTIFY sent through "
                "db_host reached it on %s in %.0f ms.",
                self.subject,
                kind,
                self.route.describe(),
                elapsed_ms,
            )

    def deaf(self, kind, was_hearing):
        """(detail, whether to cut the listener's connection)."""
        self.failures += 1
        if was_hearing:
            self._heartbeat_missed()
            return "heartbeat missed", True
        if self.on_deaf is not None:
            if self._deaf_detail is None:
                self._deaf_detail = self._explain_deafness()
            return self._deaf_detail, self.on_deaf(self._deaf_detail, self.failures)
        if self._reported_deaf:
            return "still deaf", False
        detail = self._explain_deafness()
        self._reported_deaf = True
        _logger.log(
            self._deaf_level,
            "bus_alt_connection: %s %s failed: it received no notification "
            "sent through db_host on %s within %.0f s; %s%s",
            self.subject,
            kind,
            self.route.describe(),
            self._timeout,
            detail,
            self._deaf_consequence,
        )
        return detail, False

    def _heartbeat_missed(self):
        _logger.warning(
            "bus_alt_connection: %s heartbeat missed: it stopped hearing what "
            "Odoo sends on %s (no answer in %.0f s); closing its connection "
            "to reconnect.",
            self.subject,
            self.route.describe(),
            self._timeout,
        )


class ListenerWatch:
    """Runs in its own thread (a greenlet in the gevent worker)."""

    def __init__(
        self,
        subject,
        route,
        new_probe,
        send_notify,
        explain_deafness,
        interrupt_listener,
        stop_event,
        interval=HEARTBEAT_INTERVAL,
        timeout=SELF_CHECK_TIMEOUT,
        clock=time.monotonic,
        on_deaf=None,
        deaf_level=logging.ERROR,
        deaf_consequence="",
    ):
        """:param subject: how the log lines name the listener
        :param new_probe: returns a fresh probe (``ChannelProbe``,
            ``TokenProbe``) for each check
        :param send_notify: ``send_notify(payload)`` sends the probe's
            payload on the listener's channel through db_host
        :param interval: seconds between heartbeats; None: no heartbeat
        :param on_deaf: auto mode: ``on_deaf(detail, failures)`` replaces
            the self-check's ERROR at each failed check (``failures`` in a
            row); it returns True when the bus switched to polling. While
            checks fail, the next one comes ``timeout`` seconds later.
        :param deaf_level: how a deaf route is logged (WARNING where it is
            expected, the cron listener's in auto mode)
        :param deaf_consequence: appended to that line: what waits now"""
        self.route = route
        self.judge = CheckJudge(
            subject,
            route,
            timeout,
            explain_deafness,
            on_deaf,
            deaf_level,
            deaf_consequence,
        )
        self._new_probe = new_probe
        self._send_notify = send_notify
        self._interrupt_listener = interrupt_listener
        self._stop_event = stop_event
        self._interval = interval
        self._timeout = timeout
        self._clock = clock
        self._connected = threading.Event()
        self._connection = None
        self._hearing = None  # None: not checked since connect
        self._stopped = False
        self._thread = None
        #: when the next check is due, on ``clock``; None: none is due
        self._next_due = None
        self._errors_logged = set()
        self.record = CheckRecord()

    def start(self, name):
        self._thread = threading.Thread(target=self.run, name=name, daemon=True)
        self._thread.start()
        return self

    def stalled(self, now):
        """Why the watch no longer checks (its thread ended, or a check is
        overdue), or None while it does its job."""
        if self._stopped or self._connection is None or self._next_due is None:
            return None
        if self._thread is not None and not self._thread.is_alive():
            return "the watch's thread has ended"
        late = now - self._next_due
        if late > OVERDUE_AFTER:
            return f"a check is overdue by {late:.0f} s"
        return None

    def stop(self):
        """The listener is gone: end the watch's thread."""
        self._stopped = True
        self._connection = None
        self._connected.set()

    # told by the engine -------------------------------------------------

    def listener_connected(self, connection):
        self._connection = connection
        self._hearing = None
        self._next_due = self._clock() + self._timeout
        self._connected.set()

    def listener_lost(self):
        self._connection = None

    # the watch ------------------------------------------------------------

    def run(self):
        while not self._stop_event.is_set():
            confirming = self.judge.failures and self.judge.on_deaf is not None
            fresh = self._connected.wait(
                self._timeout if confirming else self._interval
            )
            if self._stop_event.is_set() or self._stopped:
                return
            if fresh:
                self._connected.clear()
            if self._connection is None:
                continue
            try:
                result = self.check_once(after_connect=fresh)
            except Exception as error:
                # one check's bug must not end the thread that guards the listener
                self._report_unexpected(error)
                self._stop_event.wait(self._timeout)
                continue
            if result is None and fresh:
                # db_host could not take the NOTIFY (PgBouncer restarting,
                # a failover): the self-check is owed, try again shortly
                self._stop_event.wait(SEND_RETRY_DELAY)
                self._connected.set()

    def check_once(self, after_connect):
        kind = "self-check" if after_connect else "heartbeat"
        with self._new_probe() as probe:
            try:
                self._send_notify(probe.payload())
            except Exception as error:
                # db_host itself is down: Odoo is down too, nothing to tell
                _logger.debug("bus_alt_connection: %s not sent: %s", kind, error)
                return None
            sent_at = self._clock()
            heard = probe.wait(self._timeout)
        result = CheckResult(ok=heard, kind=kind, at=self._clock())
        if heard:
            self.judge.heard(kind, (result.at - sent_at) * 1000)
        else:
            connection = self._connection  # read once: it may be lost meanwhile
            result.detail, cut = self.judge.deaf(kind, self._hearing)
            if cut and connection is not None:
                self._interrupt_listener(connection)
        self._hearing = heard
        self.record.add(result, sent_at)
        self._next_due = self._due_after(result)
        return result

    def _due_after(self, result):
        if not result.ok and self.judge.on_deaf is not None:
            return result.at + 2 * self._timeout  # confirming a failed check
        if self._interval is None:
            return None
        return result.at + self._interval + self._timeout

    def _report_unexpected(self, error):
        traceback_once(
            _logger,
            self._errors_logged,
            error,
            "bus_alt_connection: %s watch: a check failed unexpectedly; the "
            "watch goes on (traceback shown once per error type)",
            self.judge.subject,
        )


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
        f"as PgBouncer, where LISTEN hears nothing; {DIRECT_ROUTE_HINT}"
    )
