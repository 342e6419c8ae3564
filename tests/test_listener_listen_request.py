"""One-shot, per-thread requests for core's LISTEN connections, without Odoo."""

import logging
import threading

from bus_alt_connection.lib.listener import listen_request
from bus_alt_connection.lib.listener.listen_request import ListenRequest
from bus_alt_connection.lib.log_once import error_once


def armed(kind="bus", timeout=30.0):
    missed = []
    request = ListenRequest("our route", missed.append, timeout=timeout)
    listen_request.arm(kind, request)
    return request, missed


def test_the_next_bus_database_connection_takes_it_once():
    request, missed = armed()
    assert listen_request.take("bus", "postgres") == "our route"
    assert listen_request.take("bus", "postgres") is None
    assert request.state == "taken"
    assert missed == []


def test_a_connection_to_another_database_first_is_a_miss():
    request, missed = armed()
    assert listen_request.take("bus", "odoo_db") is None
    assert listen_request.take("bus", "postgres") is None
    assert missed == ["its first connection went to database 'odoo_db'"]


def test_no_connection_within_the_timeout_is_a_miss():
    request, missed = armed(timeout=0.1)
    threading.Event().wait(0.5)
    assert missed == ["no connection was asked for within 0.1 s"]
    assert listen_request.take("bus", "postgres") is None
    assert missed == ["no connection was asked for within 0.1 s"]


def test_disarm_reports_a_miss_only_when_told_why():
    _request, missed = armed()
    listen_request.disarm("bus")
    assert missed == []
    _request, missed = armed()
    listen_request.disarm("bus", "core's loop ended")
    assert missed == ["core's loop ended"]


def test_requests_belong_to_their_thread_and_kind():
    request, missed = armed(kind="cron")
    assert listen_request.take("bus", "postgres") is None
    seen = []
    thread = threading.Thread(
        target=lambda: seen.append(listen_request.take("cron", "postgres"))
    )
    thread.start()
    thread.join()
    assert seen == [None]
    assert listen_request.take("cron", "postgres") == "our route"
    assert missed == []


def test_error_once_logs_one_error_per_process(caplog):
    logger = logging.getLogger("bus_alt_connection.test")
    on_missed = error_once(logger, "route not in use (%s)")
    with caplog.at_level(logging.INFO, logger=logger.name):
        on_missed("first")
        on_missed("second")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.ERROR, "route not in use (first)")
    ]
