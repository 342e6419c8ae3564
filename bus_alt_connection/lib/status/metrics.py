"""The listener's state in Prometheus' text format, and who may read it.

Plain Python. Everything is per process: in prefork mode the gevent worker
runs the bus dispatcher, and each cron worker its own trigger listener. The
values only read state that the listener keeps anyway; rendering them opens
no connection and starts nothing.
"""

import ipaddress
import math
import time

from ..route.config import RouteConfigError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ALLOW_OPTION = "bus_alt_connection_metrics_allow"
PREFIX = "bus_alt_connection_"


def parse_allow(text):
    """The networks of ``bus_alt_connection_metrics_allow`` (a, b/24, …)."""
    networks = []
    for part in str(text or "").split(","):
        part = part.strip()
        if not part or part in ("False", "false"):
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise RouteConfigError(
                ALLOW_OPTION,
                text,
                "config",
                f"has {part!r}, which is not an address or a network",
                f"set {ALLOW_OPTION} to addresses or networks, e.g. "
                "127.0.0.1,10.0.0.0/8",
            ) from None
    return networks


def address_allowed(address, networks):
    """``address`` is in ``networks``; an IPv4-mapped IPv6 address (a
    dual-stack bind's ``::ffff:10.1.2.3``) in its IPv4 network too."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    candidates = [ip]
    if getattr(ip, "ipv4_mapped", None) is not None:
        candidates.append(ip.ipv4_mapped)
    return any(one in network for one in candidates for network in networks)


#: WSGI keys of the headers a proxy adds: a request with any of them came
#: through one, besides every ``HTTP_X_FORWARDED_*``.
FORWARDING_HEADERS = ("HTTP_FORWARDED", "HTTP_X_REAL_IP")
#: What werkzeug's ProxyFix replaced. Odoo applies ProxyFix (``x_for=1``)
#: with ``proxy_mode`` on, and only to requests with X-Forwarded-Host (16.0
#: to 19.0); it puts the last X-Forwarded-For address in REMOTE_ADDR.
PROXY_FIX_ORIGINAL = "werkzeug.proxy_fix.orig"


def came_through_a_proxy(environ):
    return any(
        key in FORWARDING_HEADERS or key.startswith("HTTP_X_FORWARDED_")
        for key in environ
    )


def odoo_resolved_client(environ):
    """Odoo's ProxyFix replaced REMOTE_ADDR with the client X-Forwarded-For
    names. A client at the proxy's own address cannot be told from the
    proxy: not resolved."""
    original = environ.get(PROXY_FIX_ORIGINAL)
    if not isinstance(original, dict) or "HTTP_X_FORWARDED_FOR" not in environ:
        return False
    return environ.get("REMOTE_ADDR") not in (None, original.get("REMOTE_ADDR"))


def address_to_judge(environ):
    """The address the allow list judges, or None: administrators only.

    A direct request is judged by its peer. Through a proxy, the peer is the
    proxy, which speaks for everyone behind it: the request is judged by the
    client Odoo resolved (``proxy_mode``), or not at all. The headers are
    never read for an address: anyone can send them.

    :param environ: the request's WSGI environ, after Odoo's ProxyFix
    """
    address = environ.get("REMOTE_ADDR")
    if not came_through_a_proxy(environ) or odoo_resolved_client(environ):
        return address
    return None


def _family(lines, name, kind, help_text, samples):
    """Append a metric family to ``lines``, HELP and TYPE first.

    ``samples``: a list of (labels dict, value); a family with none is left
    out.
    """
    if samples:
        lines += [f"# HELP {PREFIX}{name} {help_text}", f"# TYPE {PREFIX}{name} {kind}"]
    for labels, value in samples:
        lines.append(f"{PREFIX}{name}{_labels(labels)} {_number(value)}")


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
    if isinstance(value, float):
        return "+Inf" if math.isinf(value) else repr(value)
    return str(value)


def _seconds_since_or_inf(moment, now):
    """Seconds since ``moment``, to the ms; +Inf for never (alerts on "too
    long ago" fire)."""
    return math.inf if moment is None else round(now - moment, 3)


def render(dispatcher, cron_listeners=(), now=None):
    """The exposition of this process.

    :param dispatcher: None in a process that runs no dispatcher (a prefork
        HTTP or cron worker), else a dict with ``supervisor``, ``started``
        (core's dispatcher thread runs) and ``channel_map`` (core's map)
    :param cron_listeners: this process's cron trigger listeners
    """
    now = time.monotonic() if now is None else now
    lines = []
    _family(
        lines,
        "dispatcher_process",
        "gauge",
        "1 when this process runs the bus dispatcher (a threaded server or "
        "prefork's gevent worker)",
        [({}, dispatcher is not None)],
    )
    if dispatcher is not None:
        _bus(lines, dispatcher, now)
    _cron(lines, list(cron_listeners))
    return "\n".join(lines) + "\n"


def _bus(lines, dispatcher, now):
    supervisor = dispatcher["supervisor"]
    state, mode, watch = supervisor.state, supervisor.mode, supervisor.watch
    route = supervisor.configured_route()
    _family(
        lines,
        "dispatcher_started",
        "gauge",
        "1 once the first websocket has started core's dispatcher",
        [({}, dispatcher["started"])],
    )
    info = {
        "configured_mode": mode.configured,
        "mode": mode.active,
        "route": route.describe() if route is not None else "",
    }
    _family(
        lines,
        "listener_info",
        "gauge",
        "the listener's modes and route (never its password)",
        [(info, 1)],
    )
    _family(
        lines,
        "listener_up",
        "gauge",
        "1 while the listener (or poller) is connected",
        [({}, state.connected)],
    )
    channel_map = dispatcher["channel_map"]
    for name, value, help_text in (
        ("listener_connects_total", state.connects, "successful connects"),
        ("listener_reconnects_total", state.reconnects, "connects after the first"),
        (
            "listener_failed_attempts_total",
            state.failed_attempts,
            "failed connect attempts and lost connections",
        ),
        ("poll_queries_total", state.poll_queries, "poll mode: bus.bus queries"),
        (
            "channel_lookups_total",
            getattr(channel_map, "lookups", 0),
            "channels core's loop looked up for the notifications it received",
        ),
    ):
        _family(lines, name, "counter", help_text, [({}, value)])
    _family(
        lines,
        "last_notification_age_seconds",
        "gauge",
        "seconds since core's loop last received a notification (+Inf: never)",
        [
            (
                {},
                _seconds_since_or_inf(
                    getattr(channel_map, "last_received_at", None), now
                ),
            )
        ],
    )
    if watch is not None:
        _checks(lines, watch.record, now)


def _checks(lines, record, now):
    _family(
        lines,
        "checks_total",
        "counter",
        "self-checks and heartbeats, by result",
        [
            ({"kind": kind, "result": result}, record.counts.get((kind, result), 0))
            for kind in ("self-check", "heartbeat")
            for result in ("pass", "fail")
        ],
    )
    _family(
        lines,
        "check_last_pass_age_seconds",
        "gauge",
        "seconds since a self-check or heartbeat last passed (+Inf: never)",
        [({}, _seconds_since_or_inf(record.last_pass_at, now))],
    )
    _family(
        lines,
        "check_round_trip_seconds",
        "gauge",
        "the last passing check's time from NOTIFY to core's dispatch",
        [({}, record.last_round_trip)] if record.last_round_trip is not None else [],
    )


def _cron(lines, listeners):
    for name, kind, help_text, value_of in (
        (
            "cron_listener_up",
            "gauge",
            "1 while a cron runner's trigger listener is connected",
            lambda listener: listener.backend_pid is not None,
        ),
        (
            "cron_listener_connects_total",
            "counter",
            "connects of a cron runner's trigger listener",
            lambda listener: listener.state.connects,
        ),
        (
            "cron_triggers_total",
            "counter",
            "cron triggers received",
            lambda listener: listener.triggers,
        ),
        (
            "cron_self_check_passed",
            "gauge",
            "1 when the last self-check or heartbeat heard Odoo's NOTIFY, 0 when "
            "not (NaN: none yet)",
            _last_check_passed,
        ),
    ):
        samples = [({"runner": one.name}, value_of(one)) for one in listeners]
        _family(lines, name, kind, help_text, samples)


def _last_check_passed(listener):
    return None if listener.watch is None else listener.watch.record.last_check_passed
