"""``odoo-bin bus_check`` through a real Odoo tree (ODOO_PATH, ODOO_PYTHON)."""

import json
import os
import subprocess

import pytest

from tools.odoo_harness import OdooServer

from .conftest import safe_name
from .test_check_steps import closed_port


@pytest.fixture
def run_check(sandbox, odoo_tree, odoo_database, odoo_workdir, request):
    def run(listener_params, **extra_options):
        server = OdooServer(
            *odoo_tree,
            os.path.join(odoo_workdir, f"check-{safe_name(request)}"),
            odoo_database,
            sandbox.pgbouncer.odoo_params(),
            listener_params=listener_params,
            extra_options=extra_options,
        )
        server.write_config()
        addons_path = server.options()["addons_path"]
        result = subprocess.run(
            server.odoo_bin(
                f"--addons-path={addons_path}",
                "bus_check",
                "-c",
                server.config_path,
                "--json",
            ),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.stdout, result.stderr[-3000:]
        return result.returncode, json.loads(result.stdout)

    return run


@pytest.mark.every_series
@pytest.mark.parametrize(
    "route, expected",
    [("direct", 0), ("pooler", 1), ("closed", 2)],
)
def test_bus_check_command(sandbox, run_check, route, expected):
    port = {
        "direct": sandbox.postgres.port,
        "pooler": sandbox.pgbouncer.port,
        "closed": closed_port(),
    }[route]
    code, report = run_check({"host": "127.0.0.1", "port": port})
    assert code == expected, report
    assert report["exit_code"] == expected
    assert report["server_wide"]["loaded"] is True
    assert report["route"]["port"]["value"] == str(port)


@pytest.mark.parametrize("mode", ["poll", "auto"])
def test_bus_check_command_behind_the_pooler_alone(sandbox, run_check, mode):
    """No direct route: poll works, auto says it would poll; both exit 0."""
    listener = None if mode == "poll" else {"port": sandbox.pgbouncer.port}
    code, report = run_check(listener, imdispatcher_mode=mode)
    assert code == 0, report
    assert report["mode"]["configured"] == mode
    assert report["mode"]["active"] == "poll"
    assert all(result["ok"] for result in report["poll"]["databases"].values())
