"""The listener's state in Prometheus' text format, and who may read it.

Everything is per process: in prefork mode the gevent worker runs the bus
dispatcher, and each cron worker its own trigger listener. Rendering only
reads state the listener keeps anyway: it opens no connection, starts nothing."""

import ipaddress
import math
import time

from ..route.config import OptionError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ALLOW_OPTION = "bus_alt_connection_metrics_allow"
PREFIX = "bus_alt_connection_"


def parse_allow(text):
    """The networks of ``bus_alt_connection_metrics_allow`` (a, b/24, …)."""
    networks = []
    for part in map(str.strip, str(text or "").split(",")):
        if part in ("", "False", "false"):
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            why = f"has {part!r}, which is not an address or a network"
            fix = (
                f"set {ALLOW_OPTION} to addresses or networks, e.g. "
                "127.0.0.1,10.0.0.0/8"
            )
            raise OptionError(ALLOW_OPTION, text, "config", why, fix) from None
    return networks


def address_allowed(address, networks):
    """``address`` is in ``networks``; an IPv4-mapped IPv6 address (a
    dual-stack bind's ``::ffff:10.1.2.3``) in its IPv4 network too."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    candidates = (ip, getattr(ip, "ipv4_mapped", None))
    return any(one in net for one in candidates if one is not None for net in networks)


#: WSGI keys of the headers a proxy adds: a request with any of them came
#: through one, besides every ``HTTP_X_FORWARDED_*``.
FORWARDING_HEADERS = ("HTTP_FORWARDED", "HTTP_X_REAL_IP")
#: What werkzeug's ProxyFix replaced. Odoo applies ProxyFix (``x_for=1``)
#: with ``proxy_mode`` on, and only to requests with X-Forwarded-Host (16.0
#: to 19.0); it puts the last X-Forwarded-For address in REMOTE_ADDR.
PROXY_FIX_ORIGINAL = "werkzeug.proxy_fix.orig"


def address_to_judge(environ):
    """The address the allow list judges in ``environ`` (the request's, after
    Odoo's ProxyFix), or None: administrators only. A direct request is judged by
    its peer. Through a proxy, the peer is the proxy, which speaks for everyone
    behind it: the request is judged by the client Odoo resolved (``proxy_mode``),
    or not at all. The headers are never read for an address: anyone can send them."""
    address = environ.get("REMOTE_ADDR")
    if not any(
        key in FORWARDING_HEADERS or key.startswith("HTTP_X_FORWARDED_")
        for key in environ
    ):
        return address
    original = environ.get(PROXY_FIX_ORIGINAL)
    if not isinstance(original, dict) or "HTTP_X_FORWARDED_FOR" not in environ:
        return None
    # a client at the proxy's own address cannot be told from the proxy
    return None if address == original.get("REMOTE_ADDR") else address


def _labels(labels):
    pairs = ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())
    return "{" + pairs + "}" if pairs else ""


def _escape(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value):
    if value is None:
        return "NaN"
    if isinstance(value, bool):
        return "1" if value else "0"
    return "+Inf" if value == math.inf else repr(value)  # an int or a float


def _age_or_inf(moment, now):
    """Seconds since ``moment``, to the ms; +Inf for never (alerts on "too
    long ago" fire)."""
    return math.inf if moment is None else round(now - moment, 3)


FAMILIES = {  # each family's help, in order; a ``_total`` is a counter, else gauge
    "dispatcher_process": (
        "1 when this process runs the bus dispatcher (a threaded server or "
        "prefork's gevent worker)"
    ),
    "dispatcher_started": "1 once the first websocket has started core's dispatcher",
    "listener_info": "the listener's modes and route (never its password)",
    "listener_up": "1 while the listener (or poller) is connected",
    "listener_connects_total": "successful connects",
    "listener_reconnects_total": "connects after the first",
    "listener_failed_attempts_total": "failed connect attempts and lost connections",
    "poll_queries_total": "poll mode: bus.bus queries",
    "channel_lookups_total": (
        "channels core's loop looked up for the notifications it received"
    ),
    "last_notification_age_seconds": (
        "seconds since core's loop last received a notification (+Inf: never)"
    ),
    "checks_total": "self-checks and heartbeats, by result",
    "check_last_pass_age_seconds": (
        "seconds since a self-check or heartbeat last passed (+Inf: never)"
    ),
    "check_round_trip_seconds": (
        "the last passing check's time from NOTIFY to core's dispatch"
    ),
    "cron_listener_up": "1 while a cron runner's trigger listener is connected",
    "cron_listener_connects_total": "connects of a cron runner's trigger listener",
    "cron_triggers_total": "cron triggers received",
    "cron_self_check_passed": (
        "1 when the last self-check or heartbeat heard Odoo's NOTIFY, 0 when "
        "not (NaN: none yet)"
    ),
}


def render(dispatcher, cron_listeners=(), now=None):
    """The exposition of this process. ``dispatcher``: None in a process that
    runs no dispatcher (a prefork HTTP or cron worker), else a dict with
    ``listener``, ``started`` (core's dispatcher thread runs) and ``channel_map``
    (core's map)."""
    now = time.monotonic() if now is None else now
    samples = {"dispatcher_process": [({}, dispatcher is not None)]}
    if dispatcher is not None:
        samples.update(_bus(dispatcher, now))
    samples.update(_cron(list(cron_listeners)))
    lines = []
    for name, help_text in FAMILIES.items():
        if samples.get(name):  # a family without samples is left out
            kind = "counter" if name.endswith("_total") else "gauge"
            lines += [f"# HELP {PREFIX}{name} {help_text}"]
            lines += [f"# TYPE {PREFIX}{name} {kind}"]
        for labels, value in samples.get(name, ()):
            lines.append(f"{PREFIX}{name}{_labels(labels)} {_number(value)}")
    return "\n".join(lines) + "\n"


def _bus(dispatcher, now):
    """{family: [(labels, value)]} of the bus listener."""
    listener, channel_map = dispatcher["listener"], dispatcher["channel_map"]
    state, mode, watch = listener.state, listener.mode, listener.watch
    route = listener.configured_route()
    info = {
        "configured_mode": mode.configured,
        "mode": mode.active,
        "route": route.describe() if route is not None else "",
    }
    labelled = {"listener_info": [(info, 1)]}
    received_at = getattr(channel_map, "last_received_at", None)
    values = {
        "dispatcher_started": dispatcher["started"],
        "listener_up": state.connected,
        "listener_connects_total": state.connects,
        "listener_reconnects_total": state.reconnects,
        "listener_failed_attempts_total": state.failed_attempts,
        "poll_queries_total": state.poll_queries,
        "channel_lookups_total": getattr(channel_map, "lookups", 0),
        "last_notification_age_seconds": _age_or_inf(received_at, now),
    }
    if watch is not None:
        record = watch.record
        values["check_last_pass_age_seconds"] = _age_or_inf(record.last_pass_at, now)
        if record.last_round_trip is not None:
            values["check_round_trip_seconds"] = record.last_round_trip
        labelled["checks_total"] = [
            ({"kind": kind, "result": result}, record.counts.get((kind, result), 0))
            for kind in ("self-check", "heartbeat")
            for result in ("pass", "fail")
        ]
    return {name: [({}, value)] for name, value in values.items()} | labelled


def _cron(listeners):
    """{family: [(labels, value)]}: one sample per cron runner."""
    values_of = {
        "cron_listener_up": lambda one: one.backend_pid is not None,
        "cron_listener_connects_total": lambda one: one.state.connects,
        "cron_triggers_total": lambda one: one.triggers,
        "cron_self_check_passed": lambda one: None
        if one.watch is None
        else one.watch.record.last_check_passed,
    }
    return {
        name: [({"runner": one.name}, value_of(one)) for one in listeners]
        for name, value_of in values_of.items()
    }
