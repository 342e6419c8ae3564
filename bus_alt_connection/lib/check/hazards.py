"""What else can make the listener hear nothing, or cut it: for the check.

The round trip (``steps.py``) proves that a NOTIFY reaches the route now;
these findings are what breaks it later or elsewhere: a session timeout that
cuts an idle listener, a pooler that closes idle clients, a replica route (a
standby refuses LISTEN), too few free connections."""

import contextlib
import dataclasses

import psycopg2

from ..listener.round_trip import connect_autocommit
from ..route.config import UNSET_VALUES
from ..route.connection import KEEPALIVE_PARAMS, first_line, listener_params
from .report import MISCONFIGURED, OK

#: one bus listener per instance (threaded server, or prefork's gevent worker)
BUS_LISTENERS_PER_INSTANCE = 1
DEFAULT_CRON_RUNNERS = 2  # Odoo's default max_cron_threads


@dataclasses.dataclass
class Finding:
    name: str
    exit_code: int
    detail: str
    advice: str = ""


def _settings(connection, names):
    """{name: (value, unit)} of PostgreSQL settings as this session has them
    (role and database settings included); a missing one is left out."""
    with connection.cursor() as cr:
        cr.execute(
            "SELECT name, setting, unit FROM pg_settings WHERE name = ANY(%s)",
            (list(names),),
        )
        return {name: (setting, unit or "") for name, setting, unit in cr.fetchall()}


def _seconds(setting):
    """A duration setting of pg_settings (in ms) in seconds; 0 when unset."""
    return int(setting[0]) / 1000 if setting else 0.0


def session_timeouts(connection, route):
    """PostgreSQL timeouts that apply to the route's role and database."""
    values = _settings(
        connection, ["idle_session_timeout", "idle_in_transaction_session_timeout"]
    )
    findings = []
    if idle := _seconds(values.get("idle_session_timeout")):
        detail = (
            f"idle_session_timeout is {idle:g} s for this role and database "
            f"on {route.describe()}: PostgreSQL closes the listener after "
            "that long without a query of its own, however many "
            "notifications it receives"
        )
        advice = (
            f"ALTER ROLE {route.user or '<role>'} SET idle_session_timeout = 0 "
            "(or ALTER DATABASE … SET, wherever it is set)"
        )
        findings.append(Finding("idle_session_timeout", MISCONFIGURED, detail, advice))
    if in_transaction := _seconds(values.get("idle_in_transaction_session_timeout")):
        detail = (
            f"idle_in_transaction_session_timeout is {in_transaction:g} s: "
            "harmless, the listener holds no transaction open"
        )
        findings.append(Finding("idle_in_transaction_session_timeout", OK, detail))
    return findings


def server_keepalives(connection):
    """PostgreSQL's own TCP keepalives, beside the listener's."""
    values = _settings(
        connection,
        ["tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count"],
    )
    server = ", ".join(
        f"{name.rsplit('_', 1)[-1]} {value}{unit}"
        for name, (value, unit) in sorted(values.items())
    )
    ours = ", ".join(
        f"{name.rsplit('_', 1)[-1]} {value}"
        for name, value in KEEPALIVE_PARAMS.items()
        if name != "keepalives"
    )
    detail = (
        f"TCP keepalives: the listener asks for its own ({ours}); PostgreSQL's "
        f"side: {server} (0: the system's default)"
    )
    return Finding("tcp_keepalives", OK, detail)


def pgbouncer_timeouts(route):
    """A route through PgBouncer: its timeouts that close an idle client,
    read from its admin console with the route's own credentials."""
    params = {**listener_params(route), "database": "pgbouncer"}
    try:
        connection = connect_autocommit(params)
    except psycopg2.Error as error:
        if "does not exist" in str(error):
            return []  # PostgreSQL itself: no pgbouncer database
        detail = (
            "if the route goes through PgBouncer, its settings could not be "
            f"read with the route's role ({first_line(error)}); make sure "
            "client_idle_timeout is 0 there"
        )
        return [Finding("pgbouncer", OK, detail)]
    with contextlib.closing(connection), connection.cursor() as cr:
        cr.execute("SHOW CONFIG")
        config = {row[0]: row[1] for row in cr.fetchall()}
    if client_idle := float(config.get("client_idle_timeout") or 0):
        detail = (
            f"the route goes through PgBouncer with client_idle_timeout = "
            f"{client_idle:g} s: it closes the listener, which never sends "
            "a query, that often"
        )
        advice = (
            "set client_idle_timeout = 0 in pgbouncer.ini (it applies to "
            "every pool), or point the route at PostgreSQL itself"
        )
        return [Finding("client_idle_timeout", MISCONFIGURED, detail, advice)]
    detail = (
        "the route goes through PgBouncer: client_idle_timeout is 0; "
        "server_idle_timeout, server_lifetime, query_timeout and "
        "idle_transaction_timeout do not touch a session-mode client "
        "that holds its server connection without a transaction"
    )
    return [Finding("pgbouncer", OK, detail)]


def _endpoints(hosts, ports):
    hosts = [h.strip() for h in str(hosts or "").split(",") if h.strip()]
    ports = [p.strip() for p in str(ports or "5432").split(",")]
    if len(ports) == 1:
        ports = ports * len(hosts)
    return set(zip(hosts, ports, strict=False))


def replica_route(config, route):
    """The Finding if ``db_replica_host`` (Odoo 18.0+) is where the route
    points, else None."""
    replica_host = config.get("db_replica_host")
    if replica_host in UNSET_VALUES:
        return None
    replica_port = config.get("db_replica_port")
    if replica_port in UNSET_VALUES:
        replica_port = config.get("db_port")
    shared = _endpoints(replica_host, replica_port) & _endpoints(route.host, route.port)
    if not shared:
        return None
    host, port = sorted(shared)[0]
    return Finding(
        "db_replica_host",
        MISCONFIGURED,
        f"the listener route {host}:{port} is db_replica_host's: Odoo reads "
        "from a standby there, and a standby refuses LISTEN",
        "point imdispatcher_db_host/imdispatcher_db_port at the primary "
        "(with a host list, add target_session_attrs = read-write)",
    )


def connection_room(connection, config, cron_redirected):
    """PostgreSQL's free connections against what the route will hold."""
    with connection.cursor() as cr:
        cr.execute(
            "SELECT current_setting('max_connections')::int, "
            "current_setting('superuser_reserved_connections')::int, "
            "(SELECT count(*) FROM pg_stat_activity "
            "WHERE backend_type = 'client backend')"
        )
        maximum, reserved, used = cr.fetchone()
    free = maximum - reserved - used
    threads = config.get("max_cron_threads")
    runners = DEFAULT_CRON_RUNNERS if threads in UNSET_VALUES else int(threads)
    cron = runners if cron_redirected else 0
    per_instance = BUS_LISTENERS_PER_INSTANCE + cron
    detail = (
        f"this configuration holds {per_instance} direct connection(s) per Odoo "
        f"instance on the route ({BUS_LISTENERS_PER_INSTANCE} bus listener"
        + (f" + {cron} cron trigger listener(s), one per cron runner" if cron else "")
        + f"); PostgreSQL has {free} free of max_connections {maximum} "
        f"({reserved} reserved for superusers, {used} in use)"
    )
    if free >= per_instance:
        return Finding("max_connections", OK, detail)
    advice = (
        "raise max_connections, or lower max_cron_threads (or "
        "cron_trigger_redirect = False)"
    )
    return Finding("max_connections", MISCONFIGURED, detail, advice)


def find_hazards(config, route, cron_redirected):
    """The findings read on the route's server; psycopg2 errors propagate.
    (``replica_route`` needs no connection: the check runs it first.)"""
    with contextlib.closing(connect_autocommit(listener_params(route))) as connection:
        findings = [
            *session_timeouts(connection, route),
            server_keepalives(connection),
            connection_room(connection, config, cron_redirected),
        ]
    return findings + pgbouncer_timeouts(route)
