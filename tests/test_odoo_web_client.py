"""Odoo's own web client, in a browser, across a listener reconnect.

The bus exists for the web client: its shared worker holds the websocket,
reconnects by itself and keeps the id of the last notification. Here a
headless Chromium (Debian's ``chromium``, driven by Playwright) logs in to
a real Odoo behind the transaction-mode PgBouncer with the addon loaded, and
sees, as a person would, the toast of a notification that another Odoo
process sent. Then the listener's PostgreSQL connection is killed; once the
addon says the listener is back and its self-check passed, a second
notification must show its toast in the same page, never reloaded.

17.0+ send ``simple_notification`` to the admin's partner; 16.0, whose bus
shows no such toast (mail does, and is not installed), sends the
``bundle_changed`` that bus's assets watchdog shows as "The page appears to
be out of date." Threaded, the browser talks to the server's HTTP port;
prefork, to ``tools/odoo_front.py``, the routing part of an operator's proxy.

Needs ODOO_PATH and ODOO_PYTHON (skipped otherwise, like every real-Odoo
test); with them, a missing Chromium or Playwright is a failure
(``tools/setup.sh`` installs both).
"""

import contextlib
import os
import re
import time
import uuid

import pytest

from tools.odoo_front import OdooFront
from tools.odoo_harness import odoo_series
from tools.pg_sandbox import LOOPBACK

from .test_odoo_bus_dispatcher import LISTENING, direct_route, errors_in

CHROMIUM = "/usr/bin/chromium"
# as root, on a machine without a network but loopback
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN_LOGIN = ADMIN_PASSWORD = "admin"  # what -i base gives a new database
# the CPU is shared: waits are generous, and no test asserts a duration
PAGE_TIMEOUT = 180
TOAST_TIMEOUT = 90
RECONNECT_TIMEOUT = 90
# prefork workers must not be killed while they build the asset bundles
SLOW_CPU = {"limit_time_cpu": 600, "limit_time_real": 1200}
SELF_CHECK_PASSED = r"bus listener self-check passed"
BUS_LOGGERS = " odoo.addons.bus"  # bus's, and the addon's below it
BACK_ON = r"bus listener back on"


@pytest.fixture
def browser(odoo_tree, tmp_path):
    """A headless Chromium with a fresh profile; fails when none is installed."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run tools/setup.sh (Debian's chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "playwright is missing: run tools/setup.sh (tests/requirements.txt)"
        )
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
        )
        context.set_default_timeout(PAGE_TIMEOUT * 1000)
        try:
            yield context
        finally:
            with contextlib.suppress(Exception):
                for page in context.pages:
                    page.screenshot(path=str(tmp_path / "last-page.png"))
            context.close()


@pytest.fixture
def web_front():
    """A prefork server's reverse proxy: /websocket to gevent_port."""
    fronts = []

    def start(server):
        front = OdooFront(server.http_port, server.gevent_port).start()
        fronts.append(front)
        return front

    yield start
    for front in fronts:
        front.stop()


class SimpleNotificationToast:
    """17.0+: ``simple_notification`` on the user's partner channel, shown
    by bus's simple_notification service as a toast with its message."""

    def send(self, server, label):
        message = f"bus_alt_connection {label} {uuid.uuid4().hex[:12]}"
        server.run_shell(
            "env['bus.bus']._sendone(env.ref('base.partner_admin'), "
            "'simple_notification', {'title': 'bus_alt_connection', "
            f"'message': {message!r}, 'sticky': True, 'type': 'info'}})\n"
            "env.cr.commit()\n",
            f"shell-toast-{label}.log",
        )
        return message

    def toasts(self, page, message):
        return page.locator(".o_notification", has_text=message)

    def expect(self, page, message):
        self.toasts(page, message).wait_for(
            state="visible", timeout=TOAST_TIMEOUT * 1000
        )

    def dismiss(self, page, message):
        """Close the (sticky) toast, as its reader would."""
        self.toasts(page, message).locator(".o_notification_close").click()
        self.toasts(page, message).wait_for(state="detached")


class BundleChangedToast:
    """16.0, whose bus alone shows no ``simple_notification``: bus's assets
    watchdog shows "The page appears to be out of date." for a
    ``bundle_changed`` on the broadcast channel naming another server
    version, 10 to 60 s later (a random delay against herds), and shows it
    again once the user closed it."""

    TEXT = "The page appears to be out of date."

    def send(self, server, label):
        server.run_shell(
            "env['bus.bus']._sendone('broadcast', 'bundle_changed', "
            f"{{'server_version': 'bus_alt_connection-{label}'}})\n"
            "env.cr.commit()\n",
            f"shell-toast-{label}.log",
        )
        return self.TEXT

    def toasts(self, page, message):
        return page.locator(".o_notification", has_text=message)

    def expect(self, page, message):
        # up to 60 s of the watchdog's own delay, on top of the delivery
        self.toasts(page, message).wait_for(
            state="visible", timeout=(TOAST_TIMEOUT + 60) * 1000
        )

    def dismiss(self, page, message):
        """Close it: the watchdog shows no second one while it is open."""
        self.toasts(page, message).locator(".o_notification_close").click()
        self.toasts(page, message).wait_for(state="detached")


def toast_kind(odoo_path):
    return (
        BundleChangedToast()
        if odoo_series(odoo_path) == "16.0"
        else SimpleNotificationToast()
    )


def log_in(page, base_url):
    page.goto(f"{base_url}/web/login?login={ADMIN_LOGIN}")
    form = page.locator("form.oe_login_form")
    form.locator("input[name=login]").fill(ADMIN_LOGIN)
    form.locator("input[name=password]").fill(ADMIN_PASSWORD)
    form.locator(".oe_login_buttons button.btn-primary[type=submit]").click()
    # the web client is mounted: its services, the bus among them, started
    page.locator(".o_main_navbar").wait_for(state="visible")
    page.wait_for_load_state("load")


def log_position(server, pattern, start, timeout):
    """Where ``pattern`` first appears in the log at or after ``start``;
    None if it does not within ``timeout`` s."""
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = regex.search(server.log_text(), start)
        if match:
            return match.end()
        time.sleep(0.5)
    return None


def addon_lines(server, start):
    """The addon's log lines from ``start`` on: what a failed wait shows."""
    lines = server.log_text()[start:].splitlines()
    return "\n".join(line for line in lines if "bus_alt_connection:" in line)


def forget_asset_bundles(sandbox, dbname):
    """Drop the database's built asset bundles, so that this server builds
    its own: each harness server has a data_dir (filestore) of its own, and
    a bundle built by an earlier server is a missing file to this one (the
    web client stays a blank page)."""
    sandbox.postgres.execute(
        "DELETE FROM ir_attachment WHERE url LIKE '/web/assets/%%'", dbname=dbname
    )


def forget_notifications(sandbox, dbname):
    """Empty the bus: a new page subscribes with ``last`` 0, which returns
    what the last 50 s sent on its channels, so an earlier test's
    notifications would show as toasts here (16.0's all read alike)."""
    sandbox.postgres.execute("DELETE FROM bus_bus", dbname=dbname)


def terminate_listener(sandbox):
    """pg_terminate_backend of the bus listener's connection to 'postgres'."""
    return sandbox.postgres.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = 'postgres' "
        "AND application_name LIKE 'odoo-bus-listener-%'"
    )


@pytest.mark.parametrize("workers", [2, 0], ids=["prefork", "threaded"])
def test_toasts_before_and_after_the_listener_reconnects(
    sandbox,
    odoo_server,
    odoo_tree,
    odoo_database,
    browser,
    web_front,
    workers,
    tmp_path,
):
    forget_asset_bundles(sandbox, odoo_database)
    forget_notifications(sandbox, odoo_database)
    server = odoo_server(
        listener_params=direct_route(sandbox), workers=workers, extra_options=SLOW_CPU
    )
    port = web_front(server).port if workers else server.http_port
    toast = toast_kind(odoo_tree[0])
    page = browser.new_page()
    loads = []
    page.on("load", lambda _page: loads.append(page.url))

    log_in(page, f"http://{LOOPBACK}:{port}")
    page.evaluate("window.busAltConnectionMark = 'never reloaded'")
    loads_after_login = len(loads)
    assert server.wait_for_log(LISTENING, timeout=60), "dispatcher never started"

    first = toast.send(server, "before")
    toast.expect(page, first)
    page.screenshot(path=str(tmp_path / "first-toast.png"))
    toast.dismiss(page, first)

    assert server.wait_for_log(SELF_CHECK_PASSED, timeout=60)
    mark = len(server.log_text())
    assert terminate_listener(sandbox) == [(True,)]
    back = log_position(server, BACK_ON, mark, RECONNECT_TIMEOUT)
    assert back is not None, addon_lines(server, mark)
    assert log_position(
        server, SELF_CHECK_PASSED, back, RECONNECT_TIMEOUT
    ), addon_lines(server, mark)

    second = toast.send(server, "after")
    toast.expect(page, second)
    page.screenshot(path=str(tmp_path / "second-toast.png"))
    assert page.evaluate("window.busAltConnectionMark") == "never reloaded"
    assert len(loads) == loads_after_login
    # the bus's and the addon's ERRORs only: a browser's burst of requests
    # meets faults of its own on a threaded server (CPython 3.11.7's
    # "AST constructor recursion depth mismatch" when two threads parse a
    # manifest at once), and a Traceback alone is none (a server with a
    # data_dir of its own logs at INFO a FileNotFoundError for each file of
    # the database's filestore that the web client reads)
    errors = [line for line in errors_in(server.log_text()) if BUS_LOGGERS in line]
    assert errors == []
