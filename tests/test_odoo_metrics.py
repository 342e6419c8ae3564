"""/bus_alt_connection/metrics through a running Odoo (ODOO_PATH, ODOO_PYTHON).

Read with prometheus_client's parser, threaded and prefork, by an allowed
address and by an administrator; everyone else gets 403, and no request
starts a listener. Behind a reverse proxy, the client is judged, not the
proxy.
"""

import time
import urllib.error
import urllib.request

import pytest

from tools.pg_sandbox import LOOPBACK

from .test_odoo_bus_dispatcher import direct_route
from .test_odoo_health import (
    admin_opener,
    get,
    listener_backends,
    plain_user_opener,
    websocket,
)
from .test_status_metrics import samples

METRICS = "/bus_alt_connection/metrics"


def scrape(port, opener=None):
    status, body = get(port, METRICS, opener)
    assert status == 200, (status, body[:500])
    return samples(body)


def value(got, name, **labels):
    """The sample's value; None when there is no such sample."""
    return got.get((f"bus_alt_connection_{name}", frozenset(labels.items())))


def scrape_until(port, predicate, opener=None, timeout=60):
    """The first scrape for which ``predicate(samples)`` is true."""
    deadline = time.monotonic() + timeout
    while True:
        got = scrape(port, opener)
        if predicate(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


@pytest.mark.every_series
@pytest.mark.parametrize("workers", [0, 2], ids=["threaded", "prefork"])
def test_an_allowed_address_scrapes_every_process(sandbox, odoo_server, workers):
    server = odoo_server(
        listener_params=direct_route(sandbox),
        workers=workers,
        extra_options={
            "bus_alt_connection_metrics_allow": "127.0.0.0/8",
            "max_cron_threads": 1,
        },
    )
    dispatcher_port = server.gevent_port if workers else server.http_port
    for _ in range(5):
        got = scrape(dispatcher_port)
    assert value(got, "dispatcher_process") == 1
    assert value(got, "dispatcher_started") == 0
    assert listener_backends(sandbox, server) == 0, "a scrape started a listener"
    if workers:
        assert value(scrape(server.http_port), "dispatcher_process") == 0
    with websocket(server):
        assert server.wait_for_log(r"bus listener self-check passed", timeout=60)
        # the pass is logged a moment before it is counted
        got = scrape_until(
            dispatcher_port,
            lambda got: value(got, "checks_total", kind="self-check", result="pass"),
        )
        assert value(got, "dispatcher_started") == 1
        assert value(got, "listener_up") == 1
        assert value(got, "checks_total", kind="self-check", result="pass") == 1
        assert value(got, "check_round_trip_seconds") > 0
        assert value(got, "channel_lookups_total") >= 1
        assert listener_backends(sandbox, server) == 1
    if not workers:  # the threaded server's cron thread is in the same process
        assert value(got, "cron_listener_up", runner="cron0") == 1


@pytest.mark.parametrize("workers", [0, 2], ids=["threaded", "prefork"])
def test_others_get_403_and_administrators_may_read(
    sandbox, odoo_server, odoo_database, workers
):
    server = odoo_server(listener_params=direct_route(sandbox), workers=workers)
    for _ in range(5):
        status, body = get(server.http_port, METRICS)
        assert (status, body) == (403, "forbidden\n")
    assert listener_backends(sandbox, server) == 0
    opener = admin_opener(server.http_port, odoo_database)
    got = scrape(server.http_port, opener)
    assert value(got, "dispatcher_process") == (0 if workers else 1)


def test_a_logged_in_user_who_is_not_an_administrator_gets_403(sandbox, odoo_server):
    """A valid session is not enough: only Settings administrators (or the
    allowed addresses) may read the metrics."""
    server = odoo_server(listener_params=direct_route(sandbox))
    opener = plain_user_opener(server)
    assert get(server.http_port, METRICS, opener) == (403, "forbidden\n")
    # the anonymous answer is the same, and an administrator is answered
    assert get(server.http_port, METRICS) == (403, "forbidden\n")
    assert scrape(server.http_port, admin_opener(server.http_port, server.dbname))


def test_a_bad_allow_list_is_one_error(sandbox, odoo_server):
    server = odoo_server(
        listener_params=direct_route(sandbox),
        extra_options={"bus_alt_connection_metrics_allow": "127.0.0.1,localhost"},
    )
    for _ in range(3):
        status, _body = get(server.http_port, METRICS)
        assert status == 403
    errors = [line for line in server.log_text().splitlines() if " ERROR " in line]
    assert len(errors) == 1, errors
    assert "bus_alt_connection_metrics_allow" in errors[0]


INSIDE, OUTSIDE = "10.1.2.3", "203.0.113.9"


def through_proxy(client):
    """What nginx sends Odoo for ``client`` (proxy_set_header ...)."""
    return {
        "X-Forwarded-For": client,
        "X-Forwarded-Host": "odoo.example.com",
        "X-Forwarded-Proto": "https",
    }


def get_with(port, headers, opener=None):
    opener = opener or urllib.request.build_opener()
    url = f"http://{LOOPBACK}:{port}{METRICS}"
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=20) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.mark.parametrize(
    "proxy_mode", [True, False], ids=["proxy_mode", "no_proxy_mode"]
)
@pytest.mark.parametrize("workers", [0, 2], ids=["threaded", "prefork"])
def test_behind_a_proxy_the_client_is_judged(
    sandbox, odoo_server, odoo_database, workers, proxy_mode
):
    """The proxy (here 127.0.0.1) is in the allow list; its clients are not.

    With proxy_mode, Odoo resolves the client from X-Forwarded-For (when the
    proxy sends X-Forwarded-Host) and the allow list judges it; without,
    Odoo cannot know the client: administrators only.
    """
    server = odoo_server(
        listener_params=direct_route(sandbox),
        workers=workers,
        extra_options={
            "bus_alt_connection_metrics_allow": "127.0.0.0/8,10.0.0.0/8",
            "proxy_mode": proxy_mode,
        },
    )
    port = server.gevent_port if workers else server.http_port
    forbidden = (403, "forbidden\n")
    for _ in range(3):  # a monitor scrapes again and again
        assert get_with(port, through_proxy(OUTSIDE)) == forbidden
        other_headers = {
            **through_proxy(OUTSIDE),
            "Forwarded": f"for={INSIDE}",
            "X-Real-IP": INSIDE,
        }
        del other_headers["X-Forwarded-For"]
        assert get_with(port, other_headers) == forbidden
        status, body = get_with(port, through_proxy(INSIDE))
        if proxy_mode:
            assert status == 200, (status, body[:500])
        else:
            assert (status, body) == forbidden
        status, body = get_with(port, {})  # direct, from 127.0.0.1
        assert status == 200, (status, body[:500])
    assert value(samples(body), "dispatcher_started") == 0
    assert listener_backends(sandbox, server) == 0, "a scrape started a listener"
    opener = admin_opener(server.http_port, odoo_database)
    for _ in range(3):
        status, body = get_with(port, through_proxy(OUTSIDE), opener)
        assert status == 200, (status, body[:500])
    assert value(samples(body), "dispatcher_process") == 1
