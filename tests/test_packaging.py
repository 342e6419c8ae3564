"""The addon wheel, the metapackage, and the per-series copy."""

import ast
import os
import re
import subprocess
import sys
import zipfile

import pytest

from tools.addon_for_series import copy_for_series

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADDON_DIR = os.path.join(REPO_ROOT, "bus_alt_connection")


def build_wheel(source, outdir):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", outdir, source],
        check=True,
        capture_output=True,
        timeout=600,
    )
    wheels = [name for name in os.listdir(outdir) if name.endswith(".whl")]
    assert len(wheels) == 1, wheels
    return os.path.join(outdir, wheels[0])


def wheel_metadata(path):
    with zipfile.ZipFile(path) as wheel:
        names = wheel.namelist()
        metadata_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        return names, wheel.read(metadata_name).decode()


@pytest.fixture(scope="module")
def addon_wheel(tmp_path_factory):
    return build_wheel(ADDON_DIR, str(tmp_path_factory.mktemp("wheel")))


def test_addon_wheel_is_for_odoo_18(addon_wheel):
    name = os.path.basename(addon_wheel)
    assert name.startswith("odoo_addon_bus_alt_connection-18.0.")
    _names, metadata = wheel_metadata(addon_wheel)
    assert "Requires-Dist: odoo==18.0.*" in metadata
    assert "License: AGPL-3" in metadata


def test_addon_wheel_holds_the_addon(addon_wheel):
    names, _metadata = wheel_metadata(addon_wheel)
    prefix = "odoo/addons/bus_alt_connection/"
    for relative in (
        "__init__.py",
        "__manifest__.py",
        "hooks.py",
        "dispatcher_patch.py",
        "listener_route.py",
        "listener_connection.py",
        "listener_supervisor.py",
        "listen_probe.py",
        "README.rst",
        "tests/test_dispatcher_patch.py",
    ):
        assert prefix + relative in names


def test_metapackage_requires_the_addon(tmp_path):
    wheel = build_wheel(os.path.join(REPO_ROOT, "setup", "_metapackage"), str(tmp_path))
    _names, metadata = wheel_metadata(wheel)
    assert "Requires-Dist: odoo-addon-bus_alt_connection==18.0.*" in metadata


def manifest_of(addon_dir):
    with open(os.path.join(addon_dir, "__manifest__.py")) as handle:
        return ast.literal_eval(handle.read().split("\n", 2)[2])


def test_manifest_follows_oca_rules():
    manifest = manifest_of(ADDON_DIR)
    assert manifest["version"] == "18.0.1.0.0"
    assert manifest["license"] == "AGPL-3"
    assert "Odoo Community Association (OCA)" in manifest["author"]
    assert manifest["depends"] == ["bus"]
    assert manifest["website"] == "https://github.com/OCA/server-tools"


@pytest.mark.parametrize("series", ["16.0", "17.0", "19.0"])
def test_copy_for_another_series_changes_only_the_version(tmp_path, series):
    target = copy_for_series(series, str(tmp_path))
    original, copied = manifest_of(ADDON_DIR), manifest_of(target)
    assert copied.pop("version") == series + ".1.0.0"
    original.pop("version")
    assert copied == original
    with open(os.path.join(target, "dispatcher_patch.py")) as handle:
        with open(os.path.join(ADDON_DIR, "dispatcher_patch.py")) as source:
            assert handle.read() == source.read()


def test_copy_for_another_series_builds_its_wheel(tmp_path):
    target = copy_for_series("17.0", str(tmp_path / "addons"))
    wheel = build_wheel(target, str(tmp_path / "wheel"))
    assert os.path.basename(wheel).startswith("odoo_addon_bus_alt_connection-17.0.")
    _names, metadata = wheel_metadata(wheel)
    # whool spells the 17.0 range this way; 18.0 as odoo==18.0.*
    assert re.search(r"Requires-Dist: odoo(==17\.0\.\*|>=17\.0a,<17\.1dev)\n", metadata)
