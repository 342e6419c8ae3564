"""The metrics exposition and its access rule, without Odoo.

Parsed with prometheus_client's own parser, as a scraper reads it.
"""

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bus_alt_connection.lib.listener.engine import ListenerState
from bus_alt_connection.lib.listener.watch import CheckResult, ListenerWatch
from bus_alt_connection.lib.route.config import RouteConfigError, resolve_route
from bus_alt_connection.lib.status.metrics import (
    address_allowed,
    parse_allow,
    render,
)

from .test_listener_supervisor import listens_then_stops, make_supervisor

SECRET = "metrics-never-show-this"


def samples(text):
    """{(name, frozenset(labels)): value} of every sample."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def a_route():
    return resolve_route(
        {"imdispatcher_db_host": "pg-direct", "imdispatcher_db_password": SECRET},
        environ={},
    )


class ChannelMap(dict):
    lookups = 7
    last_received_at = None


class TriggerListener:
    def __init__(self, name, connected, heard):
        self.name = name
        self.backend_pid = 4242 if connected else None
        self.state = ListenerState(connects=2)
        self.triggers = 5
        self.watch = a_watch(None, {})
        self.watch.record.last_result = (
            None if heard is None else CheckResult(heard, "x", 0)
        )


def a_watch(route, counts, last_pass_at=None):
    watch = ListenerWatch(
        "bus listener",
        route,
        new_probe=None,
        send_notify=None,
        explain_deafness=None,
        interrupt_listener=None,
        stop_event=None,
    )
    watch.record.counts.update(counts)
    watch.record.last_pass_at = last_pass_at
    watch.record.last_round_trip = 0.004 if last_pass_at is not None else None
    return watch


def test_a_listening_dispatcher_and_its_checks():
    supervisor, stop, clock = make_supervisor(a_route)
    supervisor.run_attempt(listens_then_stops(stop), lambda: None)
    supervisor.watch = a_watch(
        supervisor.route(),
        {("self-check", "pass"): 1, ("heartbeat", "pass"): 3, ("heartbeat", "fail"): 1},
        last_pass_at=clock.now - 12,
    )
    text = render(
        {"supervisor": supervisor, "started": True, "channel_map": ChannelMap()},
        [TriggerListener("cron0", True, True), TriggerListener("cron1", False, None)],
        now=clock.now,
    )
    got = samples(text)
    assert got["bus_alt_connection_dispatcher_process", frozenset()] == 1
    assert got["bus_alt_connection_listener_up", frozenset()] == 1
    assert got["bus_alt_connection_listener_connects_total", frozenset()] == 1
    assert got["bus_alt_connection_channel_lookups_total", frozenset()] == 7
    heartbeat_fails = frozenset({"kind": "heartbeat", "result": "fail"}.items())
    assert got["bus_alt_connection_checks_total", heartbeat_fails] == 1
    assert got["bus_alt_connection_check_last_pass_age_seconds", frozenset()] == 12
    assert got["bus_alt_connection_check_round_trip_seconds", frozenset()] == 0.004
    assert math.isinf(
        got["bus_alt_connection_last_notification_age_seconds", frozenset()]
    )
    info = [key for key in got if key[0] == "bus_alt_connection_listener_info"]
    assert dict(info[0][1])["route"].startswith("pg-direct:")
    cron0, cron1 = (frozenset({"runner": name}.items()) for name in ("cron0", "cron1"))
    assert got["bus_alt_connection_cron_listener_up", cron0] == 1
    assert got["bus_alt_connection_cron_listener_up", cron1] == 0
    assert got["bus_alt_connection_cron_triggers_total", cron0] == 5
    assert math.isnan(got["bus_alt_connection_cron_self_check_passed", cron1])
    assert SECRET not in text


def test_a_process_without_the_dispatcher_says_so():
    got = samples(render(None, []))
    assert got == {("bus_alt_connection_dispatcher_process", frozenset()): 0}


def test_allow_list():
    networks = parse_allow("127.0.0.1, 10.0.0.0/8,::1")
    assert address_allowed("127.0.0.1", networks)
    assert address_allowed("10.20.30.40", networks)
    assert address_allowed("::1", networks)
    assert not address_allowed("192.168.1.1", networks)
    assert not address_allowed(None, networks)
    assert parse_allow(None) == parse_allow("") == []


def test_a_bad_allow_list_names_the_option():
    with pytest.raises(RouteConfigError) as raised:
        parse_allow("127.0.0.1,localhost")
    assert "bus_alt_connection_metrics_allow" in str(raised.value)
    assert "'localhost'" in str(raised.value)
