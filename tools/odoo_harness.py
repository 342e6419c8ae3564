"""Run a real Odoo server from a pristine source tree, for tests and the demo.

The tree comes from ``ODOO_PATH`` and its interpreter from ``ODOO_PYTHON``;
nothing of Odoo is copied into this project.
"""

import contextlib
import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

from .addon_for_series import copy_for_series
from .pg_sandbox import LOOPBACK, ODOO_PASSWORD, ODOO_USER, free_port

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADDON_NAME = "bus_alt_connection"
MANIFEST_SERIES = "18.0"


class OdooHarnessError(RuntimeError):
    pass


def odoo_from_environment():
    """(odoo_path, odoo_python) from the environment, or None when not set."""
    odoo_path = os.environ.get("ODOO_PATH")
    if not odoo_path:
        return None
    odoo_python = os.environ.get("ODOO_PYTHON") or sys.executable
    if not os.path.exists(os.path.join(odoo_path, "odoo-bin")):
        raise OdooHarnessError(f"ODOO_PATH={odoo_path} has no odoo-bin")
    return odoo_path, odoo_python


def odoo_series(odoo_path):
    """'18.0' for an Odoo 18.0 tree, read from odoo/release.py."""
    with open(os.path.join(odoo_path, "odoo", "release.py")) as handle:
        text = handle.read()
    match = re.search(r"version_info\s*=\s*\((\d+),\s*(\d+)", text)
    return f"{match.group(1)}.{match.group(2)}"


def bus_websocket_version(odoo_path):
    """The ``?version=`` a 17.0+ websocket must send, or None (16.0)."""
    with open(os.path.join(odoo_path, "addons", "bus", "websocket.py")) as handle:
        match = re.search(r'_VERSION\s*=\s*"([^"]+)"', handle.read())
    return match.group(1) if match else None


class OdooConfig:
    """An Odoo server's configuration on loopback: its tree, ports, options
    and config file; its ``db_*`` route is ``db_params``."""

    def __init__(
        self,
        odoo_path,
        odoo_python,
        workdir,
        dbname,
        db_params,
        listener_params=None,
        with_addon=True,
        workers=0,
        extra_options=None,
        addon_on_path=True,
        environ=None,
        more_addons=(),
    ):
        """:param more_addons: (folder, module) of other server-wide addons,
        loaded after this one"""
        self.odoo_path = odoo_path
        self.odoo_python = odoo_python
        self.workdir = workdir
        self.dbname = dbname
        self.db_params = db_params
        self.listener_params = listener_params
        self.with_addon = with_addon
        self.workers = workers
        self.extra_options = extra_options or {}
        self.addon_on_path = addon_on_path
        #: the Odoo processes' environment, over this one's
        self.environ = {**os.environ, **(environ or {})}
        self.more_addons = list(more_addons)
        self.http_port = free_port()
        self.gevent_port = free_port()
        self.config_path = os.path.join(workdir, "odoo.conf")
        self.logfile = os.path.join(workdir, "odoo.log")
        self.process = None

    # configuration -------------------------------------------------------

    @functools.cached_property
    def addon_dir(self):
        """The folder holding the addon, as an operator of this series has it.

        Copied once per server (every write of the config asks for it).
        """
        series = odoo_series(self.odoo_path)
        if series == MANIFEST_SERIES:
            return REPO_ROOT
        target = os.path.join(self.workdir, "addons")
        os.makedirs(self.workdir, exist_ok=True)
        copy_for_series(series, target)
        return target

    def options(self):
        modules = ["base", "web"] + ([ADDON_NAME] if self.with_addon else [])
        modules += [module for _folder, module in self.more_addons]
        options = {
            "addons_path": ",".join(
                [f"{self.odoo_path}/addons"]
                + ([self.addon_dir] if self.addon_on_path else [])
                + [folder for folder, _module in self.more_addons]
            ),
            "data_dir": os.path.join(self.workdir, "data"),
            "db_host": self.db_params["host"],
            "db_port": self.db_params["port"],
            "db_user": self.db_params.get("user", ODOO_USER),
            "db_password": self.db_params.get("password", ODOO_PASSWORD),
            "db_name": self.dbname,
            "dbfilter": f"^{self.dbname}$",
            "list_db": "False",
            "http_interface": LOOPBACK,
            "http_port": self.http_port,
            "gevent_port": self.gevent_port,
            "workers": self.workers,
            "max_cron_threads": 0,
            "server_wide_modules": ",".join(modules),
            "logfile": self.logfile,
            "log_level": "info",
        }
        for key, value in (self.listener_params or {}).items():
            options[f"imdispatcher_db_{key}"] = value
        options.update(self.extra_options)
        return options

    def write_config(self):
        os.makedirs(self.workdir, exist_ok=True)
        with open(self.config_path, "w") as handle:
            handle.write("[options]\n")
            handle.writelines(
                f"{key} = {value}\n" for key, value in self.options().items()
            )

    def odoo_bin(self, *args):
        return [self.odoo_python, os.path.join(self.odoo_path, "odoo-bin"), *args]

    def shell_argv(self, logname):
        """``odoo-bin shell`` on this server's config; runs its stdin."""
        return self.odoo_bin(
            "shell",
            "-c",
            self.config_path,
            "-d",
            self.dbname,
            "--no-http",
            "--logfile",
            os.path.join(self.workdir, logname),
        )


class OdooProcess(OdooConfig):
    """Runs Odoo on that configuration, and reads its log."""

    def init_database(self, modules="bus", test_tags=None, timeout=600):
        """Create the database with ``modules`` installed, then stop.

        With ``test_tags``, Odoo's test runner runs those tests too.
        """
        self.write_config()
        tests = ["--test-enable", "--test-tags", test_tags] if test_tags else []
        result = subprocess.run(
            self.odoo_bin(
                "-c",
                self.config_path,
                "-d",
                self.dbname,
                "-i",
                modules,
                "--stop-after-init",
                "--without-demo=all",
                "--no-http",
                "--logfile",
                os.path.join(self.workdir, "init.log"),
                *tests,
            ),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise OdooHarnessError(
                f"database init failed ({result.returncode}); see "
                f"{self.workdir}/init.log\n{result.stderr[-2000:]}"
            )

    def start(self, timeout=120):
        self.write_config()
        self.process = subprocess.Popen(
            self.odoo_bin("-c", self.config_path),
            env=self.environ,
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.workdir, "stderr.log"), "w"),
            start_new_session=True,
        )
        self.wait_for_http(self.http_port, timeout)
        if self.workers:
            self.wait_for_http(self.gevent_port, timeout)
        return self

    def wait_for_http(self, port, timeout):
        deadline = time.monotonic() + timeout
        url = f"http://{LOOPBACK}:{port}/web/health"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise OdooHarnessError(
                    f"Odoo exited with {self.process.returncode}; the end of "
                    f"{self.logfile}:\n{self.log_text()[-3000:]}\nstderr:\n"
                    f"{self._stderr_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise OdooHarnessError(f"Odoo did not answer on port {port} in {timeout} s")

    def http_status(self, path="/web/health"):
        url = f"http://{LOOPBACK}:{self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    def stop(self):
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass
        self.process = None

    def pids(self):
        """The server's processes: its session (master and prefork workers)."""
        if self.process is None:
            return []
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    if os.getsid(int(entry)) == self.process.pid:
                        pids.append(int(entry))
        return pids

    def log_text(self):
        try:
            with open(self.logfile, errors="replace") as handle:
                return handle.read()
        except FileNotFoundError:
            return ""

    def _stderr_text(self):
        with open(os.path.join(self.workdir, "stderr.log"), errors="replace") as f:
            return f.read()

    def wait_for_log(self, pattern, timeout=30, start=0):
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            if regex.search(self.log_text(), start):
                return True
            time.sleep(0.2)
        return False


class OdooServer(OdooProcess):
    """A running Odoo, and its bus: websockets and notifications."""

    def websocket_url(self):
        port = self.gevent_port if self.workers else self.http_port
        url = f"ws://{LOOPBACK}:{port}/websocket"
        version = bus_websocket_version(self.odoo_path)
        return f"{url}?version={version}" if version else url

    def send_notifications(
        self, channel, count, notification_type="bus_alt_test", pause=0
    ):
        """Send ``count`` bus notifications from another Odoo process.

        Each one is its own transaction, so core sends one NOTIFY per
        notification, through ``db_host`` like any Odoo process would;
        ``pause`` seconds apart.
        """
        script = (
            "import time\n"
            "for n in range(%d):\n"
            "    env['bus.bus']._sendone(%r, %r, {'n': n})\n"
            "    env.cr.commit()\n"
            "    time.sleep(%r)\n" % (count, channel, notification_type, pause)
        )
        self.run_shell(script, f"shell-{notification_type}.log")

    def run_shell(self, script, logname="shell.log"):
        """Run ``script`` in ``odoo-bin shell`` on this server; its stdout."""
        result = subprocess.run(
            self.shell_argv(logname),
            input=script,
            capture_output=True,
            text=True,
            timeout=300,
            env=self.environ,
        )
        if result.returncode != 0:
            raise OdooHarnessError(f"odoo shell failed: {result.stderr[-2000:]}")
        return result.stdout


def create_bus_database(odoo, postgres, workdir, dbname):
    """Create ``dbname`` with ``bus`` installed; return ``dbname``.

    The database the real-Odoo tests, the benchmarks and the demo start
    from: made by core Odoo alone (no addon), on PostgreSQL itself rather
    than through PgBouncer. About a minute.

    :param odoo: (odoo_path, odoo_python), as ``odoo_from_environment`` gives
    :param postgres: the sandbox's PostgreSQL
    :param workdir: a folder for the init's config and log
    """
    server = OdooServer(
        *odoo, workdir, dbname, postgres.odoo_params(), with_addon=False
    )
    server.init_database()
    return dbname


class BusClient:
    """A websocket subscribed to one bus channel, counting what arrives.

    Like Odoo's own bus worker in the browser, it reconnects when the server
    closes the websocket (Odoo does when a database error hits it) and
    subscribes again with the id of the last notification it received.
    """

    def __init__(self, url, channel, timeout=60):
        self.url = url
        self.channel = channel
        self.timeout = timeout
        self.last_id = 0
        self.reconnects = 0
        self.connection = None
        self._connect()

    def _connect(self):
        import websocket  # websocket-client

        self.connection = websocket.create_connection(self.url, timeout=self.timeout)
        subscribe = {"channels": [self.channel], "last": self.last_id}
        self.connection.send(json.dumps({"event_name": "subscribe", "data": subscribe}))

    def _reconnect(self, deadline):
        self.reconnects += 1
        while time.monotonic() < deadline:
            try:
                self._connect()
                return True
            except Exception:  # refused, or a handshake error: retry
                time.sleep(0.5)
        return False

    def receive(self, notification_type, expected, timeout):
        """Payloads of ``notification_type`` received within ``timeout`` s."""
        import websocket

        received = []
        deadline = time.monotonic() + timeout
        while len(received) < expected and time.monotonic() < deadline:
            self.connection.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                # control frames too: Odoo pings an idle websocket every 45 s,
                # and recv() would wait on past the deadline for data
                opcode, data = self.connection.recv_data(control_frame=True)
            except websocket.WebSocketTimeoutException:
                break
            except websocket.WebSocketConnectionClosedException:
                if not self._reconnect(deadline):
                    break
                continue
            if opcode != websocket.ABNF.OPCODE_TEXT:
                continue  # a ping (answered), a pong, or the close: recv again
            frame = data.decode()
            for notification in json.loads(frame) if frame else []:
                self.last_id = max(self.last_id, notification.get("id", 0))
                message = notification.get("message", {})
                if message.get("type") == notification_type:
                    received.append(message.get("payload"))
        return received

    def close(self):
        self.connection.close()
