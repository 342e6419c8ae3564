"""The metrics exposition and its access rule, without Odoo.

Parsed with prometheus_client's own parser, as a scraper reads it.
"""

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bus_alt_connection.lib.listener.life import ListenerState
from bus_alt_connection.lib.listener.watch import ListenerWatch
from bus_alt_connection.lib.route.config import OptionError, resolve_route
from bus_alt_connection.lib.status.metrics import (
    address_allowed,
    address_to_judge,
    parse_allow,
    render,
)

from .test_listener_bus import (
    attempt,
    listens_then_stops,
    lost_after_listening,
    make_listener,
    refused,
)
from .test_listener_watch import a_listener

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
        self.watch.record.last_check_passed = heard


def a_watch(route, counts, last_pass_at=None):
    watch = ListenerWatch(a_listener(), route)
    watch.record.counts.update(counts)
    watch.record.last_pass_at = last_pass_at
    watch.record.last_round_trip = 0.004 if last_pass_at is not None else None
    return watch


def test_a_listening_dispatcher_and_its_checks():
    listener, stop, clock = make_listener(a_route)
    attempt(listener, listens_then_stops(stop))
    listener.watch = a_watch(
        listener.route(),
        {("self-check", "pass"): 1, ("heartbeat", "pass"): 3, ("heartbeat", "fail"): 1},
        last_pass_at=clock.now - 12,
    )
    text = render(
        {"listener": listener, "started": True, "channel_map": ChannelMap()},
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


def test_an_ipv4_mapped_address_is_in_its_ipv4_network():
    """A dual-stack bind (``::``) sees IPv4 peers as ``::ffff:a.b.c.d``."""
    networks = parse_allow("127.0.0.1,10.0.0.0/8")
    assert address_allowed("::ffff:10.1.2.3", networks)
    assert address_allowed("::ffff:127.0.0.1", networks)
    assert not address_allowed("::ffff:192.168.1.1", networks)
    assert not address_allowed("::ffff:10.1.2.3", parse_allow("192.168.0.0/16"))
    assert address_allowed("::ffff:10.1.2.3", parse_allow("::ffff:10.0.0.0/104"))


PROXY = "127.0.0.1"  # nginx on the same host: in the allow list
INSIDE, OUTSIDE = "10.1.2.3", "203.0.113.9"
PROXY_HEADERS = {"X-Forwarded-Host": "odoo.example.com", "X-Forwarded-Proto": "https"}


def as_odoo_sees_it(headers, proxy_mode, peer=PROXY):
    """The WSGI environ of a request from ``peer`` once Odoo's ProxyFix ran.

    Like odoo.http.Application (16.0 to 19.0): with proxy_mode on and an
    X-Forwarded-Host, werkzeug's ProxyFix(x_for=1, x_proto=1, x_host=1)
    records what it replaces and puts the last X-Forwarded-For in REMOTE_ADDR.
    """
    environ = {"REMOTE_ADDR": peer, "wsgi.url_scheme": "http"}
    environ.update(
        ("HTTP_" + name.upper().replace("-", "_"), value)
        for name, value in headers.items()
    )
    if proxy_mode and "HTTP_X_FORWARDED_HOST" in environ:
        environ["werkzeug.proxy_fix.orig"] = {"REMOTE_ADDR": peer}
        values = [v.strip() for v in environ.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        if values[-1]:
            environ["REMOTE_ADDR"] = values[-1]
    return environ


def judged(headers, proxy_mode, peer=PROXY):
    return address_to_judge(as_odoo_sees_it(headers, proxy_mode, peer))


@pytest.mark.parametrize("proxy_mode", [True, False])
def test_a_direct_request_is_judged_by_its_peer(proxy_mode):
    assert judged({}, proxy_mode) == PROXY
    assert judged({}, proxy_mode, peer=OUTSIDE) == OUTSIDE


@pytest.mark.parametrize("client", [INSIDE, OUTSIDE])
def test_with_proxy_mode_the_client_odoo_resolved_is_judged(client):
    headers = {**PROXY_HEADERS, "X-Forwarded-For": client}
    assert judged(headers, proxy_mode=True) == client
    # the proxy appends its peer to what the client sent
    headers["X-Forwarded-For"] = f"{INSIDE}, {client}"
    assert judged(headers, proxy_mode=True) == client


@pytest.mark.parametrize("client", [INSIDE, OUTSIDE])
def test_without_proxy_mode_a_proxied_request_is_for_administrators(client):
    """The peer is the proxy: it speaks for everyone on the internet."""
    headers = {**PROXY_HEADERS, "X-Forwarded-For": client}
    assert judged(headers, proxy_mode=False) is None


@pytest.mark.parametrize(
    "header",
    [
        ("X-Forwarded-For", INSIDE),
        ("Forwarded", f"for={INSIDE}"),
        ("X-Real-IP", INSIDE),
        ("X-Forwarded-Host", "odoo.example.com"),
        ("X-Forwarded-Proto", "https"),
    ],
)
@pytest.mark.parametrize("proxy_mode", [True, False])
def test_any_forwarding_header_means_a_proxy(header, proxy_mode):
    """Unless Odoo resolved X-Forwarded-For, the client is unknown; the
    header's own address decides nothing."""
    name, value = header
    assert judged({name: value}, proxy_mode) is None
    assert judged({name: value}, proxy_mode, peer=OUTSIDE) is None


def test_odoo_resolves_only_with_x_forwarded_host():
    """Odoo applies ProxyFix only to requests with X-Forwarded-Host."""
    assert judged({"X-Forwarded-For": INSIDE}, proxy_mode=True) is None


@pytest.mark.parametrize(
    "header", [("Forwarded", f"for={INSIDE}"), ("X-Real-IP", INSIDE)]
)
def test_odoo_resolves_only_x_forwarded_for(header):
    name, value = header
    assert judged({**PROXY_HEADERS, name: value}, proxy_mode=True) is None


@pytest.mark.parametrize("forwarded_for", ["", " ", ","])
def test_an_empty_x_forwarded_for_resolves_nothing(forwarded_for):
    headers = {**PROXY_HEADERS, "X-Forwarded-For": forwarded_for}
    assert judged(headers, proxy_mode=True) is None


def test_a_client_at_the_proxys_address_cannot_be_told_from_it():
    headers = {**PROXY_HEADERS, "X-Forwarded-For": PROXY}
    assert judged(headers, proxy_mode=True) is None


def test_a_request_without_an_address_is_judged_by_none():
    assert address_to_judge({}) is None
    assert not address_allowed(address_to_judge({}), parse_allow("0.0.0.0/0"))


def test_a_bad_allow_list_names_the_option():
    with pytest.raises(OptionError) as raised:
        parse_allow("127.0.0.1,localhost")
    assert "bus_alt_connection_metrics_allow" in str(raised.value)
    assert "'localhost'" in str(raised.value)


def counter(got, name):
    return got[f"bus_alt_connection_{name}", frozenset()]


def test_reconnects_and_failed_attempts_count_what_the_listener_went_through():
    """Connected, lost, refused twice, back: 2 connects, 1 reconnect, 3
    failed attempts (the loss counts as one)."""
    listener, stop, _clock = make_listener(a_route)
    attempt(listener, lost_after_listening)
    attempt(listener, refused)
    attempt(listener, refused)
    attempt(listener, listens_then_stops(stop))
    got = samples(
        render({"listener": listener, "started": True, "channel_map": ChannelMap()})
    )
    assert counter(got, "listener_connects_total") == 2
    assert counter(got, "listener_reconnects_total") == 1
    assert counter(got, "listener_failed_attempts_total") == 3
    assert counter(got, "poll_queries_total") == 0


def test_poll_queries_count_every_database_of_every_round():
    listener, stop, _clock = make_listener(a_route, mode="poll")

    def three_rounds(on_polling):
        for databases in (2, 0, 3):
            listener.polled(databases)
        on_polling()
        stop.set()

    listener.run_once(listen=None, poll=three_rounds)
    got = samples(
        render({"listener": listener, "started": True, "channel_map": ChannelMap()})
    )
    assert counter(got, "poll_queries_total") == 5
    assert counter(got, "listener_up") == 1
    info = [key for key in got if key[0] == "bus_alt_connection_listener_info"]
    assert dict(info[0][1])["mode"] == "poll"
