"""The wheels of every series and their metapackages, and the per-series copy.

CI has no Odoo: this builds the four series' wheels as ``make wheels`` does
and reads what pip would (names, versions, requirements, the manifest and
the files inside). ``tests/test_odoo_addon.py`` installs them into a real
Odoo.
"""

import ast
import email
import os
import zipfile

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tools.addon_for_series import SERIES, copy_for_series
from tools.build_wheels import build_series

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADDON_DIR = os.path.join(REPO_ROOT, "bus_alt_connection")
PREFIX = "odoo/addons/bus_alt_connection/"
#: what PyPI serves of the upstream module under the same name
UPSTREAM = {
    "16.0": "16.0.1.0.1",
    "17.0": "17.0.1.0.0.3",
    "18.0": "18.0.1.0.0.3",
    "19.0": "19.0.1.0.0.2",
}
#: how OCA's tooling (manifestoo-core, used by whool) spells "this series"
ODOO_REQUIREMENT = {
    "16.0": "odoo>=16.0a,<16.1dev",
    "17.0": "odoo>=17.0a,<17.1dev",
    "18.0": "odoo==18.0.*",
    "19.0": "odoo==19.0.*",
}
#: every file the addon needs at run time and on the apps page
NEEDED = (
    "__init__.py",
    "__manifest__.py",
    "README.rst",
    "hooks.py",
    "lib/check/__main__.py",
    "lib/check/command.py",
    "lib/check/steps.py",
    "patches/bus_dispatcher.py",
    "cli/__init__.py",
    "cli/bus_check.py",
    "controllers/__init__.py",
    "controllers/main.py",
    "static/description/index.html",
    "static/description/icon.png",
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """{series: (addon wheel, metapackage wheel)}, built as make wheels does."""
    dist = str(tmp_path_factory.mktemp("wheels"))
    return {series: build_series(series, dist) for series in SERIES}


def metadata(path):
    with zipfile.ZipFile(path) as wheel:
        name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_string(wheel.read(name).decode())


def read_manifest(text):
    return ast.literal_eval(text.split("\n", 2)[2])


def manifest_of(addon_dir):
    with open(os.path.join(addon_dir, "__manifest__.py")) as handle:
        return read_manifest(handle.read())


@pytest.mark.parametrize("series", SERIES)
def test_addon_wheel_of_each_series(built, series):
    wheel, _meta = built[series]
    assert os.path.basename(wheel) == (
        f"odoo_addon_bus_alt_connection-{series}.2.0.0-py3-none-any.whl"
    )
    info = metadata(wheel)
    assert info["Name"] == "odoo-addon-bus_alt_connection"
    assert info["Version"] == f"{series}.2.0.0"
    assert info.get_all("Requires-Dist") == [ODOO_REQUIREMENT[series]]
    assert info["License"] == "AGPL-3"
    assert f"Framework :: Odoo :: {series}" in info.get_all("Classifier")
    odoo = Requirement(ODOO_REQUIREMENT[series])
    assert odoo.specifier.contains(f"{series}.20261202", prereleases=True)
    next_series = f"{int(series.split('.')[0]) + 1}.0"
    assert not odoo.specifier.contains(next_series, prereleases=True)


@pytest.mark.parametrize("series", SERIES)
def test_addon_wheel_holds_the_addon_with_its_series_manifest(built, series):
    wheel, _meta = built[series]
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        manifest = read_manifest(archive.read(PREFIX + "__manifest__.py").decode())
    for relative in NEEDED:
        assert PREFIX + relative in names
    sources = {
        os.path.relpath(os.path.join(folder, name), ADDON_DIR)
        for folder, _dirs, files in os.walk(ADDON_DIR)
        for name in files
        if name.endswith(".py")
    }
    assert {PREFIX + source for source in sources} <= names
    assert manifest["version"] == f"{series}.2.0.0"
    assert manifest == {**manifest_of(ADDON_DIR), "version": f"{series}.2.0.0"}


@pytest.mark.parametrize("series", SERIES)
def test_metapackage_of_each_series_picks_this_module(built, series):
    wheel, meta = built[series]
    info = metadata(meta)
    assert info["Name"] == "odoo-addons-oca-bus-alt-connection"
    assert info["Version"].startswith(f"{series}.")
    (requirement,) = (Requirement(r) for r in info.get_all("Requires-Dist"))
    assert requirement.name == "odoo-addon-bus_alt_connection"
    assert requirement.specifier.contains(metadata(wheel)["Version"])
    # a wheelhouse holding the upstream module too: ours sorts above it,
    # and the metapackage does not accept it
    assert Version(metadata(wheel)["Version"]) > Version(UPSTREAM[series])
    assert not requirement.specifier.contains(UPSTREAM[series])


def test_manifest_follows_oca_rules():
    manifest = manifest_of(ADDON_DIR)
    assert manifest["version"] == "18.0.2.0.0"
    assert manifest["license"] == "AGPL-3"
    assert "Odoo Community Association (OCA)" in manifest["author"]
    assert manifest["depends"] == ["bus"]
    assert manifest["website"] == "https://github.com/OCA/server-tools"


@pytest.mark.parametrize("series", ["16.0", "17.0", "19.0"])
def test_copy_for_another_series_changes_only_the_version(tmp_path, series):
    target = copy_for_series(series, str(tmp_path))
    original, copied = manifest_of(ADDON_DIR), manifest_of(target)
    assert copied.pop("version") == series + ".2.0.0"
    original.pop("version")
    assert copied == original
    with open(os.path.join(target, "patches", "bus_dispatcher.py")) as handle:
        with open(os.path.join(ADDON_DIR, "patches", "bus_dispatcher.py")) as source:
            assert handle.read() == source.read()
