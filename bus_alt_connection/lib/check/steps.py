"""Will the bus work with this configuration? The operator's check, run by
``odoo-bin bus_check`` with Odoo's parsed config, or without Odoo
(``command.py``); its exit codes are in ``report.py``."""

import contextlib
import dataclasses

import psycopg2

from ..listener.round_trip import (
    DEFAULT_NOTIFY_FUNCTION,
    connect_autocommit,
    notify_function,
    notify_roundtrip,
    route_facts,
    sender,
)
from ..listener.watch import deafness_explanation
from ..polling import BusTracker
from ..route.config import (
    BUS_DATABASE,
    DIRECT_ROUTE_HINT,
    ODOO_DB_OPTIONS,
    UNSET_VALUES,
    OptionError,
    cron_redirect_enabled,
    describe_endpoint,
    odoo_db_params,
    read_settings,
    resolve_cron_route,
    resolve_route,
)
from ..route.connection import diagnose_connection_error, first_line, listener_params
from .hazards import Finding, find_hazards, replica_route
from .report import ADDON, MISCONFIGURED, OK, UNREACHABLE, Report

PROBE_TIMEOUT = 3.0


def server_wide_modules(config):
    value = config.get("server_wide_modules")
    if value in UNSET_VALUES:
        return ["base", "web"]
    if isinstance(value, str):
        return [name.strip() for name in value.split(",") if name.strip()]
    return list(value)


def check_db_host(params):
    """Is ``db_host`` a transaction-mode pooler? Try LISTEN through it, with
    pg_notify: whatever ODOO_NOTIFY_FUNCTION does, this is about the route."""
    send = sender(params, DEFAULT_NOTIFY_FUNCTION)
    result = notify_roundtrip(params, send, timeout=PROBE_TIMEOUT)
    works = result["received"] == result["sent"]
    return {
        "route": describe_endpoint(params),
        "listen_works": works,
        "pooler": not works,
    }


def check_route(route, notify_params, function=DEFAULT_NOTIFY_FUNCTION):
    send = sender(notify_params, function)
    result = notify_roundtrip(listener_params(route), send, timeout=PROBE_TIMEOUT)
    return {
        "route": route.describe(),
        "received": result["received"] == result["sent"],
        **{key: result[key] for key in ("ms", "server_version", "standby")},
    }


def check_setup(config, environ=None):
    """Run every check; return a Report. ``config`` maps Odoo's options."""
    report = check_bus(config, environ)
    if report.exit_code == OK:
        check_cron(report, config, environ)
    return report


def check_cron(report, config, environ=None):
    """Where the cron runners' LISTEN cron_trigger goes, and does it hear?"""
    try:
        if not cron_redirect_enabled(config, environ):
            report.cron = {"state": "off: core's connection, on db_host"}
            return report
        route = resolve_cron_route(config, environ)
    except OptionError as error:
        report.cron = {"state": "not redirected", "error": str(error)}
        return report.conclude(MISCONFIGURED, str(error), "fix that value")
    if not route.configured:
        report.cron = {"state": "no route set: core's connection, on db_host"}
        return report
    report.cron = {
        "state": "own route (cron_db_*)" if route.own else "follows the bus route",
        "route": route.describe(),
    }
    bus_trip = not route.own and report.round_trip  # the same route, tried already
    try:
        trip = bus_trip or check_route(route, odoo_db_params(config))
    except psycopg2.Error as error:
        return _route_fails(report, error, route, "the cron trigger route fails")
    report.cron.update(received=trip["received"], ms=trip["ms"])
    if not bus_trip and not trip["received"]:
        return report.conclude(
            MISCONFIGURED,
            f"the cron trigger route {route.describe()} hears nothing Odoo sends",
            "point cron_db_host and cron_db_port at a direct PostgreSQL route, "
            "or unset them to follow the bus route",
        )
    return report


def check_bus(config, environ=None):
    report = Report()
    modules = server_wide_modules(config)
    report.server_wide = {"modules": modules, "loaded": ADDON in modules}
    settings = read_settings(config, environ)
    if settings.refused:
        refused = "; ".join(map(str, settings.refused))
        return report.conclude(MISCONFIGURED, refused, "fix that value")
    mode, source = settings.mode, settings.values["mode"].source
    report.mode = {"configured": mode, "source": source}
    interval = round(settings.poll_interval * 1000)
    if mode == "poll":
        return check_polling(report, config, interval, f"configured ({source})")
    check_listening(report, config, environ)
    if mode == "listen" or report.exit_code == OK:
        why = f"configured ({source})"
        if mode == "auto":
            why = "auto: LISTEN on the route hears what Odoo sends"
        report.mode.update(active="listen", why=why)
        return report
    why = f"auto: LISTEN cannot work: {report.verdict}"
    if report.advice:
        why += f" ({report.advice})"
    return check_polling(report, config, interval, why)


def check_listening(report, config, environ=None):
    """LISTEN on the imdispatcher_db_* route, NOTIFY through db_host."""
    try:
        route = resolve_route(config, environ)
    except OptionError as error:
        return report.conclude(MISCONFIGURED, str(error), "fix that value")
    report.route = route.public_dict()
    if finding := replica_route(config, route):
        report.findings = [dataclasses.asdict(finding)]
        return report.conclude(finding.exit_code, finding.detail, finding.advice)
    notify_params = odoo_db_params(config)
    try:
        report.db_host = check_db_host(notify_params)
    except psycopg2.Error as error:
        return report.conclude(
            _failure_code(diagnose_connection_error(error, route)[0]),
            f"db_host {describe_endpoint(notify_params)} fails: {first_line(error)}",
            "check db_host, db_port, db_user, db_password and db_sslmode",
        )
    function = notify_function(environ)
    try:
        report.round_trip = check_route(route, notify_params, function)
    except psycopg2.errors.UndefinedFunction as error:
        return report.conclude(
            MISCONFIGURED,
            f"ODOO_NOTIFY_FUNCTION = {function}: {first_line(error)}",
            "unset ODOO_NOTIFY_FUNCTION, or create that function on the "
            "databases Odoo notifies",
        )
    except psycopg2.Error as error:
        return _route_fails(report, error, route, "the listener route fails")
    _judge(report, route, notify_params, function)
    return check_hazards(report, config, route, function, environ)


def check_hazards(report, config, route, function, environ=None):
    """Findings beyond the round trip; the worst decides an OK verdict."""
    try:
        cron_redirected = route.configured and cron_redirect_enabled(config, environ)
        findings = find_hazards(config, route, cron_redirected)
    except (psycopg2.Error, OptionError, ValueError) as error:
        detail = f"the further checks could not run: {first_line(error)}"
        findings = [Finding("hazards", OK, detail)]
    if function != DEFAULT_NOTIFY_FUNCTION:
        detail = (
            f"ODOO_NOTIFY_FUNCTION = {function}: Odoo sends its bus and cron "
            f"NOTIFY through {function}(), and so did this check's round trip"
        )
        findings.insert(0, Finding("ODOO_NOTIFY_FUNCTION", OK, detail))
    report.findings = [dataclasses.asdict(finding) for finding in findings]
    worst = max(findings, key=lambda finding: finding.exit_code)
    if report.exit_code == OK and worst.exit_code != OK:
        report.conclude(worst.exit_code, worst.detail, worst.advice)
    return report


def bus_databases(config):
    """The databases named by db_name (none: Odoo serves any)."""
    value = config.get("db_name")
    if value in UNSET_VALUES:
        return []
    if isinstance(value, str):  # 19.0 parses it into a list already
        value = value.split(",")
    return [name.strip() for name in value if name and name.strip()]


def poll_database(params):
    """Two polls as the dispatcher does them: where to start, then new rows."""
    tracker = BusTracker(name=params["dbname"])
    with contextlib.closing(connect_autocommit(params)) as conn, conn.cursor() as cr:
        tracker.poll(cr)
        tracker.poll(cr)
    return {"ok": True, "last_id": tracker.max_seen}


def check_polling(report, config, interval, why):
    """Poll mode works when each database answers the poll through db_host."""
    report.mode.update(active="poll", why=why)
    params = odoo_db_params(config)
    databases = bus_databases(config)
    report.poll = {
        "route": describe_endpoint(params),
        "interval_ms": interval,
        "databases": {},
    }
    for name in databases or [BUS_DATABASE]:
        try:
            if databases:
                result = poll_database({**params, "dbname": name})
            else:
                route_facts({**params, "dbname": name})
                result = {"ok": True, "last_id": None}
        except psycopg2.Error as error:
            report.poll["databases"][name] = {"ok": False, "error": first_line(error)}
            return _poll_failure(report, config, params, name, error)
        report.poll["databases"][name] = result
    if not report.server_wide["loaded"]:
        return report.conclude(
            MISCONFIGURED,
            f"imdispatcher_mode polls only when {ADDON} is loaded",
            f"add {ADDON} to server_wide_modules",
        )
    checked = "db_host answers (db_name is not set, so no database was polled)"
    if databases:
        checked = f"databases {', '.join(databases)} answer the poll"
    return report.conclude(
        OK,
        f"the bus will work by polling bus.bus every {interval} ms through "
        f"db_host {describe_endpoint(params)}: {checked}",
        ""
        if report.mode["configured"] == "poll"
        else f"to get LISTEN back, {DIRECT_ROUTE_HINT}",
    )


def _poll_failure(report, config, params, name, error):
    if isinstance(error, psycopg2.errors.UndefinedTable):
        return report.conclude(
            MISCONFIGURED,
            f"database {name} has no bus_bus table",
            "install the bus module in it, or remove it from db_name",
        )
    try:
        options = diagnose_connection_error(
            error, resolve_route({o: config.get(o) for o in ODOO_DB_OPTIONS}, {})
        )[0]
    except OptionError:
        options = ()
    return report.conclude(
        _failure_code(options),
        f"db_host {describe_endpoint(params)} fails for database {name}: "
        f"{first_line(error)}",
        "check db_host, db_port, db_user, db_password, db_sslmode and db_name",
    )


def _failure_code(options):
    """Unreachable when only host and port are at fault (refused, timeout,
    unknown host); a misconfiguration otherwise (password, user, database,
    sslmode, a standby)."""
    unreachable = options and set(options) <= {"host", "port"}
    return UNREACHABLE if unreachable else MISCONFIGURED


def _route_fails(report, error, route, verdict):
    options, reason = diagnose_connection_error(error, route)
    return report.conclude(_failure_code(options), verdict, reason)


def _judge(report, route, notify_params, function):
    if not report.round_trip["received"]:
        custom = function != DEFAULT_NOTIFY_FUNCTION
        if custom and check_route(route, notify_params)["received"]:
            return report.conclude(
                MISCONFIGURED,
                f"the listener hears pg_notify() but not ODOO_NOTIFY_FUNCTION = "
                f"{function}(), which Odoo sends its NOTIFY with",
                f"unset ODOO_NOTIFY_FUNCTION, or make {function}() call "
                "pg_notify() with its arguments",
            )
        try:
            explanation = deafness_explanation(
                route_facts(listener_params(route)), route_facts(notify_params)
            )
        except psycopg2.Error as error:
            return report.conclude(
                UNREACHABLE,
                f"the listener route {route.describe()} hears nothing Odoo "
                f"sends, and then failed: {first_line(error)}",
                "run the check again; if it persists, check that both routes "
                "stay reachable",
            )
        return report.conclude(
            MISCONFIGURED,
            f"the listener route {route.describe()} hears nothing Odoo sends",
            explanation,
        )
    if not report.server_wide["loaded"] and report.db_host["pooler"]:
        return report.conclude(
            MISCONFIGURED,
            f"db_host is a transaction-mode pooler and {ADDON} is not loaded",
            f"add {ADDON} to server_wide_modules",
        )
    return report.conclude(
        OK,
        f"the bus will work: the listener on {route.describe()} hears what "
        f"Odoo sends in {report.round_trip['ms']} ms",
    )
