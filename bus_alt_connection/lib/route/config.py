"""Where the bus listener connects: the ``imdispatcher_db_*`` route.

Plain Python (no Odoo import), so the check command and the test-suite can
use it without an Odoo server. ``resolve_route`` reads a mapping that behaves
like ``odoo.tools.config`` and an environment mapping.
"""

import dataclasses
import logging
import math
import os
import re

_logger = logging.getLogger(__name__)

#: Core's ``ImDispatch.loop`` listens on this database, and core's NOTIFY
#: (``bus.bus._sendone``/``_sendmany``) goes to this same database.
BUS_DATABASE = "postgres"

OPTION_PREFIX = "imdispatcher_"
ENV_PREFIX = "ODOO_IMDISPATCHER_"
#: The spelling the upstream README documents; accepted with a warning.
LEGACY_ENV_PREFIX = "IMDISPATCHER_"

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
TARGET_SESSION_ATTRS = (
    "any",
    "read-write",
    "read-only",
    "primary",
    "standby",
    "prefer-standby",
)
UNSET_VALUES = (None, False, "", "False", "false")


class RouteConfigError(ValueError):
    """An ``imdispatcher_db_*`` value that cannot work; the message says which."""

    def __init__(self, option, value, source, problem, hint, secret=False):
        self.option = option
        self.value = shown(value, secret)
        self.source = source
        super().__init__(
            f"{option} = {self.value!r} ({source}) {problem}; {hint}",
        )


SECRET_SHOWN_AS = "(set)"


def shown(value, secret):
    """The value as logs and reports may show it: a secret as set/unset."""
    if not secret:
        return value
    return SECRET_SHOWN_AS if value not in UNSET_VALUES else None


@dataclasses.dataclass(frozen=True)
class RouteValue:
    value: object
    source: str
    #: a password: never in repr() or str()
    secret: bool = False

    def __repr__(self):
        return (
            f"RouteValue(value={shown(self.value, self.secret)!r}, "
            f"source={self.source!r})"
        )

    __str__ = __repr__


def _parse_text(name, text, source):
    return text


def _refuse(name, text, source, problem, hint=None):
    return RouteConfigError(
        name, text, source, problem, hint or f"set {name} to e.g. {_example(name)}"
    )


def _example(name):
    default = SETTING_DEFAULTS.get(name)
    return f"{default:g}" if isinstance(default, float) else default


def _parse_hosts(name, text, source):
    """Host names, each trimmed: libpq would try ``" pg2"`` as a name."""
    hosts = [part.strip() for part in str(text).split(",")]
    if len(hosts) > 1 and not all(hosts):
        raise _refuse(
            name,
            text,
            source,
            "has an empty item in its list",
            f"set {name} to host names separated by commas, e.g. pg1,pg2",
        )
    return ",".join(hosts)


_ASCII_WHOLE = re.compile(r"[0-9]+")
_ASCII_DECIMAL = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+")


def _parse_ports(name, text, source):
    ports = [part.strip() for part in str(text).split(",")]
    for port in ports:
        if not _ASCII_WHOLE.fullmatch(port) or not 0 < int(port) < 65536:
            raise _refuse(
                name,
                text,
                source,
                "is not a TCP port number",
                f"set {name} to the port of a direct PostgreSQL route, e.g. 5432"
                " (a comma-separated list when imdispatcher_db_host lists hosts)",
            )
    return ",".join(ports)


def _parse_choice(choices, example):
    def parse(name, text, source):
        value = str(text).strip()
        if value not in choices:
            raise _refuse(
                name,
                text,
                source,
                "is not one of " + ", ".join(choices),
                f"set {name} to one of them, e.g. {example}",
            )
        return value

    return parse


def _number(text, pattern):
    """A finite number written with ASCII digits (``pattern``), or None."""
    if isinstance(text, bool):
        return None
    if isinstance(text, int | float):
        value = float(text)
    elif pattern.fullmatch(str(text).strip()):
        value = float(str(text).strip())
    else:
        return None
    return value if math.isfinite(value) else None


def _seconds(low, high, off=False):
    """A parser of seconds from ``low`` to ``high``; 0 too when ``off``."""

    def parse(name, text, source):
        seconds = _number(text, _ASCII_DECIMAL)
        if seconds is None:
            raise _refuse(name, text, source, "is not a number of seconds")
        if off and seconds == 0:
            return 0.0
        if seconds == 0:
            raise _refuse(name, text, source, "must be more than 0 seconds")
        if not low <= seconds <= high:
            raise _refuse(
                name,
                text,
                source,
                f"is outside {low:g} to {high:g} seconds"
                + (" (0 switches it off)" if off else ""),
            )
        return seconds

    return parse


def _whole(what, low, high):
    """A parser of whole numbers from ``low`` to ``high``."""

    def parse(name, text, source):
        number = _number(text, _ASCII_WHOLE)
        if number is None or number != int(number) or number <= 0:
            raise _refuse(name, text, source, f"is not a positive whole {what}")
        if not low <= number <= high:
            raise _refuse(name, text, source, f"is outside {low} to {high}")
        return int(number)

    return parse


_parse_milliseconds = _whole("number of milliseconds", 10, 60_000)
_parse_count = _whole("number", 1, 100)


def _parse_switch(name, text, source):
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise _refuse(
        name, text, source, "is not a boolean", f"set {name} to True or False"
    )


@dataclasses.dataclass(frozen=True)
class RouteOption:
    """One ``imdispatcher_db_<name>`` option (or ``imdispatcher_<name>``)."""

    name: str
    #: Odoo's own option used when ours is not set (core's behaviour).
    fallback: str | None = None
    default: object = None
    parse: object = _parse_text
    secret: bool = False
    group: str = "db_"

    @property
    def option(self):
        return OPTION_PREFIX + self.group + self.name

    @property
    def env(self):
        return ENV_PREFIX + (self.group + self.name).upper()

    @property
    def legacy_env(self):
        return LEGACY_ENV_PREFIX + (self.group + self.name).upper()


ROUTE_OPTIONS = (
    RouteOption("host", fallback="db_host", parse=_parse_hosts),
    RouteOption("port", fallback="db_port", parse=_parse_ports),
    RouteOption("user", fallback="db_user"),
    RouteOption("password", fallback="db_password", secret=True),
    RouteOption(
        "sslmode",
        fallback="db_sslmode",
        parse=_parse_choice(SSL_MODES, "prefer"),
    ),
    RouteOption("name", default=BUS_DATABASE),
    RouteOption(
        "target_session_attrs",
        parse=_parse_choice(TARGET_SESSION_ATTRS, "read-write"),
    ),
)

#: ``listen``: LISTEN on the imdispatcher_db_* route (core's way);
#: ``poll``: read new bus.bus rows through db_host, no direct route;
#: ``auto``: listen; poll while the route fails its checks, and try it
#: again every ``imdispatcher_listen_retry_interval`` seconds.
MODES = ("listen", "poll", "auto")

#: How the listener behaves, apart from where it connects.
SETTING_OPTIONS = (
    RouteOption("mode", default="listen", parse=_parse_choice(MODES, "auto"), group=""),
    RouteOption("poll_interval", default=250, parse=_parse_milliseconds, group=""),
    RouteOption(
        "heartbeat_interval", default=30.0, parse=_seconds(1, 86400, off=True), group=""
    ),
    RouteOption("selfcheck_timeout", default=5.0, parse=_seconds(0.1, 600), group=""),
    RouteOption(
        "reconnect_max_delay", default=30.0, parse=_seconds(0.1, 3600), group=""
    ),
    #: auto mode: failed checks in a row before polling
    RouteOption("auto_failed_checks", default=3, parse=_parse_count, group=""),
    #: auto mode: while polling, how often the listener route is tried again
    RouteOption(
        "listen_retry_interval",
        default=300.0,
        parse=_seconds(1, 86400),
        group="",
    ),
)
SETTING_DEFAULTS = {option.option: option.default for option in SETTING_OPTIONS}

#: psycopg2 keyword for each option, where it differs from the name
#: ("database", as odoo.sql_db spells it, is psycopg2's alias of "dbname").
LIBPQ_KEYWORDS = {"name": "database"}


class ConnectParams(dict):
    """libpq keywords, the password included, but not in repr() or str()."""

    def __repr__(self):
        return repr(
            {key: shown(value, key == "password") for key, value in self.items()}
        )

    __str__ = __repr__


@dataclasses.dataclass(frozen=True)
class ListenerRoute:
    """The resolved route, with where each value came from."""

    values: dict
    #: True when at least one ``imdispatcher_db_*`` value was given.
    configured: bool
    #: How the operator spells this route's options, for messages.
    option_prefix: str = OPTION_PREFIX + "db_"

    def __getattr__(self, name):
        try:
            return self.values[name].value
        except KeyError:
            raise AttributeError(name) from None

    def source(self, name):
        return self.values[name].source

    def libpq_params(self):
        """Connection keywords for psycopg2/libpq (password included)."""
        return ConnectParams(
            (LIBPQ_KEYWORDS.get(name, name), route_value.value)
            for name, route_value in self.values.items()
            if route_value.value not in UNSET_VALUES
        )

    def describe(self):
        """``host:port/database as user`` without the password, for logs."""
        host = self.host or "(libpq default socket)"
        port = self.port or "5432"
        user = self.user or "(libpq default user)"
        text = f"{host}:{port}/{self.name} as {user}"
        if self.sslmode:
            text += f" sslmode={self.sslmode}"
        if self.target_session_attrs:
            text += f" target_session_attrs={self.target_session_attrs}"
        return text

    def public_dict(self):
        """Values and sources for reports; the password only as set/unset."""
        return {
            name: {
                "value": shown(route_value.value, route_value.secret),
                "source": route_value.source,
            }
            for name, route_value in self.values.items()
        }


def _lookup(option, config, environ):
    """Return (raw value, source) of one option, by precedence."""
    if environ.get(option.env, "") != "":
        return environ[option.env], f"env {option.env}"
    if environ.get(option.legacy_env, "") != "":
        _logger.warning(
            "Environment variable %s is read for compatibility; "
            "rename it to %s, the name bus_alt_connection documents.",
            option.legacy_env,
            option.env,
        )
        return environ[option.legacy_env], f"env {option.legacy_env}"
    value = config.get(option.option)
    if value not in UNSET_VALUES:
        return value, f"config {option.option}"
    if option.fallback:
        value = config.get(option.fallback)
        if value not in UNSET_VALUES:
            return value, f"fallback to config {option.fallback}"
    if option.default is not None:
        return option.default, "default"
    return None, "unset (libpq default)"


#: what an operator does to get LISTEN on a direct route
DIRECT_ROUTE_HINT = (
    "point imdispatcher_db_host/imdispatcher_db_port at PostgreSQL itself or "
    "at a session-mode pool of database 'postgres'"
)
#: Odoo's own connection options (its ``db_host`` route)
ODOO_DB_OPTIONS = ("db_host", "db_port", "db_user", "db_password", "db_sslmode")


def odoo_db_options(config):
    """Odoo's own ``db_*`` options (``config`` may be Odoo's configmanager)."""
    return {name: config.get(name) for name in ODOO_DB_OPTIONS}


def odoo_db_params(config):
    """libpq keywords of Odoo's own route, to the bus database."""
    params = {"dbname": BUS_DATABASE, "connect_timeout": 10}
    for name, value in odoo_db_options(config).items():
        if value not in UNSET_VALUES:
            params[name.removeprefix("db_")] = value
    return params


def describe_endpoint(params):
    """``host:port`` of libpq keywords, for log lines and reports."""
    return "{}:{}".format(
        params.get("host") or "(local socket)", params.get("port") or 5432
    )


def resolve_route(config, environ=None):
    """Build the listener route from Odoo's config and the environment.

    :param config: a mapping with ``get`` (``odoo.tools.config`` or a dict)
    :param environ: defaults to ``os.environ``
    :raises RouteConfigError: on the first value that cannot work
    """
    environ = os.environ if environ is None else environ
    values = _resolve(ROUTE_OPTIONS, config, environ)
    configured = any(
        route_value.source.startswith(("env", "config imdispatcher"))
        for route_value in values.values()
    )
    _check_one_port_per_host(values, "imdispatcher_db_port")
    return ListenerRoute(values=values, configured=configured)


def resolve_setting_values(config, environ=None):
    """Mode, poll interval (ms), and heartbeat interval, self-check timeout
    and reconnect cap (seconds), with where each value came from.

    A value that cannot work falls back alone to its default; the others
    stand. Returns ({name: RouteValue}, [RouteConfigError of each refusal]).
    """
    environ = os.environ if environ is None else environ
    values, refused = {}, []
    for option in SETTING_OPTIONS:
        try:
            values.update(_resolve((option,), config, environ))
        except RouteConfigError as error:
            refused.append(error)
            values[option.name] = RouteValue(
                option.default, f"default ({option.option} refused)"
            )
    return values, refused


def _resolve(options, config, environ):
    values = {}
    for option in options:
        raw, source = _lookup(option, config, environ)
        value = raw
        if raw not in UNSET_VALUES:
            value = option.parse(option.option, raw, source)
        values[option.name] = RouteValue(value, source, option.secret)
    return values


def _check_one_port_per_host(values, port_option):
    """libpq takes one port for all hosts, or one port per host."""
    hosts, ports = values["host"].value, values["port"].value
    if not hosts or not ports:
        return
    host_count, port_count = len(hosts.split(",")), len(ports.split(","))
    if port_count not in (1, host_count):
        raise RouteConfigError(
            port_option,
            ports,
            values["port"].source,
            f"lists {port_count} ports for {host_count} hosts",
            "give one port for all hosts, or one port per host in the same order",
        )


CRON_OPTION_PREFIX = "cron_db_"
CRON_ENV_PREFIX = "ODOO_CRON_DB_"


def resolve_cron_route(config, environ=None):
    """The route of core's ``LISTEN cron_trigger`` connections.

    Each value: ``ODOO_CRON_DB_<NAME>``, then ``cron_db_<name>``, then the
    bus listener's route (so by default cron triggers follow the bus).

    :raises RouteConfigError: on the first value that cannot work
    """
    environ = os.environ if environ is None else environ
    bus_values = _resolve(ROUTE_OPTIONS, config, environ)
    values = {}
    for option in ROUTE_OPTIONS:
        name = CRON_OPTION_PREFIX + option.name
        env = CRON_ENV_PREFIX + option.name.upper()
        if environ.get(env, "") != "":
            raw, source = environ[env], f"env {env}"
        elif config.get(name) not in UNSET_VALUES:
            raw, source = config.get(name), f"config {name}"
        else:
            values[option.name] = bus_values[option.name]
            continue
        values[option.name] = RouteValue(
            option.parse(name, raw, source), source, option.secret
        )
    configured = any(
        route_value.source.startswith(("env", "config imdispatcher", "config cron"))
        for route_value in values.values()
    )
    _check_one_port_per_host(values, CRON_OPTION_PREFIX + "port")
    return ListenerRoute(
        values=values, configured=configured, option_prefix=CRON_OPTION_PREFIX
    )


def cron_redirect_enabled(config, environ=None):
    """False when ``cron_trigger_redirect`` (or its env) switches it off."""
    environ = os.environ if environ is None else environ
    env = "ODOO_CRON_TRIGGER_REDIRECT"
    if environ.get(env, "") != "":
        raw, source = environ[env], f"env {env}"
    else:
        raw, source = config.get("cron_trigger_redirect"), "config"
        if raw in (None, ""):
            return True
    return _parse_switch("cron_trigger_redirect", raw, source)
