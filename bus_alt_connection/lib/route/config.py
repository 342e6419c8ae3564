"""The addon's options: the listener routes and the Settings, read once.

Each value read is an ``OptionValue`` that says where it came from. ``config``
maps Odoo's options (``odoo.tools.config`` or a dict)."""

import dataclasses
import logging
import math
import os
import re
import types

_logger = logging.getLogger(__name__)

#: Core's ``ImDispatch.loop`` listens on this database, and core's NOTIFY
#: (``bus.bus._sendone``/``_sendmany``) goes to this same database.
BUS_DATABASE = "postgres"

OPTION_PREFIX = "imdispatcher_"
ROUTE_PREFIX = OPTION_PREFIX + "db_"

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
TARGET_SESSION_ATTRS = ("any", "read-write", "read-only", "primary", "standby")
TARGET_SESSION_ATTRS += ("prefer-standby",)
UNSET_VALUES = (None, False, "", "False", "false")


class OptionError(ValueError):
    """An option's value that cannot work; the message names it and what to do."""

    def __init__(self, option, value, source, problem, hint, secret=False):
        self.option = option
        self.value = shown(value, secret)
        super().__init__(f"{option} = {self.value!r} ({source}) {problem}; {hint}")


def shown(value, secret):
    """The value as logs and reports may show it: a secret as set/unset."""
    if not secret:
        return value
    return "(set)" if value not in UNSET_VALUES else None


@dataclasses.dataclass(frozen=True)
class OptionValue:
    value: object
    source: str  #: its origin, for logs and reports ("config imdispatcher_db_host")
    secret: bool = False  #: a password: never in repr() or str()
    #: the prefix of the option (or its env) that set it ("imdispatcher_db_",
    #: "cron_db_"); "" for a default or Odoo's own option
    given: str = ""

    def __repr__(self):
        return (
            f"OptionValue(value={shown(self.value, self.secret)!r}, "
            f"source={self.source!r})"
        )


# A parser returns the value, or raises ValueError(problem[, hint]); the
# hint may name "{option}"; by default it gives the option's default.
_ASCII_WHOLE = re.compile(r"[0-9]+")
_ASCII_DECIMAL = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+")


def _parse_hosts(text):
    """Host names, each trimmed: libpq would try ``" pg2"`` as a name."""
    hosts = [part.strip() for part in str(text).split(",")]
    if len(hosts) > 1 and not all(hosts):
        raise ValueError(
            "has an empty item in its list",
            "set {option} to host names separated by commas, e.g. pg1,pg2",
        )
    return ",".join(hosts)


def _parse_ports(text):
    ports = [part.strip() for part in str(text).split(",")]
    if not all(
        _ASCII_WHOLE.fullmatch(port) and 0 < int(port) < 65536 for port in ports
    ):
        raise ValueError(
            "is not a TCP port number",
            "set {option} to the port of a direct PostgreSQL route, e.g. 5432"
            " (a comma-separated list when imdispatcher_db_host lists hosts)",
        )
    return ",".join(ports)


def _parse_choice(choices, example):
    def parse(text):
        text = str(text).strip()
        if text not in choices:
            raise ValueError(
                "is not one of " + ", ".join(choices),
                f"set {{option}} to one of them, e.g. {example}",
            )
        return text

    return parse


def _number(text, pattern):
    """A finite number written with ASCII digits (``pattern``), or None."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        value = float(text)
    elif pattern.fullmatch(str(text).strip()):
        value = float(str(text).strip())
    else:
        return None
    return value if math.isfinite(value) else None


def _seconds(low, high, off=False):
    def parse(text):
        seconds = _number(text, _ASCII_DECIMAL)
        if seconds is None:
            raise ValueError("is not a number of seconds")
        if seconds == 0 and not off:
            raise ValueError("must be more than 0 seconds")
        if seconds and not low <= seconds <= high:
            switch = " (0 switches it off)" if off else ""
            raise ValueError(f"is outside {low:g} to {high:g} seconds{switch}")
        return seconds

    return parse


def _whole(what, low, high):
    def parse(text):
        number = _number(text, _ASCII_WHOLE)
        if number is None or number != int(number) or number <= 0:
            raise ValueError(f"is not a positive whole {what}")
        if not low <= number <= high:
            raise ValueError(f"is outside {low} to {high}")
        return int(number)

    return parse


def _parse_switch(text):
    value = text if isinstance(text, bool) else str(text).strip().lower()
    if value in (True, "1", "true", "yes", "on"):
        return True
    if value in (False, "0", "false", "no", "off"):
        return False
    raise ValueError("is not a boolean", "set {option} to True or False")


@dataclasses.dataclass(frozen=True)
class Option:
    """One option: its name in Odoo's config, its environment variables,
    and what stands when it is not set."""

    name: str
    #: "imdispatcher_db_" (the listener route), "cron_db_", "imdispatcher_"
    prefix: str = ROUTE_PREFIX
    fallback: str | None = None  #: Odoo's option, used when ours is unset: core's way
    default: object = None
    parse: object = None  #: None: the value as given
    secret: bool = False
    unset: tuple = UNSET_VALUES  #: the values that mean "not set"

    @property
    def option(self):
        return self.prefix + self.name

    @property
    def envs(self):
        """``ODOO_<OPTION>``, then the upstream README's spelling, if any."""
        env = self.option.upper()
        legacy = (env,) if self.prefix.startswith(OPTION_PREFIX) else ()
        return ("ODOO_" + env, *legacy)

    def lookup(self, config, environ, inherited=None):
        """The OptionValue, by precedence: environment (default os.environ),
        config, ``inherited`` (the cron route's: the bus route's value), Odoo's
        option, default; OptionError for a value that cannot work."""
        environ = os.environ if environ is None else environ
        for env in self.envs:
            if environ.get(env, "") != "":
                if env != self.envs[0]:
                    _logger.warning(
                        "Environment variable %s is read for compatibility; "
                        "rename it to %s, the name bus_alt_connection documents.",
                        env,
                        self.envs[0],
                    )
                return self._parsed(environ[env], f"env {env}", given=True)
        value = config.get(self.option)
        if value not in self.unset:
            return self._parsed(value, f"config {self.option}", given=True)
        if inherited is not None:
            return inherited
        value = config.get(self.fallback) if self.fallback else None
        if value not in UNSET_VALUES:
            return self._parsed(value, f"fallback to config {self.fallback}")
        if self.default is not None:
            return OptionValue(self.default, "default")
        return OptionValue(None, "unset (libpq default)")

    def _parsed(self, raw, source, given=False):
        try:
            value = self.parse(raw) if self.parse else raw
        except ValueError as error:
            problem, hint = (*error.args, None)[:2]
        else:
            return OptionValue(value, source, self.secret, self.prefix if given else "")
        default = self.default
        example = f"{default:g}" if isinstance(default, float) else default
        hint = (hint or f"set {{option}} to e.g. {example}").format(option=self.option)
        raise OptionError(self.option, raw, source, problem, hint, self.secret)


ROUTE_OPTIONS = (
    Option("host", fallback="db_host", parse=_parse_hosts),
    Option("port", fallback="db_port", parse=_parse_ports),
    Option("user", fallback="db_user"),
    Option("password", fallback="db_password", secret=True),
    Option("sslmode", fallback="db_sslmode", parse=_parse_choice(SSL_MODES, "prefer")),
    Option("name", default=BUS_DATABASE),
    Option(
        "target_session_attrs", parse=_parse_choice(TARGET_SESSION_ATTRS, "read-write")
    ),
)
CRON_PREFIX = "cron_db_"
#: the cron runners' route: each value not set falls back to the bus route's
CRON_ROUTE_OPTIONS = tuple(
    dataclasses.replace(option, prefix=CRON_PREFIX, fallback=None, default=None)
    for option in ROUTE_OPTIONS
)
CRON_REDIRECT = Option(
    "cron_trigger_redirect",
    prefix="",
    default=True,
    parse=_parse_switch,
    unset=(None, ""),
)

#: LISTEN on the route (core's way); read new bus.bus rows through db_host;
#: listen, and poll while the route fails its checks (``lib/listener/bus.py``)
MODES = ("listen", "poll", "auto")


def _setting(name, default, parse):
    return Option(name, prefix=OPTION_PREFIX, default=default, parse=parse)


#: How the listener behaves, apart from where it connects.
SETTING_OPTIONS = (
    _setting("mode", "listen", _parse_choice(MODES, "auto")),
    _setting("poll_interval", 250, _whole("number of milliseconds", 10, 60_000)),
    _setting("heartbeat_interval", 30.0, _seconds(1, 86400, off=True)),
    _setting("selfcheck_timeout", 5.0, _seconds(0.1, 600)),
    _setting("reconnect_max_delay", 30.0, _seconds(0.1, 3600)),
    #: auto mode: failed connects, or failed checks, in a row before polling
    _setting("auto_failed_checks", 3, _whole("number", 1, 100)),
    #: auto mode: while polling, how often the listener route is tried again
    _setting("listen_retry_interval", 300.0, _seconds(1, 86400)),
)


@dataclasses.dataclass(frozen=True)
class Settings:
    """How the listeners behave, read once (``read_settings``), passed whole."""

    mode: str = "listen"
    poll_interval: float = 0.25  #: seconds between polls (the option is in ms)
    heartbeat_interval: float = 30.0  #: seconds between heartbeats; 0: none
    selfcheck_timeout: float = 5.0
    reconnect_max_delay: float = 30.0
    auto_failed_checks: int = 3
    listen_retry_interval: float = 300.0
    #: {name: OptionValue}: each value as given, and where it came from
    values: dict = dataclasses.field(default_factory=dict, compare=False)
    refused: tuple = ()  #: an OptionError per refused value (its default stands)

    def log_refused(self, logger):
        for error in self.refused:
            logger.error(
                "bus_alt_connection: %s; using its default (%s) meanwhile, the "
                "other options stand.",
                error,
                self.values[error.option.removeprefix(OPTION_PREFIX)].value,
            )


def read_settings(config, environ=None):
    """The Settings; a value that cannot work falls back alone to its
    default, and is in ``refused``."""
    values, refused = {}, []
    for option in SETTING_OPTIONS:
        try:
            values[option.name] = option.lookup(config, environ)
        except OptionError as error:
            refused.append(error)
            values[option.name] = OptionValue(
                option.default, f"default ({option.option} refused)"
            )
    plain = {name: value.value for name, value in values.items()}
    plain["poll_interval"] /= 1000
    values = types.MappingProxyType(values)
    return Settings(**plain, values=values, refused=tuple(refused))


class ConnectParams(dict):
    """libpq keywords, the password included, but not in repr() or str()."""

    def __repr__(self):
        return repr(
            {key: shown(value, key == "password") for key, value in self.items()}
        )


@dataclasses.dataclass(frozen=True)
class ListenerRoute:
    """The resolved route, with where each value came from."""

    values: dict  #: {name: OptionValue}
    option_prefix: str = ROUTE_PREFIX  #: how messages spell this route's options

    @property
    def configured(self):
        """An option (or env) of this addon set a value, ours or the bus's."""
        return any(value.given for value in self.values.values())

    @property
    def own(self):
        """A value set under this route's own prefix (``cron_db_*``)."""
        return any(v.given == self.option_prefix for v in self.values.values())

    def __getattr__(self, name):
        try:
            return self.values[name].value
        except KeyError:
            raise AttributeError(name) from None

    def source(self, name):
        return self.values[name].source

    def libpq_params(self):
        """Connection keywords for psycopg2/libpq (password included)."""
        # "database", as odoo.sql_db spells it: psycopg2's alias of "dbname"
        return ConnectParams(
            ("database" if name == "name" else name, route_value.value)
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
            name: {"value": shown(value.value, value.secret), "source": value.source}
            for name, value in self.values.items()
        }


#: what an operator does to get LISTEN on a direct route
DIRECT_ROUTE_HINT = (
    "point imdispatcher_db_host/imdispatcher_db_port at PostgreSQL itself or "
    "at a session-mode pool of database 'postgres'"
)
#: Odoo's own connection options (its ``db_host`` route)
ODOO_DB_OPTIONS = ("db_host", "db_port", "db_user", "db_password", "db_sslmode")


def odoo_db_params(config):
    """libpq keywords of Odoo's own route, to the bus database."""
    params = {"dbname": BUS_DATABASE, "connect_timeout": 10}
    for name in ODOO_DB_OPTIONS:
        if config.get(name) not in UNSET_VALUES:
            params[name.removeprefix("db_")] = config.get(name)
    return params


def describe_endpoint(params):
    """``host:port`` of libpq keywords, for log lines and reports."""
    return f"{params.get('host') or '(local socket)'}:{params.get('port') or 5432}"


def resolve_route(config, environ=None):
    """The bus listener's route; OptionError for the first value that cannot work."""
    values = {option.name: option.lookup(config, environ) for option in ROUTE_OPTIONS}
    return _checked(ListenerRoute(values=values))


def resolve_cron_route(config, environ=None):
    """The route of core's ``LISTEN cron_trigger`` connections: each value
    ``ODOO_CRON_DB_<NAME>``, ``cron_db_<name>``, or the bus route's."""
    bus = resolve_route(config, environ)
    values = {
        option.name: option.lookup(config, environ, inherited=bus.values[option.name])
        for option in CRON_ROUTE_OPTIONS
    }
    return _checked(ListenerRoute(values=values, option_prefix=CRON_PREFIX))


def _checked(route):
    """libpq takes one port for all hosts, or one port per host."""
    if route.host and route.port:
        host_count, port_count = route.host.count(",") + 1, route.port.count(",") + 1
        if port_count not in (1, host_count):
            raise OptionError(
                route.option_prefix + "port",
                route.port,
                route.source("port"),
                f"lists {port_count} ports for {host_count} hosts",
                "give one port for all hosts, or one port per host in the same order",
            )
    return route


def cron_redirect_enabled(config, environ=None):
    """False when ``cron_trigger_redirect`` (or its env) switches it off."""
    return CRON_REDIRECT.lookup(config, environ).value
