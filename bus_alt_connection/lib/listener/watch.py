"""Self-check and heartbeat of a listener, end to end: a NOTIFY sent through
Odoo's own route (db_host, i.e. the pooler) must reach a probe the way what
Odoo sends reaches a websocket (the bus: through core's channel map and
dispatch) or core's runner (cron: a token the listener keeps from core).

The self-check, after each (re)connect, logs when the route cannot hear
Odoo; the heartbeat, every ``interval`` seconds, closes the connection of a
listener that stopped hearing, rather than wait for TCP keepalives."""

import collections
import dataclasses
import json
import logging
import os
import secrets
import threading

from ..log_once import traceback_once
from ..route.config import DIRECT_ROUTE_HINT

_logger = logging.getLogger(__name__)

SEND_RETRY_DELAY = 1.0
#: a check later than due by this many seconds means the watch is stuck
OVERDUE_AFTER = 30.0
PROBE_CHANNEL_PREFIX = "bus_alt_connection_watch"
TOKEN_PREFIX = "bus_alt_connection-selfcheck-"


class Probe:
    """Stands for a websocket, for one check, in ``registry``: core's channel
    map (the bus) or {payload: probes} (cron). Each check has a key of its
    own, so a late answer to an earlier check cannot pass a later one."""

    def __init__(self, registry, key, payload):
        self.key = key
        self.payload = payload
        self._registry = registry
        self._arrived = threading.Event()

    def __enter__(self):
        self._registry[self.key] = {self}
        return self

    def __exit__(self, *exc_info):
        self._registry.pop(self.key, None)

    def trigger_notification_dispatching(self):  # as core wakes a websocket
        self._arrived.set()

    def wait(self, timeout):
        return self._arrived.wait(timeout)


def channel_probe(channels):
    key = (PROBE_CHANNEL_PREFIX, f"{os.getpid()}-{secrets.token_hex(8)}")
    return Probe(channels, key, json.dumps([list(key)]))


def token_probe(waiting):
    token = TOKEN_PREFIX + secrets.token_hex(8)
    return Probe(waiting, token, token)


def is_token(payload):
    """Whether a payload is a token probe's, never meant for core."""
    return payload.startswith(TOKEN_PREFIX)


@dataclasses.dataclass
class CheckRecord:
    """What a watch's checks found so far, for health and metrics."""

    last_kind: str | None = None
    last_check_passed: bool | None = None
    last_at: float | None = None
    #: {(kind, "pass" or "fail"): count}
    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    last_pass_at: float | None = None
    last_round_trip: float | None = None

    def add(self, kind, ok, sent_at, at):
        self.last_kind, self.last_check_passed, self.last_at = kind, ok, at
        self.counts[kind, "pass" if ok else "fail"] += 1
        if ok:
            self.last_pass_at = at
            self.last_round_trip = round(at - sent_at, 6)


class ListenerWatch:
    """Checks a ``ListenerLife`` on ``route`` in a thread of its own; logs what
    a check means and cuts a deaf listener's connection."""

    def __init__(self, listener, route):
        self.listener = listener
        self.route = route
        self._interval = listener.settings.heartbeat_interval or None
        self._timeout = listener.settings.selfcheck_timeout
        self._clock = listener.clock
        self._connected = threading.Event()
        self._connection = None
        self._hearing = None  # None: not checked since connect
        self._stopped = False
        self._thread = None
        self._next_due = None  # on ``clock``; None: no check is due
        self._errors_logged = set()
        self.failures = 0  # failed checks in a row
        self._reported_deaf = False
        self._deaf_detail = None
        self.record = CheckRecord()

    def start(self, name):
        self._thread = threading.Thread(target=self.run, name=name, daemon=True)
        self._thread.start()
        return self

    def stalled(self, now):
        """Why the watch no longer checks, or None while it does its job."""
        if self._stopped or self._connection is None or self._next_due is None:
            return None
        if self._thread is not None and not self._thread.is_alive():
            return "the watch's thread has ended"
        late = now - self._next_due
        return f"a check is overdue by {late:.0f} s" if late > OVERDUE_AFTER else None

    def stop(self):
        self._stopped = True
        self._connection = None
        self._connected.set()

    def listener_connected(self, connection):
        self._connection = connection
        self._hearing = None
        self._next_due = self._clock() + self._timeout
        self._connected.set()

    def listener_lost(self):
        self._connection = None

    def run(self):
        stop_event = self.listener.stop_event
        while not stop_event.is_set():
            confirming = self.failures and self.listener.polls_when_deaf
            fresh = self._connected.wait(
                self._timeout if confirming else self._interval
            )
            if stop_event.is_set() or self._stopped:
                return
            if fresh:
                self._connected.clear()
            if self._connection is None:
                continue
            try:
                result = self.check_once(after_connect=fresh)
            except Exception as error:
                # one check's bug must not end the thread that guards the listener
                traceback_once(
                    _logger,
                    self._errors_logged,
                    error,
                    "bus_alt_connection: %s watch: a check failed unexpectedly; "
                    "the watch goes on (traceback shown once per error type)",
                    self.listener.subject,
                )
                stop_event.wait(self._timeout)
                continue
            if result is None and fresh:
                # db_host could not take the NOTIFY (PgBouncer restarting,
                # a failover): the self-check is owed, try again shortly
                stop_event.wait(SEND_RETRY_DELAY)
                self._connected.set()

    def check_once(self, after_connect):
        """Send a NOTIFY through db_host, wait for the listener to hand it on;
        True or False, None when db_host could not take it."""
        kind = "self-check" if after_connect else "heartbeat"
        with self.listener.new_probe() as probe:
            try:
                self.listener.send_probe(probe.payload)
            except Exception as error:
                # db_host itself is down: Odoo is down too, nothing to tell
                _logger.debug("bus_alt_connection: %s not sent: %s", kind, error)
                return None
            sent_at = self._clock()
            heard = probe.wait(self._timeout)
        at = self._clock()
        if heard:
            self._heard(kind, (at - sent_at) * 1000)
        else:
            connection = self._connection  # read once: it may be lost meanwhile
            if self._deaf(kind, self._hearing) and connection is not None:
                self.listener.interrupt(connection)
        self._hearing = heard
        self.record.add(kind, heard, sent_at, at)
        self._next_due = self._due_after(heard, at)
        return heard

    def _due_after(self, heard, at):
        if not heard and self.listener.polls_when_deaf:
            return at + 2 * self._timeout  # confirming a failed check
        if self._interval is None:
            return None
        return at + self._interval + self._timeout

    def _heard(self, kind, elapsed_ms):
        self.failures, self._deaf_detail = 0, None
        if self._reported_deaf or kind == "self-check":
            self._reported_deaf = False
            _logger.info(
                "bus_alt_connection: %s %s passed: a NOTIFY sent through "
                "db_host reached it on %s in %.0f ms.",
                self.listener.subject,
                kind,
                self.route.describe(),
                elapsed_ms,
            )

    def _deaf(self, kind, was_hearing):
        """Log what a failed check means; True: cut the listener's connection."""
        listener = self.listener
        self.failures += 1
        if was_hearing:
            _logger.warning(
                "bus_alt_connection: %s heartbeat missed: it stopped hearing "
                "what Odoo sends on %s (no answer in %.0f s); closing its "
                "connection to reconnect.",
                listener.subject,
                self.route.describe(),
                self._timeout,
            )
            return True
        if listener.polls_when_deaf:
            if self._deaf_detail is None:
                self._deaf_detail = listener.explain_deafness()
            return listener.deaf(self._deaf_detail, self.failures)
        if self._reported_deaf:
            return False
        detail = listener.explain_deafness()
        self._reported_deaf = True
        _logger.log(
            listener.deaf_level,
            "bus_alt_connection: %s %s failed: it received no notification "
            "sent through db_host on %s within %.0f s; %s%s",
            listener.subject,
            kind,
            self.route.describe(),
            self._timeout,
            detail,
            listener.deaf_consequence,
        )
        return False


def deafness_explanation(route_facts, odoo_facts):
    """Why a connected listener hears nothing, from ``read_server_facts`` of
    its route and of db_host. (A standby refuses LISTEN: it never gets here.)"""
    database = route_facts.get("database")
    if database and database != odoo_facts.get("database"):
        return (
            f"the route reaches database {database!r}, Odoo notifies "
            f"{odoo_facts.get('database')!r}; set imdispatcher_db_name to a "
            "name that leads to that database"
        )
    ours, theirs = (f.get("system_identifier") for f in (route_facts, odoo_facts))
    if ours and theirs and ours != theirs:
        return (
            "the route reaches another PostgreSQL cluster than db_host; point "
            "imdispatcher_db_host/imdispatcher_db_port at the cluster Odoo writes to"
        )
    return (
        "the route most likely goes through a transaction-mode pooler such "
        f"as PgBouncer, where LISTEN hears nothing; {DIRECT_ROUTE_HINT}"
    )
