"""The addon installed in a real Odoo database: its own tests, and the bus.

Needs ODOO_PATH and ODOO_PYTHON; skipped otherwise.
"""

import os
import re
import subprocess
import sys
import time

import pytest

from tools.build_wheels import build_series
from tools.odoo_harness import (
    ADDON_NAME,
    REPO_ROOT,
    OdooServer,
    odoo_series,
)

from .test_odoo_bus_dispatcher import COUNT, delivered, direct_route, errors_in

RESULT = re.compile(r"(\d+) failed, (\d+) error\(s\) of (\d+) tests")


@pytest.fixture(scope="module")
def addon_database(sandbox, odoo_tree, odoo_database, odoo_workdir):
    """A database with bus_alt_connection installed and its tests run."""
    odoo_path, odoo_python = odoo_tree
    server = OdooServer(
        odoo_path,
        odoo_python,
        os.path.join(odoo_workdir, "addon-init"),
        odoo_database + "_addon",
        sandbox.postgres.odoo_params(),
        listener_params=direct_route(sandbox),
    )
    server.init_database(modules=ADDON_NAME, test_tags=f"/{ADDON_NAME}")
    return server


@pytest.mark.every_series
def test_odoo_test_runner_passes_the_addon_tests(addon_database):
    log = open(os.path.join(addon_database.workdir, "init.log")).read()
    results = RESULT.findall(log)
    assert results, "Odoo's test runner printed no result line"
    failed, errors, total = map(int, results[-1])
    assert (failed, errors) == (0, 0), log[-5000:]
    assert total >= 9  # test_bus_dispatcher and test_cron_runner


def test_pytest_odoo_passes_the_addon_tests(addon_database):
    python = addon_database.odoo_python
    # pytest-odoo imports odoo: the pristine tree is not pip-installed
    env = {**os.environ, "PYTHONPATH": addon_database.odoo_path}
    has_plugin = (
        subprocess.run(
            [python, "-c", "import pytest_odoo"], capture_output=True, env=env
        ).returncode
        == 0
    )
    if not has_plugin:
        pytest.skip(f"pytest-odoo is not installed in ODOO_PYTHON ({python})")
    addon_tests = os.path.join(addon_database.addon_dir, ADDON_NAME, "tests")
    result = subprocess.run(
        [
            python,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--odoo-config={addon_database.config_path}",
            f"--odoo-database={addon_database.dbname}",
            addon_tests,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=addon_database.workdir,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"\b[5-9] passed|\b\d\d+ passed", result.stdout)


def test_installed_and_server_wide_delivers(sandbox, odoo_server, addon_database):
    server = odoo_server(listener_params=direct_route(sandbox))
    server.dbname = addon_database.dbname
    server.stop()
    server.start()
    assert len(delivered(server)) == COUNT
    assert errors_in(server.log_text()) == []


@pytest.fixture(scope="module")
def installed_wheel(odoo_tree, tmp_path_factory):
    """The series' wheel (``make wheels``), ``pip install --no-deps``'d into
    a folder that the Odoo processes have on ``sys.path`` (PYTHONPATH), as a
    virtualenv's site-packages is: the tree here is not pip-installed, and
    the shared virtualenv stays as it is. Odoo finds the addon there through
    ``odoo.addons``, with no checkout on addons_path. Returns that folder.
    """
    odoo_path, _python = odoo_tree
    workdir = tmp_path_factory.mktemp("wheel")
    wheel, _metapackage = build_series(odoo_series(odoo_path), str(workdir / "dist"))
    target = workdir / "site-packages"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps"]
        + ["--target", str(target), wheel],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert (target / "odoo" / "addons" / ADDON_NAME / "__manifest__.py").exists()
    return target


def wheel_server(odoo_server, odoo_tree, installed_wheel, **kwargs):
    odoo_path, _python = odoo_tree
    return odoo_server(
        addon_on_path=False,
        extra_options={"addons_path": f"{odoo_path}/addons"},
        environ={"PYTHONPATH": str(installed_wheel)},
        **kwargs,
    )


@pytest.mark.every_series
@pytest.mark.parametrize("workers", [0, 2], ids=["threaded", "prefork"])
def test_addon_installed_from_its_wheel_delivers(
    sandbox, odoo_server, odoo_tree, installed_wheel, workers
):
    server = wheel_server(
        odoo_server,
        odoo_tree,
        installed_wheel,
        listener_params=direct_route(sandbox),
        workers=workers,
    )
    assert len(delivered(server)) == COUNT
    log = server.log_text()
    # the only copy of the addon Odoo can see is the installed one
    assert str(installed_wheel / "odoo" / "addons") in log
    assert str(REPO_ROOT) not in log.split("addons paths:")[1].splitlines()[0]
    assert "bus listener connected" in log
    assert errors_in(log) == []


def test_checks_run_from_the_installed_wheel(
    sandbox, odoo_server, odoo_tree, installed_wheel
):
    """``odoo-bin bus_check`` and ``python -m odoo.addons.…lib.check``."""
    odoo_path, odoo_python = odoo_tree
    server = wheel_server(
        odoo_server, odoo_tree, installed_wheel, listener_params=direct_route(sandbox)
    )
    server.stop()
    commands = {
        "odoo-bin bus_check": server.odoo_bin(
            f"--addons-path={odoo_path}/addons", "bus_check", "-c", server.config_path
        ),
        "python -m": [
            odoo_python,
            "-m",
            "odoo.addons.bus_alt_connection.lib.check",
            "-c",
            server.config_path,
        ],
    }
    env = {**os.environ, "PYTHONPATH": f"{installed_wheel}:{odoo_path}"}
    for name, argv in commands.items():
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=120, env=env, cwd="/"
        )
        assert result.returncode == 0, (name, result.stdout, result.stderr[-3000:])
        assert "the bus will work" in result.stdout, (name, result.stdout)


WITHOUT_IMDISPATCH = os.path.join(
    REPO_ROOT, "tests", "odoo_sitecustomize", "core_without_imdispatch"
)


@pytest.mark.parametrize("workers", [0, 2], ids=["threaded", "prefork"])
def test_an_odoo_without_imdispatch_gets_one_error_and_keeps_serving(
    odoo_server, sandbox, workers
):
    """Odoo 20.0 rewrote its bus: no ``ImDispatch``. Played by a real Odoo
    whose ``ImDispatch`` class is removed once core's bus module has run."""
    server = odoo_server(
        workers=workers,
        listener_params=direct_route(sandbox),
        environ={"PYTHONPATH": WITHOUT_IMDISPATCH},
    )
    assert server.wait_for_log(r"is not supported", timeout=60), server.log_text()
    statuses = []
    for _ in range(10):
        statuses.append(server.http_status("/web/login"))
        statuses.append(server.http_status("/bus_alt_connection/health"))
        time.sleep(0.5)
    assert statuses[::2] == [200] * 10
    assert set(statuses[1::2]) == {404}  # no controller of ours
    log = server.log_text()
    errors = errors_in(log)
    # one per process that loads the server-wide modules: prefork's gevent
    # worker is a process of its own
    assert len(errors) == (2 if workers else 1), errors
    assert all("is not supported" in line for line in errors), errors
    assert "core has no odoo.addons.bus.models.bus.ImDispatch.loop" in log
    assert "Traceback" not in log
    assert "bus listener" not in log and "cron trigger listener" not in log
