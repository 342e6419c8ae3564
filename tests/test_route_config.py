"""Route resolution: config, environment, precedence, fallback, bad values."""

import logging

import pytest

from bus_alt_connection.lib.route.config import (
    BUS_DATABASE,
    OptionError,
    cron_redirect_enabled,
    read_settings,
    resolve_cron_route,
    resolve_route,
)
from bus_alt_connection.lib.route.connection import listener_params

ODOO_CONFIG = {
    "db_host": "pgbouncer.internal",
    "db_port": 6432,
    "db_user": "odoo",
    "db_password": "pooled-secret",
    "db_sslmode": "prefer",
}


def config(**options):
    return {**ODOO_CONFIG, **options}


def test_nothing_set_falls_back_to_odoo_db_options():
    route = resolve_route(config(), environ={})
    assert not route.configured
    assert (route.host, route.port, route.user) == (
        "pgbouncer.internal",
        "6432",
        "odoo",
    )
    assert route.password == "pooled-secret"
    assert route.name == BUS_DATABASE
    assert route.source("host") == "fallback to config db_host"
    assert route.source("name") == "default"


def test_config_options_win_over_db_options():
    route = resolve_route(
        config(
            imdispatcher_db_host="pg-primary.internal",
            imdispatcher_db_port="5432",
            imdispatcher_db_user="listener",
            imdispatcher_db_password="direct-secret",
            imdispatcher_db_sslmode="require",
            imdispatcher_db_name="postgres_listen",
        ),
        environ={},
    )
    assert route.configured
    assert route.libpq_params() == {
        "host": "pg-primary.internal",
        "port": "5432",
        "user": "listener",
        "password": "direct-secret",
        "sslmode": "require",
        "database": "postgres_listen",
    }
    assert route.source("port") == "config imdispatcher_db_port"


def test_environment_wins_over_config():
    route = resolve_route(
        config(imdispatcher_db_host="from-config"),
        environ={
            "ODOO_IMDISPATCHER_DB_HOST": "from-env",
            "ODOO_IMDISPATCHER_DB_PORT": "5433",
        },
    )
    assert (route.host, route.port) == ("from-env", "5433")
    assert route.source("host") == "env ODOO_IMDISPATCHER_DB_HOST"
    assert route.configured


def test_legacy_environment_spelling_is_read_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        route = resolve_route(config(), environ={"IMDISPATCHER_DB_HOST": "legacy"})
    assert route.host == "legacy"
    assert route.source("host") == "env IMDISPATCHER_DB_HOST"
    assert "ODOO_IMDISPATCHER_DB_HOST" in caplog.text


def test_canonical_environment_spelling_wins_over_legacy(caplog):
    route = resolve_route(
        config(),
        environ={"IMDISPATCHER_DB_PORT": "1111", "ODOO_IMDISPATCHER_DB_PORT": "2222"},
    )
    assert route.port == "2222"
    assert "IMDISPATCHER_DB_PORT" not in caplog.text


@pytest.mark.parametrize("unset", ["", False, "False", None])
def test_odoo_unset_values_count_as_unset(unset):
    route = resolve_route(config(imdispatcher_db_host=unset, db_host=unset), environ={})
    assert route.host is None
    assert "host" not in route.libpq_params()
    assert not route.configured


def test_empty_environment_value_is_ignored():
    route = resolve_route(
        config(imdispatcher_db_host="from-config"),
        environ={"ODOO_IMDISPATCHER_DB_HOST": ""},
    )
    assert route.host == "from-config"


def resolve_settings(config, environ):
    settings = read_settings(config, environ)
    assert settings.refused == ()
    return {name: value.value for name, value in settings.values.items()}


def refusals(config, environ=None):
    """({name: value as given}, [message of each refused value])."""
    settings = read_settings(config, environ or {})
    values = {name: value.value for name, value in settings.values.items()}
    return values, [str(error) for error in settings.refused]


def test_heartbeat_zero_means_off():
    assert resolve_settings({"imdispatcher_heartbeat_interval": "0"}, {}) == {
        **resolve_settings({}, {}),
        "heartbeat_interval": 0.0,
    }


@pytest.mark.parametrize(
    "option, value, expected_words",
    [
        ("imdispatcher_db_port", "abc", "not a TCP port number"),
        ("imdispatcher_db_port", "0", "not a TCP port number"),
        ("imdispatcher_db_port", "70000", "not a TCP port number"),
        ("imdispatcher_db_port", "5432,x", "not a TCP port number"),
        ("imdispatcher_db_sslmode", "sometimes", "is not one of disable"),
        ("imdispatcher_db_target_session_attrs", "writable", "is not one of any"),
    ],
)
def test_bad_value_names_option_value_and_source(option, value, expected_words):
    with pytest.raises(OptionError) as raised:
        resolve_route(config(**{option: value}), environ={})
    message = str(raised.value)
    assert message.startswith(f"{option} = {value!r} (config {option})")
    assert expected_words in message
    assert raised.value.option == option


def test_bad_environment_value_names_the_variable():
    with pytest.raises(OptionError) as raised:
        resolve_route(config(), environ={"ODOO_IMDISPATCHER_DB_PORT": "abc"})
    assert "(env ODOO_IMDISPATCHER_DB_PORT)" in str(raised.value)


def test_bad_fallback_value_names_the_odoo_option():
    with pytest.raises(OptionError) as raised:
        resolve_route(config(db_sslmode="bogus"), environ={})
    assert "fallback to config db_sslmode" in str(raised.value)


def test_host_list_with_matching_ports_for_failover():
    route = resolve_route(
        config(
            imdispatcher_db_host="pg-a,pg-b",
            imdispatcher_db_port="5432, 5433",
            imdispatcher_db_target_session_attrs="read-write",
        ),
        environ={},
    )
    params = route.libpq_params()
    assert (params["host"], params["port"]) == ("pg-a,pg-b", "5432,5433")
    assert params["target_session_attrs"] == "read-write"


def test_port_list_must_match_host_list():
    with pytest.raises(OptionError) as raised:
        resolve_route(
            config(imdispatcher_db_host="a,b", imdispatcher_db_port="1,2,3"),
            environ={},
        )
    assert "lists 3 ports for 2 hosts" in str(raised.value)


def test_password_never_in_descriptions():
    route = resolve_route(config(imdispatcher_db_password="direct-secret"), environ={})
    assert "direct-secret" not in route.describe()
    assert "direct-secret" not in repr(route.public_dict())
    assert route.public_dict()["password"]["value"] == "(set)"


def test_listener_params_add_timeouts_keepalives_and_name():
    route = resolve_route(config(imdispatcher_db_host="pg"), environ={})
    params = listener_params(route)
    assert params["host"] == "pg"
    assert params["keepalives"] == 1
    assert params["connect_timeout"] > 0
    assert params["application_name"].startswith("odoo-bus-listener-")


def test_cron_route_follows_the_bus_route_by_default():
    cron = resolve_cron_route(
        config(imdispatcher_db_host="pg-primary", imdispatcher_db_port="5432"),
        environ={},
    )
    assert (cron.host, cron.port) == ("pg-primary", "5432")
    assert cron.source("host") == "config imdispatcher_db_host"
    assert cron.source("user") == "fallback to config db_user"
    assert cron.configured


def test_cron_options_override_the_bus_route_env_first():
    cron = resolve_cron_route(
        config(
            imdispatcher_db_host="pg-primary",
            cron_db_host="pg-cron",
            cron_db_port="5433",
        ),
        environ={"ODOO_CRON_DB_PORT": "5434", "ODOO_IMDISPATCHER_DB_PORT": "5999"},
    )
    assert (cron.host, cron.port) == ("pg-cron", "5434")
    assert cron.source("host") == "config cron_db_host"
    assert cron.source("port") == "env ODOO_CRON_DB_PORT"
    assert cron.option_prefix == "cron_db_"


def test_cron_route_bad_value_names_the_cron_option():
    with pytest.raises(OptionError, match=r"cron_db_port = 'abc' \(config"):
        resolve_cron_route(config(cron_db_port="abc"), environ={})
    with pytest.raises(OptionError, match="cron_db_port"):
        resolve_cron_route(config(cron_db_host="a,b,c", cron_db_port="1,2"), environ={})


@pytest.mark.parametrize(
    "options, environ, expected",
    [
        ({}, {}, True),
        ({"cron_trigger_redirect": "False"}, {}, False),
        ({"cron_trigger_redirect": False}, {}, False),
        ({"cron_trigger_redirect": "True"}, {"ODOO_CRON_TRIGGER_REDIRECT": "0"}, False),
        (
            {"cron_trigger_redirect": "False"},
            {"ODOO_CRON_TRIGGER_REDIRECT": "on"},
            True,
        ),
    ],
)
def test_cron_redirect_switch(options, environ, expected):
    assert cron_redirect_enabled(config(**options), environ) is expected


def test_cron_redirect_switch_rejects_nonsense():
    with pytest.raises(OptionError, match="cron_trigger_redirect = 'maybe'"):
        cron_redirect_enabled(config(cron_trigger_redirect="maybe"), {})


def test_mode_and_poll_interval_defaults():
    settings = resolve_settings({}, environ={})
    assert (settings["mode"], settings["poll_interval"]) == ("listen", 250)


def test_mode_and_poll_interval_from_config_and_environment():
    settings = read_settings(
        {"imdispatcher_mode": "poll", "imdispatcher_poll_interval": "100"},
        environ={"ODOO_IMDISPATCHER_MODE": "auto"},
    )
    values = settings.values
    assert (values["mode"].value, values["mode"].source) == (
        "auto",
        "env ODOO_IMDISPATCHER_MODE",
    )
    assert values["poll_interval"].value == 100
    assert (settings.mode, settings.poll_interval) == ("auto", 0.1), "in seconds"


@pytest.mark.parametrize(
    "option, value, expected_words",
    [
        ("imdispatcher_mode", "polling", "is not one of listen, poll, auto"),
        ("imdispatcher_poll_interval", "0", "positive whole number of milliseconds"),
        ("imdispatcher_poll_interval", "0.5", "positive whole number of milliseconds"),
        ("imdispatcher_poll_interval", "-250", "positive whole number of milliseconds"),
        ("imdispatcher_reconnect_max_delay", "0", "more than 0 seconds"),
        ("imdispatcher_selfcheck_timeout", "0", "more than 0 seconds"),
        ("imdispatcher_selfcheck_timeout", "-1", "is not a number of seconds"),
        ("imdispatcher_heartbeat_interval", "-1", "is not a number of seconds"),
        ("imdispatcher_auto_failed_checks", "0", "is not a positive whole number"),
        ("imdispatcher_listen_retry_interval", "0", "more than 0 seconds"),
    ],
)
def test_bad_mode_or_interval_names_the_option(option, value, expected_words):
    settings, refused = refusals({option: value})
    assert len(refused) == 1
    message = refused[0]
    assert message.startswith(f"{option} = {value!r} (config {option})")
    assert expected_words in message
    assert f"set {option} to" in message
    name = option.removeprefix("imdispatcher_")
    assert settings[name] == resolve_settings({}, {})[name], "the default"


def test_one_bad_setting_falls_back_alone():
    """A typo in one option must not reset imdispatcher_mode = poll."""
    settings = read_settings(
        {
            "imdispatcher_mode": "poll",
            "imdispatcher_poll_interval": "100",
            "imdispatcher_reconnect_max_delay": "3O",
        },
        environ={},
    )
    values = settings.values
    assert [e.option for e in settings.refused] == ["imdispatcher_reconnect_max_delay"]
    assert (values["mode"].value, values["poll_interval"].value) == ("poll", 100)
    assert values["reconnect_max_delay"].value == 30.0
    assert values["reconnect_max_delay"].source == (
        "default (imdispatcher_reconnect_max_delay refused)"
    )


def test_every_bad_setting_is_refused_on_its_own():
    settings, refused = refusals(
        {
            "imdispatcher_heartbeat_interval": "nan",
            "imdispatcher_selfcheck_timeout": "inf",
            "imdispatcher_mode": "auto",
        }
    )
    assert len(refused) == 2
    assert settings["mode"] == "auto"
    assert (settings["heartbeat_interval"], settings["selfcheck_timeout"]) == (
        30.0,
        5.0,
    )


@pytest.mark.parametrize(
    "option, value",
    [
        ("imdispatcher_heartbeat_interval", "nan"),
        ("imdispatcher_heartbeat_interval", "NaN"),
        ("imdispatcher_heartbeat_interval", "inf"),
        ("imdispatcher_heartbeat_interval", "0.001"),
        ("imdispatcher_selfcheck_timeout", "nan"),
        ("imdispatcher_selfcheck_timeout", "-inf"),
        ("imdispatcher_selfcheck_timeout", "1e400"),
        ("imdispatcher_reconnect_max_delay", "infinity"),
        ("imdispatcher_reconnect_max_delay", "1e9"),
        ("imdispatcher_listen_retry_interval", "inf"),
        ("imdispatcher_listen_retry_interval", "\uff13\uff10"),  # full-width 30
        ("imdispatcher_heartbeat_interval", "1_0"),
        ("imdispatcher_poll_interval", "\uff11\uff10\uff10"),  # full-width 100
        ("imdispatcher_poll_interval", "\u00b2"),  # superscript two
        ("imdispatcher_poll_interval", "1e3"),
        ("imdispatcher_poll_interval", "5"),
        ("imdispatcher_poll_interval", "99999999"),
        ("imdispatcher_auto_failed_checks", "nan"),
        ("imdispatcher_auto_failed_checks", "\u0663"),  # Arabic-Indic three
        ("imdispatcher_auto_failed_checks", "1000000"),
    ],
)
def test_numbers_must_be_finite_ascii_and_in_range(option, value):
    settings, refused = refusals({option: value})
    assert len(refused) == 1, refused
    assert refused[0].startswith(f"{option} = {value!r}")
    name = option.removeprefix("imdispatcher_")
    assert settings[name] == resolve_settings({}, {})[name]


@pytest.mark.parametrize(
    "option, value, expected",
    [
        ("imdispatcher_heartbeat_interval", " 12.5 ", 12.5),
        ("imdispatcher_heartbeat_interval", "0", 0.0),
        ("imdispatcher_selfcheck_timeout", "0.5", 0.5),
        ("imdispatcher_reconnect_max_delay", 10, 10.0),
        ("imdispatcher_poll_interval", " 100 ", 100),
        ("imdispatcher_auto_failed_checks", "5", 5),
    ],
)
def test_sane_numbers_are_taken(option, value, expected):
    assert (
        resolve_settings({option: value}, {})[option.removeprefix("imdispatcher_")]
        == expected
    )


@pytest.mark.parametrize(
    "port", ["\u00b2", "\uff15\uff14\uff13\uff12", "5432,\u0665", "+5432"]
)
def test_port_takes_ascii_digits_only(port):
    """``str.isdigit`` says yes to these; libpq and int() do not."""
    with pytest.raises(OptionError) as raised:
        resolve_route(config(imdispatcher_db_port=port), environ={})
    assert str(raised.value).startswith(f"imdispatcher_db_port = {port!r}")
    assert "not a TCP port number" in str(raised.value)


def test_host_list_items_are_trimmed():
    route = resolve_route(
        config(imdispatcher_db_host="pg1, pg2 ", imdispatcher_db_port="5432, 5433"),
        environ={},
    )
    assert route.libpq_params()["host"] == "pg1,pg2"
    assert route.libpq_params()["port"] == "5432,5433"


def test_host_list_with_an_empty_item_is_refused():
    with pytest.raises(OptionError, match="imdispatcher_db_host = 'pg1,,pg2'"):
        resolve_route(config(imdispatcher_db_host="pg1,,pg2"), environ={})


def test_cron_host_list_items_are_trimmed():
    route = resolve_cron_route(config(cron_db_host=" pg1 ,pg2"), environ={})
    assert route.host == "pg1,pg2"
