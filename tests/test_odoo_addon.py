"""The addon installed in a real Odoo database: its own tests, and the bus.

Needs ODOO_PATH and ODOO_PYTHON; skipped otherwise.
"""

import os
import re
import subprocess
import sys

import pytest

from tools.addon_for_series import copy_for_series
from tools.odoo_harness import (
    ADDON_NAME,
    MANIFEST_SERIES,
    REPO_ROOT,
    OdooServer,
    odoo_series,
)

from .test_odoo_bus import COUNT, delivered, direct_route, errors_in
from .test_packaging import build_wheel

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


def test_odoo_test_runner_passes_the_addon_tests(addon_database):
    log = open(os.path.join(addon_database.workdir, "init.log")).read()
    results = RESULT.findall(log)
    assert results, "Odoo's test runner printed no result line"
    failed, errors, total = map(int, results[-1])
    assert (failed, errors) == (0, 0), log[-5000:]
    assert total >= 9  # test_dispatcher_patch and test_cron_patch


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


def test_addon_installed_from_its_wheel_delivers(
    sandbox, odoo_server, odoo_tree, tmp_path
):
    """``pip install --no-deps`` of the wheel, no checkout on addons_path.

    pip puts the addon in ``<site-packages>/odoo/addons``, which a
    pip-installed Odoo has on its addons path. The tree here is not
    pip-installed, so the test installs into a target folder and names its
    ``odoo/addons`` in addons_path, as a pip-installed Odoo would.
    """
    odoo_path, _python = odoo_tree
    series = odoo_series(odoo_path)
    source = os.path.join(REPO_ROOT, ADDON_NAME)
    if series != MANIFEST_SERIES:
        source = copy_for_series(series, str(tmp_path / "addons"))
    wheel = build_wheel(source, str(tmp_path / "wheel"))
    target = tmp_path / "site-packages"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            wheel,
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    installed_addons = target / "odoo" / "addons"
    assert (installed_addons / ADDON_NAME / "__manifest__.py").exists()
    server = odoo_server(
        listener_params=direct_route(sandbox),
        addon_on_path=False,
        extra_options={"addons_path": f"{odoo_path}/addons,{installed_addons}"},
    )
    assert len(delivered(server)) == COUNT
    log = server.log_text()
    # the only copy of the addon Odoo can see is the installed one
    assert str(installed_addons) in log
    assert str(REPO_ROOT) not in log.split("addons paths:")[1].splitlines()[0]
    assert "bus listener connected" in log
