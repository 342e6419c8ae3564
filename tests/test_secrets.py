"""A password never reaches repr(), str(), an exception message or a log line.

Sentry's local variables, a ``%r`` in a log line and a debugger all show
``repr()``; so the route objects and their connection keywords mask it,
and so do the messages of a real run whose connects fail.
"""

import logging
import time

import psycopg2
import pytest

from bus_alt_connection.lib.listener.bus import BusListener
from bus_alt_connection.lib.listener.cron import TriggerConnection
from bus_alt_connection.lib.route.config import (
    ROUTE_OPTIONS,
    OptionError,
    Settings,
    resolve_cron_route,
    resolve_route,
)
from bus_alt_connection.lib.route.connection import (
    diagnose_connection_error,
    listener_params,
)

SECRET = "pw-that-never-shows-7f3a"


def routes(environ_password=False):
    config = {
        "db_host": "127.0.0.1",
        "db_port": 6432,
        "db_password": SECRET,
        "imdispatcher_db_password": SECRET,
        "cron_db_password": SECRET,
    }
    environ = {"ODOO_IMDISPATCHER_DB_PASSWORD": SECRET} if environ_password else {}
    return resolve_route(config, environ), resolve_cron_route(config, environ)


@pytest.mark.parametrize("environ_password", [False, True], ids=["config", "env"])
def test_route_objects_mask_the_password(environ_password):
    for route in routes(environ_password):
        assert route.password == SECRET  # what libpq gets
        shown = [
            repr(route),
            str(route),
            route.describe(),
            repr(route.public_dict()),
            repr(route.libpq_params()),
            str(route.libpq_params()),
            repr(listener_params(route)),
        ]
        shown += [repr(value) for value in route.values.values()]
        shown += [str(value) for value in route.values.values()]
        for text in shown:
            assert SECRET not in text
        assert "(set)" in repr(route)
        assert listener_params(route)["password"] == SECRET


def test_a_bad_secret_value_is_masked_in_the_error():
    password = next(option for option in ROUTE_OPTIONS if option.secret)
    error = OptionError(
        password.option, SECRET, "config", "is wrong", "fix it", secret=True
    )
    assert SECRET not in str(error)
    assert SECRET not in repr(error)
    assert SECRET not in repr(error.value)


def failed_connect_logs(sandbox, caplog, route):
    """Every log line and exception text of real connects that fail."""
    caplog.set_level(logging.DEBUG, "bus_alt_connection")
    texts = []
    try:
        psycopg2.connect(**listener_params(route))
    except psycopg2.Error as error:
        texts += [str(error), repr(error), diagnose_connection_error(error, route)[1]]

    def core_loop(route, on_listening):
        psycopg2.connect(**listener_params(route))

    stop = type(
        "Stop", (), {"wait": lambda self, t: True, "is_set": lambda self: False}
    )
    listener = BusListener(Settings(), lambda: route, stop())
    for _ in range(3):
        listener.run_once(listen=core_loop, poll=None)
    texts.append(repr(listener.state))
    trigger = TriggerConnection(route, "cron-secret", Settings(reconnect_max_delay=0.1))
    trigger.start()
    trigger.execute("LISTEN cron_trigger")
    for _ in range(300):
        if trigger.state.failed_attempts:
            break
        time.sleep(0.1)
    trigger.close()
    texts.append(repr(vars(trigger)))
    texts += [record.getMessage() for record in caplog.records]
    texts += [caplog.text]
    return texts


def test_failed_connects_never_show_the_password(sandbox, caplog):
    route = resolve_route(
        {
            "imdispatcher_db_host": "127.0.0.1",
            "imdispatcher_db_port": str(sandbox.postgres.port),
            "imdispatcher_db_user": "odoo",
            "imdispatcher_db_password": SECRET,
        },
        environ={},
    )
    texts = failed_connect_logs(sandbox, caplog, route)
    assert any("password authentication failed" in text for text in texts)
    for text in texts:
        assert SECRET not in text
