"""Retry policy and logs of the listener, without Odoo.

The core loop is played by small functions that behave like core's loop
does on a real failure (they raise psycopg2's own exception types).
"""

import logging
import threading
import types

import psycopg2
import pytest

from bus_alt_connection.lib.listener import bus as bus_module
from bus_alt_connection.lib.listener.bus import IDLE_WAIT, BusListener
from bus_alt_connection.lib.listener.life import FAST_RETRIES, ListenerLife, retry_delay
from bus_alt_connection.lib.listener.watch import ListenerWatch
from bus_alt_connection.lib.route.config import OptionError, Settings, resolve_route
from bus_alt_connection.lib.status.health import health_report, idle_report, public_body

from .test_listener_watch import InstantProbe

LOGGER = "bus_alt_connection"
#: what an event may take on a loaded machine; a pass never waits that long
LOADED_MACHINE_WAIT = 60
SECRET = "never-log-me"


class RecordingStopEvent:
    """A stop event whose waits are recorded instead of slept."""

    def __init__(self):
        self.waits = []
        self._event = threading.Event()

    def wait(self, timeout):
        self.waits.append(timeout)
        return False

    def is_set(self):
        return self._event.is_set()

    def set(self):
        self._event.set()


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def a_route():
    return resolve_route(
        {
            "db_host": "pgbouncer",
            "db_port": 6432,
            "imdispatcher_db_host": "pg-direct",
            "imdispatcher_db_port": "5432",
            "imdispatcher_db_password": SECRET,
        },
        environ={},
    )


class Listener(BusListener):
    """The bus listener with what the Odoo glue says played by the test."""

    def __init__(self, route_factory, stop, settings, db_host_works=True, **options):
        super().__init__(settings, route_factory, stop, **options)
        self._db_host_works = db_host_works
        self.caught_up = []
        self.tries = None  # listen_works(route), when given

    def start_watch(self, route):
        return None  # the watch's own tests: test_listener_watch.py

    def catch_up(self):
        self.caught_up.append(True)

    def db_host_answers(self):
        return self._db_host_works

    def listen_works(self, route):
        if self.tries is None:  # not this test's business: wait for its end
            self.stop_event._event.wait()
            return False, "not tried"
        return self.tries(route)

    def describe_db_host(self):
        return "pgbouncer:6432"

    def new_probe(self):
        return InstantProbe()

    def send_probe(self, payload):
        pass


def make_listener(route_factory=a_route, db_host_works=True, **settings):
    stop = RecordingStopEvent()
    clock = Clock()
    listener = Listener(
        route_factory,
        stop,
        Settings(**settings),
        db_host_works,
        clock=clock,
        rng=lambda: 1.0,
    )
    return listener, stop, clock


def attempt(listener, core_loop):
    """One call of core's loop, listening."""
    listener.run_once(listen=core_loop, poll=None)


def refused(route, on_listening):
    raise psycopg2.OperationalError(
        'connection to server at "pg-direct", port 5432 failed: '
        "Connection refused\n\tIs the server running on that host?"
    )


def lost_after_listening(route, on_listening):
    on_listening()
    raise psycopg2.OperationalError("server closed the connection unexpectedly")


def listens_then_stops(stop):
    def core_loop(route, on_listening):
        on_listening()
        stop.set()

    return core_loop


@pytest.mark.parametrize("failures", range(1, 20))
def test_retry_delay_is_fast_then_jittered_exponential_and_capped(failures):
    ceiling = min(30.0, 2 ** max(0, failures - FAST_RETRIES))
    low = retry_delay(failures, rng=lambda: 0.0)
    high = retry_delay(failures, rng=lambda: 1.0)
    assert (low, high) == (ceiling / 2, ceiling)


def test_first_retry_within_one_second():
    assert retry_delay(1, rng=lambda: 1.0) <= 1.0


def test_cap_is_an_option():
    assert retry_delay(20, rng=lambda: 1.0, cap=5.0) == 5.0


def test_connect_failure_logs_one_error_then_one_warning_per_try(caplog):
    listener, stop, _clock = make_listener()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for _attempt in range(4):
            attempt(listener, refused)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(errors) == 1
    assert "imdispatcher_db_port='5432' (config imdispatcher_db_port)" in (
        errors[0].getMessage()
    )
    assert len(warnings) == 3
    assert all("\n" not in r.getMessage() for r in caplog.records)
    assert not any(r.exc_info for r in caplog.records)
    assert stop.waits == [1.0] * 4
    assert SECRET not in caplog.text


def test_waits_grow_after_the_fast_retries():
    listener, stop, _clock = make_listener()
    for _attempt in range(FAST_RETRIES + 4):
        attempt(listener, refused)
    assert stop.waits == [1.0] * FAST_RETRIES + [2.0, 4.0, 8.0, 16.0]


def test_listening_resets_backoff_logs_downtime_and_catches_up(caplog):
    listener, stop, clock = make_listener()
    attempt(listener, refused)
    attempt(listener, refused)
    assert listener.caught_up == []
    clock.now += 7.5
    with caplog.at_level(logging.INFO, logger=LOGGER):
        attempt(listener, listens_then_stops(stop))
    assert listener.caught_up == [True]
    assert "connected to pg-direct:5432/postgres" in caplog.text
    assert "after 7.5 s of failed attempts" in caplog.text
    assert listener.state.connected
    assert listener.state.connects == 1


def test_reconnect_logs_how_long_the_listener_was_down(caplog):
    listener, stop, clock = make_listener()
    attempt(listener, lost_after_listening)
    clock.now += 3.0
    attempt(listener, refused)
    clock.now += 1.25
    with caplog.at_level(logging.INFO, logger=LOGGER):
        attempt(listener, listens_then_stops(stop))
    assert "back on pg-direct:5432/postgres" in caplog.text
    assert "after 4.2 s down" in caplog.text
    assert listener.state.connects == 2
    assert stop.waits == [1.0, 1.0]


def test_failures_after_a_first_success_are_warnings(caplog):
    listener, _stop, _clock = make_listener()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        attempt(listener, lost_after_listening)
        attempt(listener, refused)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "cannot connect" in caplog.text


def test_lost_connection_warns_and_retries_fast(caplog):
    listener, stop, _clock = make_listener()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        attempt(listener, lost_after_listening)
    assert "lost its connection" in caplog.text
    assert stop.waits == [1.0]
    assert not listener.state.connected


def test_unexpected_error_shows_its_traceback_once(caplog):
    listener, _stop, _clock = make_listener()

    def buggy(route, on_listening):
        raise KeyError("surprise")

    with caplog.at_level(logging.INFO, logger=LOGGER):
        for _attempt in range(3):
            attempt(listener, buggy)
    assert sum(1 for r in caplog.records if r.exc_info) == 1


def test_errors_on_shutdown_are_silent(caplog):
    listener, stop, _clock = make_listener()

    def closed_on_shutdown(route, on_listening):
        stop.set()
        raise psycopg2.InterfaceError("connection already closed")

    with caplog.at_level(logging.INFO, logger=LOGGER):
        attempt(listener, closed_on_shutdown)
    assert caplog.records == []
    assert stop.waits == []


def test_bad_route_logs_one_error_and_never_connects(caplog):
    def bad_route():
        return resolve_route({"imdispatcher_db_port": "abc"}, environ={})

    listener, stop, _clock = make_listener(route_factory=bad_route)
    calls = []
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for _attempt in range(3):
            attempt(listener, lambda *a: calls.append(a))
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "imdispatcher_db_port = 'abc'" in errors[0].getMessage()
    assert calls == []
    assert stop.waits == [IDLE_WAIT] * 3


def test_unconfigured_route_warns_that_the_bus_uses_db_host(caplog):
    def unconfigured():
        return resolve_route({"db_host": "pgbouncer", "db_port": 6432}, environ={})

    listener, _stop, _clock = make_listener(route_factory=unconfigured)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        listener.route()
        listener.route()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "still listens through db_host (pgbouncer:6432" in warnings[0].getMessage()


def test_route_is_resolved_once():
    calls = []

    def counting():
        calls.append(1)
        return a_route()

    listener, _stop, _clock = make_listener(route_factory=counting)
    listener.route()
    listener.route()
    assert calls == [1]


def test_a_bad_route_value_raises_a_value_error_naming_the_option():
    """Code that guards a conversion with ``except ValueError`` (Odoo's, an
    operator's script) catches a bad route value, and is told which option
    holds what."""
    with pytest.raises(ValueError) as raised:
        resolve_route({"imdispatcher_db_port": "abc"}, environ={})
    assert isinstance(raised.value, OptionError)
    assert "imdispatcher_db_port = 'abc'" in str(raised.value)


# --- imdispatcher_mode auto and poll ---------------------------------------


#: imdispatcher_auto_failed_checks by default
AUTO_SWITCH_FAILURES = Settings().auto_failed_checks


def test_auto_mode_polls_after_a_route_that_never_connects(caplog):
    listener, _stop, _clock = make_listener(mode="auto")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for _attempt in range(AUTO_SWITCH_FAILURES):
            assert listener.mode.active == "listen"
            attempt(listener, refused)
    assert listener.mode.active == "poll"
    assert listener.mode.reason.startswith("auto-switched: the listener route")
    switches = [r for r in caplog.records if "now polls" in r.getMessage()]
    assert len(switches) == 1
    assert switches[0].levelno == logging.INFO
    assert "point imdispatcher_db_host" in switches[0].getMessage()
    assert SECRET not in caplog.text


def test_auto_mode_keeps_listening_while_db_host_is_down_too():
    listener, _stop, _clock = make_listener(mode="auto", db_host_works=False)
    for _attempt in range(AUTO_SWITCH_FAILURES + 3):
        attempt(listener, refused)
    assert listener.mode.active == "listen"


def test_auto_mode_polls_when_a_route_that_worked_is_lost(caplog):
    """The route's host goes down for good while db_host answers."""
    listener, _stop, _clock = make_listener(mode="auto")
    attempt(listener, lost_after_listening)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for _attempt in range(AUTO_SWITCH_FAILURES):
            assert listener.mode.active == "listen"
            attempt(listener, refused)
    assert listener.mode.active == "poll"
    switches = [r for r in caplog.records if "now polls" in r.getMessage()]
    assert len(switches) == 1
    assert f"failed {AUTO_SWITCH_FAILURES} connect attempts in a row" in (
        switches[0].getMessage()
    )


def test_auto_mode_counts_failed_connects_as_configured():
    listener, _stop, _clock = make_listener(mode="auto", auto_failed_checks=5)
    attempt(listener, lost_after_listening)
    for _attempt in range(4):
        attempt(listener, refused)
    assert listener.mode.active == "listen"
    attempt(listener, refused)
    assert listener.mode.active == "poll"


def test_auto_mode_counts_only_failures_in_a_row():
    listener, _stop, _clock = make_listener(mode="auto")
    for _round in range(3):
        for _attempt in range(AUTO_SWITCH_FAILURES - 1):
            attempt(listener, refused)
        attempt(listener, lost_after_listening)
    assert listener.mode.active == "listen"


def test_listen_mode_never_switches():
    listener, _stop, _clock = make_listener()
    for _attempt in range(AUTO_SWITCH_FAILURES + 3):
        attempt(listener, refused)
    assert listener.mode.active == "listen"


def test_auto_mode_with_a_bad_route_value_polls_with_one_warning(caplog):
    def bad_route():
        raise OptionError("imdispatcher_db_port", "abc", "config", "bad", "fix")

    listener, _stop, _clock = make_listener(bad_route, mode="auto")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        attempt(listener, refused)
    assert listener.mode.active == "poll"
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "imdispatcher_db_port = 'abc'" in caplog.text


def test_poll_failures_log_one_error_then_warnings_then_back(caplog):
    listener, stop, clock = make_listener(mode="poll")
    caught_up = listener.caught_up

    def fails(on_polling):
        raise psycopg2.OperationalError("connection refused")

    def works_then_stops(on_polling):
        listener.polled()
        on_polling()
        stop.set()

    with caplog.at_level(logging.INFO, logger=LOGGER):
        for _attempt in range(3):
            listener.run_once(listen=None, poll=fails)
        clock.now += 5
        listener.run_once(listen=None, poll=works_then_stops)
    levels = [r.levelname for r in caplog.records]
    assert levels == ["ERROR", "WARNING", "WARNING", "INFO"]
    assert "bus poller cannot connect: connection refused [db_host" in (
        caplog.records[0].getMessage()
    )
    assert "imdispatcher_db" not in caplog.records[0].getMessage()
    assert "bus poller started" in caplog.records[-1].getMessage()
    assert caught_up == [True]
    assert listener.state.connected


def test_poll_mode_health_follows_the_last_poll():
    listener, stop, clock = make_listener(mode="poll")

    def works_then_stops(on_polling):
        listener.polled()
        on_polling()
        stop.set()

    listener.run_once(listen=None, poll=works_then_stops)
    healthy, details = health_report(listener, now=clock.now + 1)
    assert healthy
    assert (details["mode"], details["route"]) == ("poll", None)
    healthy, details = health_report(listener, now=clock.now + 60)
    assert not healthy
    assert details["last_poll_age_s"] == 60


def test_health_fails_once_the_watch_stops_checking():
    """A watch that stopped (a dead thread, a hung check) must not leave
    health saying pass for good."""
    listener, stop, clock = make_listener()
    listener.watch = ListenerWatch(listener, a_route())

    def listens(route, on_listening):
        on_listening(object())
        stop.set()

    attempt(listener, listens)
    assert listener.watch.check_once(after_connect=True)
    healthy, details = health_report(listener, now=clock.now + 40)
    assert healthy, details
    assert details["watch_stalled"] is None
    healthy, details = health_report(listener, now=clock.now + 300)
    assert not healthy
    assert details["watch_stalled"] == "a check is overdue by 265 s"
    assert details["last_check"]["ok"] is True


def test_idle_dispatcher_is_healthy_unless_its_route_cannot_work():
    healthy, details = idle_report(make_listener()[0])
    assert healthy
    assert public_body(healthy, details) == {"status": "pass", "state": "idle"}

    def bad_route():
        return resolve_route({"imdispatcher_db_port": "abc"}, environ={})

    healthy, details = idle_report(make_listener(bad_route)[0])
    assert not healthy
    assert "imdispatcher_db_port" in details["last_error"]
    assert public_body(healthy, details) == {"status": "fail", "state": "idle"}


def test_public_body_shows_no_route_or_error_text():
    listener, stop, _clock = make_listener()

    def fails(route, on_listening):
        raise psycopg2.OperationalError(f"password authentication failed {SECRET}")

    attempt(listener, fails)
    healthy, details = health_report(listener)
    assert details["last_error"]
    assert public_body(healthy, details) == {"status": "fail", "state": "down"}


class VanishingWatch:
    """The engine's watch as another thread sees it while auto mode switches
    to polling: there at the first read, gone at the next."""

    def __init__(self):
        self.calls = []
        self.reads = 0

    def __get__(self, engine, owner=None):
        self.reads += 1
        return self if self.reads == 1 else None

    def __set__(self, engine, value):
        pass

    def listener_connected(self, connection):
        self.calls.append("connected")

    def listener_lost(self):
        self.calls.append("lost")


@pytest.mark.parametrize(
    ("core_loop", "uses", "told"),
    [
        # one use: the failure; the watch is there at its only read
        (refused, 1, ["lost"]),
        # two uses: the connect (there) then the loss (gone by then)
        (lost_after_listening, 2, ["connected"]),
    ],
    ids=["refused", "lost_after_listening"],
)
def test_the_watch_is_read_once_per_use(monkeypatch, core_loop, uses, told):
    watch = VanishingWatch()
    monkeypatch.setattr(ListenerLife, "watch", watch, raising=False)
    listener, _stop, _clock = make_listener()
    route = listener.route()
    listener.attempt(lambda on_connected: core_loop(route, on_connected))
    assert watch.reads == uses
    assert watch.calls == told


def test_auto_mode_polling_tries_the_route_again_and_listens_when_it_hears(
    caplog, retry_threads
):
    tries = []

    def listen_works(route):
        tries.append(route.host)
        return (len(tries) >= 3, f"try {len(tries)}")

    stop = threading.Event()
    listener = Listener(
        a_route, stop, Settings(mode="auto", listen_retry_interval=0.05)
    )
    listener.tries = listen_works
    listener.route()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        listener.to_polling("three checks failed", listener.route())
        assert listener.mode.active == "poll"
        [retry_thread] = retry_threads
        retry_thread.join(LOADED_MACHINE_WAIT)
        assert not retry_thread.is_alive(), "the retries never heard the route"
    stop.set()
    assert listener.mode.active == "listen"
    assert tries == ["pg-direct"] * 3
    assert listener.mode.reason == "auto: the listener route hears Odoo again (try 3)"
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in lines] == [logging.INFO, logging.INFO]
    assert "tries the listener route again every 0.05 s" in lines[0][1]
    assert "hears what Odoo sends again (try 3)" in lines[1][1]


def test_polling_stops_trying_once_odoo_stops(retry_threads):
    tries = []
    tried_twice = threading.Event()

    def deaf(route):
        tries.append(1)
        if len(tries) >= 2:
            tried_twice.set()
        return False, "deaf"

    stop = threading.Event()
    listener = Listener(
        a_route, stop, Settings(mode="auto", listen_retry_interval=0.05)
    )
    listener.tries = deaf
    listener.route()
    listener.to_polling("deaf", listener.route())
    [retry_thread] = retry_threads
    # it keeps trying while Odoo runs...
    assert tried_twice.wait(LOADED_MACHINE_WAIT)
    stop.set()
    # ...and its thread ends once Odoo stops: nothing can try again
    retry_thread.join(LOADED_MACHINE_WAIT)
    assert not retry_thread.is_alive(), "the retries go on after Odoo stopped"
    assert listener.mode.active == "poll"


@pytest.fixture
def retry_threads(monkeypatch):
    """The threads that switches to polling start to try the route again."""
    started = []

    class RecordedThread(threading.Thread):
        def start(self):
            started.append(self)
            super().start()

    monkeypatch.setattr(
        bus_module, "threading", types.SimpleNamespace(Thread=RecordedThread)
    )
    return started
