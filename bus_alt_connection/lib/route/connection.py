"""A listener's connection: its libpq keywords, a standby refused, a
connection cut on purpose, and the errors an operator can act on."""

import contextlib
import os
import re
import socket

from .config import shown

#: Seconds libpq waits for a route that does not answer (firewalled host).
CONNECT_TIMEOUT = 10
#: TCP keepalives, so that a peer that vanished is noticed within about a minute.
KEEPALIVE_PARAMS = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def listener_params(route, application_name=None):
    """libpq keywords for the listener: the route plus timeouts, keepalives
    and how it shows in ``pg_stat_activity``."""
    params = route.libpq_params()
    for key, value in {
        "connect_timeout": CONNECT_TIMEOUT,
        "application_name": application_name or f"odoo-bus-listener-{os.getpid()}",
        **KEEPALIVE_PARAMS,
    }.items():
        params.setdefault(key, value)
    return params


class StandbyRoute(Exception):
    def __init__(self):
        super().__init__(
            "the listener route leads to a standby (pg_is_in_recovery() is "
            "true), where LISTEN is refused"
        )


def refuse_standby(connection):
    """Raise StandbyRoute if ``connection`` (psycopg2) is on a standby:
    checked before core's LISTEN, which would fail there with an ERROR of
    core's own ("bad query") at every retry."""
    with connection.cursor() as cr:
        cr.execute("SELECT pg_is_in_recovery()")
        if cr.fetchone()[0]:
            raise StandbyRoute()


def interrupt_connection(connection):
    """Make a connection that another thread waits on fail at once: shutting
    the socket down wakes the thread blocked in select() with an end of file;
    its next ``poll()`` raises, as if the server had gone."""
    try:
        sock = socket.socket(fileno=os.dup(connection.fileno()))
    except Exception:  # psycopg2.InterfaceError, OSError, ValueError
        return  # already closed
    with contextlib.closing(sock), contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


# {regex on libpq's or PgBouncer's message: (options at fault, advice)}
_DIAGNOSES = {
    "could not translate host name": (
        ("host",),
        "the host name does not resolve; set imdispatcher_db_host to a name "
        "or address of the PostgreSQL server",
    ),
    "connection refused": (
        ("host", "port"),
        "nothing accepts connections there; check imdispatcher_db_host and "
        "imdispatcher_db_port point at a running PostgreSQL",
    ),
    "timeout expired": (
        ("host", "port"),
        "the route did not answer within %d s; check imdispatcher_db_host, "
        "imdispatcher_db_port and the firewall between Odoo and PostgreSQL"
        % CONNECT_TIMEOUT,
    ),
    "no route to host|network is unreachable": (
        ("host",),
        "the network has no way to that host; check imdispatcher_db_host",
    ),
    "password authentication failed|sasl authentication failed": (
        ("user", "password"),
        "the server refused the password; check imdispatcher_db_user and "
        "imdispatcher_db_password (or ODOO_IMDISPATCHER_DB_PASSWORD)",
    ),
    "no password supplied": (
        ("password",),
        "the server wants a password; set imdispatcher_db_password "
        "(or ODOO_IMDISPATCHER_DB_PASSWORD)",
    ),
    "no pg_hba.conf entry": (
        ("host", "user"),
        "the server's pg_hba.conf does not admit this client; ask the DBA to "
        "allow it, or use another imdispatcher_db_user",
    ),
    r'database ".*" does not exist': (
        ("name",),
        "no such database on that server; check imdispatcher_db_name",
    ),
    r'role ".*" does not exist': (
        ("user",),
        "no such role on that server; check imdispatcher_db_user",
    ),
    "no such database": (
        ("name",),
        "the pooler has no such database alias; check imdispatcher_db_name",
    ),
    "no such user": (
        ("user",),
        "the pooler does not know that user; check imdispatcher_db_user",
    ),
    "does not support ssl|ssl connection is required|certificate|invalid sslmode": (
        ("sslmode",),
        "the server and imdispatcher_db_sslmode disagree about SSL",
    ),
    "during recovery|leads to a standby": (
        ("host", "target_session_attrs"),
        "the route leads to a standby, where LISTEN is refused; point "
        "imdispatcher_db_host at the primary, or list every node there and "
        "set imdispatcher_db_target_session_attrs = read-write",
    ),
    "server closed the connection unexpectedly": (
        (),
        "the server or something between closed the listener's connection",
    ),
    "terminating connection": (
        (),
        "PostgreSQL ended the listener's backend (restart, failover or "
        "pg_terminate_backend)",
    ),
}


def first_line(exc):
    return (str(exc).strip() or type(exc).__name__).splitlines()[0].strip()


def diagnose_connection_error(exc, route):
    """(options at fault, one-line explanation) of a listener error; it names
    the route and the values at fault with their source, never the password."""
    lowered = str(exc).lower()
    options, advice = next(
        (entry for pattern, entry in _DIAGNOSES.items() if re.search(pattern, lowered)),
        ((), "see the PostgreSQL server log for details"),
    )
    prefix = route.option_prefix
    culprits = ", ".join(
        f"{prefix}{name}={_shown(route.values[name])!r} ({route.source(name)})"
        for name in options
    )
    message = f"{first_line(exc)} [route {route.describe()}]"
    if culprits:
        message += f"; values at fault: {culprits}"
    advice = advice.replace("ODOO_IMDISPATCHER_DB_", "ODOO_" + prefix.upper())
    return options, f"{message}; {advice.replace('imdispatcher_db_', prefix)}"


def _shown(value):
    return (shown(value.value, True) or "(unset)") if value.secret else value.value
