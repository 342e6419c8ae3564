"""LISTEN on one route, NOTIFY through another, count what arrives: how auto
mode and the operator's check find a route that connects but cannot hear
(through a transaction-mode pooler, or on another cluster or database)."""

import contextlib
import os
import secrets
import selectors
import time

import psycopg2
from psycopg2 import sql

DEFAULT_NOTIFY_FUNCTION = "pg_notify"


def notify_function(environ=None):
    """The SQL function Odoo sends its NOTIFY with: ODOO_NOTIFY_FUNCTION
    (Odoo 17.0+, read once at start, as core does) or pg_notify."""
    environ = os.environ if environ is None else environ
    return environ.get("ODOO_NOTIFY_FUNCTION") or DEFAULT_NOTIFY_FUNCTION


def notify_sql(function):
    return sql.SQL("SELECT {}(%s, %s)").format(sql.Identifier(function))


def connect_autocommit(params):
    connection = psycopg2.connect(**params)
    connection.autocommit = True
    return connection


@contextlib.contextmanager
def _listening(listen_params):
    """(connection, channel): LISTEN on a private channel, closed afterwards."""
    channel = f"bus_alt_connection_probe_{os.getpid()}_{secrets.token_hex(4)}"
    with contextlib.closing(connect_autocommit(listen_params)) as connection:
        with connection.cursor() as cr:
            cr.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        yield connection, channel


SERVER_FACTS_SQL = (
    "SELECT current_database(), (SELECT system_identifier FROM pg_control_system())"
)


def read_server_facts(cursor):
    """What tells two routes apart: the database and the cluster
    (``system_identifier``, None where the role may not read it)."""
    try:
        cursor.execute(SERVER_FACTS_SQL)
        database, system_identifier = cursor.fetchone()
    except psycopg2.Error:
        cursor.connection.rollback()
        cursor.execute("SELECT current_database()")
        database, system_identifier = cursor.fetchone()[0], None
    return {"database": database, "system_identifier": system_identifier}


def route_facts(params):
    """``read_server_facts`` through a short connection with ``params``."""
    with contextlib.closing(connect_autocommit(params)) as connection:
        with connection.cursor() as cr:
            return read_server_facts(cr)


def sender(notify_params, function=None):
    """``send(channel, count)``: NOTIFY the way Odoo does, short transactions
    on ``notify_params`` with ``function`` (ODOO_NOTIFY_FUNCTION's, by
    default); returns when the first was committed."""
    statement = notify_sql(function or notify_function())

    def send(channel, count):
        first_committed_at = None
        with contextlib.closing(connect_autocommit(notify_params)) as connection:
            with connection.cursor() as cr:
                for number in range(count):
                    cr.execute(statement, (channel, f"[{number}]"))
                    first_committed_at = first_committed_at or time.monotonic()
        return first_committed_at

    return send


def _collect(connection, channel, expected, timeout):
    """Payloads of ``channel`` that arrive within ``timeout`` seconds."""
    payloads, first_at = [], None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(connection, selectors.EVENT_READ)
        while len(payloads) < expected:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if not selector.select(remaining):
                continue
            connection.poll()
            while connection.notifies:
                notify = connection.notifies.pop(0)
                if notify.channel == channel:
                    payloads.append(notify.payload)
                    first_at = first_at or time.monotonic()
    return payloads, first_at


def notify_roundtrip(listen_params, send, count=1, timeout=5.0):
    """LISTEN through ``listen_params``, ``send(channel, count)`` NOTIFYs
    (``sender``'s, or the glue's through Odoo's pool), and say what arrived
    within ``timeout`` s: {"sent", "received" (how many), "ms" (to the
    first, or None), "server_version", "standby"}. Errors of the listening
    side propagate."""
    with _listening(listen_params) as (listener, channel):
        with listener.cursor() as cr:
            cr.execute("SELECT current_setting('server_version'), pg_is_in_recovery()")
            version, standby = cr.fetchone()
        sent_at = time.monotonic()
        sent_at = send(channel, count) or sent_at
        payloads, first_at = _collect(listener, channel, count, timeout)
    return {
        "sent": count,
        "received": len(payloads),
        "ms": None if first_at is None else round((first_at - sent_at) * 1000, 1),
        "server_version": version,
        "standby": standby,
    }
