"""Self-check and heartbeat logic, without Odoo.

The watch's NOTIFY goes over a real PostgreSQL (LISTEN/NOTIFY on the
sandbox), and a small loop stands in for core's dispatcher: it does what
core's loop does with a payload, look the channels up and wake who is
subscribed.
"""

import json
import logging
import threading
import time
import types

import psycopg2
import pytest

from bus_alt_connection.lib.listener.round_trip import route_facts
from bus_alt_connection.lib.listener.watch import (
    ListenerWatch,
    channel_probe,
    deafness_explanation,
)
from bus_alt_connection.lib.route.config import Settings, resolve_route

LOGGER = "bus_alt_connection"


class Relay:
    """LISTEN on ``listen_params``, wake subscribers by channel key."""

    def __init__(self, listen_params):
        self.subscribers = {}
        #: payloads received but not dispatched (a slow or deaf listener)
        self.held = None
        self.connection = psycopg2.connect(**listen_params)
        self.connection.autocommit = True
        self.connection.cursor().execute("LISTEN imbus")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        import selectors

        with selectors.DefaultSelector() as selector:
            selector.register(self.connection, selectors.EVENT_READ)
            while not self._stop.is_set():
                if not selector.select(0.1):
                    continue
                try:
                    self.connection.poll()
                except psycopg2.Error:
                    return
                while self.connection.notifies:
                    payload = self.connection.notifies.pop(0).payload
                    if self.held is not None:
                        self.held.append(payload)
                    else:
                        self.dispatch(payload)

    def dispatch(self, payload):
        for channel in json.loads(payload):
            for subscriber in self.subscribers.get(tuple(channel), ()):
                subscriber.trigger_notification_dispatching()

    def close(self):
        self._stop.set()
        self._thread.join()
        self.connection.close()


def notifier(params):
    def send(payload):
        connection = psycopg2.connect(**params)
        connection.autocommit = True
        try:
            connection.cursor().execute("SELECT pg_notify('imbus', %s)", (payload,))
        finally:
            connection.close()

    return send


def a_listener(stop=None, deaf=None, **settings):
    """What a watch asks of its listener (a ListenerLife), played by the test:
    ``deaf(detail, failures)`` as auto mode's."""
    return types.SimpleNamespace(
        subject="bus listener",
        settings=Settings(**settings),
        stop_event=stop or threading.Event(),
        clock=time.monotonic,
        new_probe=InstantProbe,
        send_probe=lambda payload: None,
        explain_deafness=lambda: "deaf",
        interrupt=lambda connection: None,
        polls_when_deaf=deaf is not None,
        deaf=deaf,
        deaf_level=logging.ERROR,
        deaf_consequence="",
    )


def make_watch(sandbox, listen_params, interrupted, on_deaf=None):
    route = resolve_route({"imdispatcher_db_host": "listener-route"}, environ={})
    relay = Relay(listen_params)
    listener = a_listener(deaf=on_deaf, selfcheck_timeout=2)
    listener.new_probe = lambda: channel_probe(relay.subscribers)
    listener.send_probe = notifier(sandbox.pgbouncer.odoo_params())
    listener.explain_deafness = lambda: deafness_explanation(
        route_facts(listen_params), route_facts(sandbox.pgbouncer.odoo_params())
    )
    listener.interrupt = interrupted.append
    watch = ListenerWatch(listener, route)
    watch.listener_connected(relay.connection)
    return watch, relay


def test_self_check_passes_on_a_direct_route(sandbox, caplog):
    interrupted = []
    watch, relay = make_watch(sandbox, sandbox.postgres.odoo_params(), interrupted)
    try:
        with caplog.at_level(logging.INFO, logger=LOGGER):
            result = watch.check_once(after_connect=True)
    finally:
        relay.close()
    assert result
    assert "self-check passed" in caplog.text
    assert interrupted == []


def test_self_check_flags_a_transaction_pooler_once(sandbox, caplog):
    interrupted = []
    watch, relay = make_watch(sandbox, sandbox.pgbouncer.odoo_params(), interrupted)
    try:
        with caplog.at_level(logging.INFO, logger=LOGGER):
            first = watch.check_once(after_connect=True)
            second = watch.check_once(after_connect=False)
    finally:
        relay.close()
    assert not first and not second
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "transaction-mode pooler" in errors[0].getMessage()
    assert "listener-route" in errors[0].getMessage()
    assert interrupted == [], "a route that never heard must not be cut"


def test_heartbeat_missed_interrupts_a_listener_that_heard(sandbox, caplog):
    interrupted = []
    watch, relay = make_watch(sandbox, sandbox.postgres.odoo_params(), interrupted)
    try:
        assert watch.check_once(after_connect=True)
        relay.held = []  # the listener goes deaf
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            result = watch.check_once(after_connect=False)
    finally:
        relay.close()
    assert not result
    assert interrupted == [relay.connection]
    assert "heartbeat missed" in caplog.text


def test_a_late_answer_to_an_earlier_check_passes_no_later_one(sandbox):
    """The first check's NOTIFY arrives only during the second check."""
    watch, relay = make_watch(sandbox, sandbox.postgres.odoo_params(), [])
    try:
        assert watch.check_once(after_connect=True)
        relay.held = []
        assert not watch.check_once(after_connect=False)
        late = threading.Timer(0.5, lambda: relay.dispatch(relay.held[0]))
        late.start()
        second = watch.check_once(after_connect=False)
        late.join()
    finally:
        relay.close()
    assert len(relay.held) == 2, "the second check's NOTIFY was not held"
    assert not second, "a stale answer passed the check"
    assert relay.subscribers == {}, "a check left its probe subscribed"


def test_auto_mode_hears_every_failed_check_and_switches_when_told(sandbox):
    """The hook gets each failure in a row, and the listener is cut when
    the hook has switched to polling. After a pass, the first miss is a
    heartbeat's: it counts, and cuts the listener to reconnect."""
    calls, interrupted = [], []

    def on_deaf(detail, failures):
        calls.append(failures)
        return failures >= 3

    watch, relay = make_watch(
        sandbox, sandbox.postgres.odoo_params(), interrupted, on_deaf
    )
    try:
        relay.held = []  # deaf
        for _check in range(2):
            assert not watch.check_once(after_connect=True)
        assert (calls, interrupted) == ([1, 2], [])
        relay.held = None  # hears again: the count starts over
        assert watch.check_once(after_connect=False)
        relay.held = []
        for _check in range(3):
            watch.check_once(after_connect=False)
    finally:
        relay.close()
    assert calls == [1, 2, 2, 3]
    assert interrupted == [relay.connection] * 2


def test_unsendable_notify_is_no_verdict(sandbox):
    watch, relay = make_watch(sandbox, sandbox.postgres.odoo_params(), [])
    relay.close()

    def broken(payload):
        raise psycopg2.OperationalError("connection refused")

    watch.listener.send_probe = broken
    assert watch.check_once(after_connect=True) is None


@pytest.mark.parametrize(
    "ours, theirs, words",
    [
        ({"database": "other"}, {"database": "postgres"}, "reaches database 'other'"),
        (
            {"database": "postgres", "system_identifier": 1},
            {"database": "postgres", "system_identifier": 2},
            "another PostgreSQL cluster",
        ),
        (
            {"database": "postgres", "system_identifier": 1},
            {"database": "postgres", "system_identifier": 1},
            "transaction-mode pooler",
        ),
    ],
)
def test_deafness_explanations(ours, theirs, words):
    assert words in deafness_explanation(ours, theirs)


class InstantProbe:
    """A probe whose NOTIFY always arrives at once; ``failures`` first
    raise an error no check expects."""

    failures = 0

    def __init__(self):
        if InstantProbe.failures:
            InstantProbe.failures -= 1
            raise RuntimeError("a bug in a check")

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False

    payload = "payload"

    def wait(self, timeout):
        return True


def bare_watch(stop, **settings):
    route = resolve_route({"imdispatcher_db_host": "listener-route"}, environ={})
    return ListenerWatch(a_listener(stop, **settings), route)


def test_an_unexpected_error_in_a_check_does_not_end_the_watch(caplog):
    InstantProbe.failures = 3
    stop = threading.Event()
    watch = bare_watch(stop, heartbeat_interval=0.05, selfcheck_timeout=0.05)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        watch.start("test.watch")
        watch.listener_connected(object())
        try:
            for _wait in range(200):
                if watch.record.last_check_passed:
                    break
                stop.wait(0.05)
            assert watch.record.last_check_passed, "the watch stopped checking"
            assert watch.stalled(watch._clock()) is None
        finally:
            stop.set()
    unexpected = [r for r in caplog.records if "failed unexpectedly" in r.getMessage()]
    assert len(unexpected) == 1, "logged once per error type"
    assert unexpected[0].levelno == logging.ERROR
    assert unexpected[0].exc_info is not None


def test_a_watch_whose_thread_ended_is_stalled():
    stop = threading.Event()
    watch = bare_watch(stop, heartbeat_interval=0.05, selfcheck_timeout=5.0)
    watch.start("test.watch")
    stop.set()
    watch._thread.join(30)
    watch.listener_connected(object())
    assert watch.stalled(watch._clock()) == "the watch's thread has ended"


def test_interrupting_a_connection_that_just_closed_does_nothing():
    from bus_alt_connection.lib.route.connection import interrupt_connection

    class JustClosed:
        """psycopg2's fileno() on a closed connection."""

        def fileno(self):
            raise psycopg2.InterfaceError("connection already closed")

    interrupt_connection(JustClosed())
