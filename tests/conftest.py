import os
import re
import shutil
import tempfile

import pytest

from tools.odoo_harness import (
    OdooServer,
    create_bus_database,
    odoo_from_environment,
    odoo_series,
)
from tools.pg_sandbox import Sandbox

#: the fixtures that need a real Odoo tree (directly or through others)
ODOO_FIXTURES = {"odoo_tree", "odoo_database", "odoo_server"}


def odoo_required():
    """True where a missing Odoo is a failure, not a skip: in CI, and in
    ``tools/run-tests.sh --odoo-archives`` (which sets BUS_ALT_REQUIRE_ODOO)."""
    return os.environ.get("CI", "").lower() == "true" or os.environ.get(
        "BUS_ALT_REQUIRE_ODOO", ""
    ) not in ("", "0")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Mark each test with its tier, from the fixtures it uses: ``odoo`` (a
    real Odoo tree), ``postgres`` (the PostgreSQL/PgBouncer sandbox, no
    Odoo) or ``unit`` (neither). Runs before ``-m`` selects."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        # a test_odoo_*.py module is about a real Odoo even where a test
        # calls the harness without those fixtures
        odoo_module = os.path.basename(str(item.fspath)).startswith("test_odoo_")
        if names & ODOO_FIXTURES or odoo_module or item.get_closest_marker("odoo"):
            if not item.get_closest_marker("odoo"):
                item.add_marker(pytest.mark.odoo)
        elif "sandbox" in names:
            item.add_marker(pytest.mark.postgres)
        else:
            item.add_marker(pytest.mark.unit)


def safe_name(request):
    """The test's name without brackets: Odoo 19.0 globs addons paths."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", request.node.name)


@pytest.fixture(scope="session")
def sandbox():
    """A private PostgreSQL and a transaction-mode PgBouncer on loopback."""
    with Sandbox() as running:
        yield running


@pytest.fixture(scope="session")
def odoo_tree():
    """(odoo_path, odoo_python) of a real Odoo tree, or skip (fail in CI)."""
    found = odoo_from_environment()
    if found is None:
        reason = (
            "needs a real Odoo source tree: set ODOO_PATH (and ODOO_PYTHON, "
            "the interpreter of its virtualenv) to run the real-Odoo tests"
        )
        if odoo_required():
            pytest.fail(
                f"{reason}; in CI (CI=true) and with tools/run-tests.sh "
                "--odoo-archives a real-Odoo test must not skip",
                pytrace=False,
            )
        pytest.skip(reason)
    return found


@pytest.fixture(scope="session")
def odoo_workdir():
    path = tempfile.mkdtemp(prefix="bus-alt-odoo-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def odoo_database(sandbox, odoo_tree, odoo_workdir):
    """An Odoo database with ``bus`` installed, created once per session."""
    dbname = "busdb" + odoo_series(odoo_tree[0]).replace(".", "_")
    workdir = os.path.join(odoo_workdir, "init")
    return create_bus_database(odoo_tree, sandbox.postgres, workdir, dbname)


@pytest.fixture
def odoo_server(sandbox, odoo_tree, odoo_database, odoo_workdir, request):
    """Factory of Odoo servers behind the PgBouncer; all stopped after the test."""
    servers = []
    odoo_path, odoo_python = odoo_tree

    def start(**kwargs):
        workdir = os.path.join(odoo_workdir, f"{safe_name(request)}-{len(servers)}")
        server = OdooServer(
            odoo_path,
            odoo_python,
            workdir,
            odoo_database,
            db_params=kwargs.pop("db_params", sandbox.pgbouncer.odoo_params()),
            **kwargs,
        )
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
