"""The listener's health, from its state and the watch's last check."""

import time

#: poll mode: unhealthy when the last successful poll is older than this
#: many intervals (and at least POLL_STALE_MIN seconds)
POLL_STALE_INTERVALS = 20
POLL_STALE_MIN = 5.0

NOT_THE_DISPATCHER = (
    "this process does not run the bus dispatcher; in prefork mode ask the "
    "gevent worker (gevent_port), which serves /websocket"
)
NOT_INSTALLED = (
    "bus_alt_connection did not patch the bus dispatcher of this process; "
    "load it with server_wide_modules"
)
#: what an anonymous caller may see besides pass/fail: no route, no error text
PUBLIC_KEYS = ("state", "error")


def public_body(healthy, details):
    body = {"status": "pass" if healthy else "fail"}
    body.update((key, details[key]) for key in PUBLIC_KEYS if key in details)
    return body


def idle_report(listener):
    """(healthy, details) before the first websocket starts the dispatcher:
    nobody waits for a notification yet, so healthy unless the configuration
    already says the listener cannot start."""
    configured = listener.mode.configured == "poll" or listener.route() is not None
    return configured, {
        "state": "idle",
        "detail": "the dispatcher starts with the first websocket",
        "mode": listener.mode.active,
        "configured_mode": listener.mode.configured,
        "last_error": listener.state.last_error,
    }


def health_report(listener, last_received_at=None, now=None):
    """(healthy, details) of this process's listener. ``last_received_at``: when
    it last received a notification (any: the site's traffic, or the watch's own),
    on the monotonic clock. Healthy, in listen mode: connected, its last self-check
    or heartbeat (if any since the connect) heard what Odoo sent, and the watch
    still checks when due; in poll mode: the last poll of every loaded database
    succeeded recently."""
    now = time.monotonic() if now is None else now
    state, mode, watch = listener.state, listener.mode, listener.watch
    last = watch.record if watch is not None else None
    stalled = watch.stalled(now) if watch is not None else None

    def age(moment):  # seconds since it, to 0.1 s; None for never
        return None if moment is None else round(now - moment, 1)

    if mode.active == "poll":
        polled = state.last_poll_at
        stale_after = POLL_STALE_INTERVALS * listener.settings.poll_interval
        fresh = polled is not None and now - polled <= max(POLL_STALE_MIN, stale_after)
        healthy = state.connected and fresh
    else:
        passed = last is None or last.last_check_passed is not False
        healthy = state.connected and passed and not stalled
    running = "listening" if mode.active == "listen" else "polling"
    route = listener.configured_route()  # before last_error: it may set it
    return healthy, {
        "state": running if state.connected else "down",
        "mode": mode.active,
        "mode_reason": mode.reason,
        "configured_mode": mode.configured,
        "last_poll_age_s": age(state.last_poll_at),
        "connected": state.connected,
        "connected_for_s": age(state.connected_since) if state.connected else None,
        "down_for_s": age(state.down_since),
        "connects": state.connects,
        "reconnects": state.reconnects,
        "failed_attempts": state.failed_attempts,
        "last_error": state.last_error,
        "last_notification_age_s": age(last_received_at),
        "last_check": None
        if last is None or last.last_kind is None
        else {
            "kind": last.last_kind,
            "ok": last.last_check_passed,
            "age_s": age(last.last_at),
        },
        "watch_stalled": stalled,
        "route": route.public_dict() if route is not None else None,
    }
