"""The Odoo lab: one unpacked Odoo tree and one Python 3.11 virtualenv per
series, prepared from archives ``odoo-<series>.tar.xz`` in a cache outside
the clone.

    python3 -m tools.odoo_lab prepare --archives ../shared/odoo [18.0 ...]
    python3 -m tools.odoo_lab env --archives ../shared/odoo 18.0

``prepare`` unpacks ``CACHE/odoo-<series>/`` and builds
``CACHE/venv-<series>/``, where CACHE is ``$BUS_ALT_CACHE``, else
``$XDG_CACHE_HOME/bus_alt_connection``, else
``~/.cache/bus_alt_connection``. The venv's ``.ready`` stamp holds a hash of
the archive's sha256 and the recipe; it is written only once the venv
imports Odoo and passes a smoke check. A run that finds the same stamp
reuses both; a changed archive or recipe, or a venv without its stamp, is
rebuilt. ``env`` prepares one series and prints ``ODOO_PATH=...`` and
``ODOO_PYTHON=...`` lines for the shell.

Plain Python 3, standard library only. Odoo itself is never downloaded and
never copied into the repository.
"""

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

#: the order in which ``prepare`` builds the series when none is named:
#: 18.0 first (the series the full real-Odoo tier runs on)
SERIES_ORDER = ("18.0", "17.0", "19.0", "16.0")

#: requirements.txt lines dropped: python-ldap needs libldap headers and the
#: addon does not use it; psycopg2 builds from source (psycopg2-binary
#: replaces it)
DROPPED = ("python-ldap", "psycopg2")

#: installed in every venv, besides the tree's requirements
EXTRA = (
    "psycopg2-binary==2.9.10",
    "websocket-client==1.8.0",
    # newer ones break gevent's patch_all
    "zope.interface==6.0",
    "zope.event==4.6",
    # the addon's own tests under pytest-odoo (tests/test_odoo_addon.py)
    "pytest==8.3.5",
    "pytest-odoo==2.3.0",
)

#: per series: pins of the tree's requirements.txt replaced (name -> spec),
#: then requirements added
OVERRIDES = {
    "16.0": {},
    "17.0": {},
    # 18.0's cbor2==5.4.2 has no wheel for Python 3.11 and no sdist that
    # builds there; 5.4.6 is the version 19.0 pins for 3.11 (Bookworm)
    "18.0": {"cbor2": "cbor2==5.4.6"},
    "19.0": {},
}
ADDED = {
    "16.0": (),
    "17.0": (),
    "18.0": ('"PyPDF2<3"', '"Werkzeug<3.1"'),
    "19.0": (),
}

#: what the venv must import, from the tree, before it is stamped ready
SMOKE = (
    "import sys, gevent, gevent.monkey, psycopg2, lxml.etree, werkzeug, "
    "websocket, pytest_odoo\n"
    "import odoo, odoo.release, odoo.tools.config, odoo.service.server, odoo.http\n"
    "assert odoo.release.series == sys.argv[1], odoo.release.series\n"
    "print(odoo.release.version)\n"
)


def log(message):
    print(f"odoo_lab: {message}", file=sys.stderr, flush=True)


def cache_dir():
    explicit = os.environ.get("BUS_ALT_CACHE")
    if explicit:
        return os.path.abspath(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache"
    )
    return os.path.join(base, "bus_alt_connection")


def archive_path(archives, series):
    return os.path.join(archives, f"odoo-{series}.tar.xz")


def available_series(archives):
    found = []
    for name in os.listdir(archives):
        match = re.fullmatch(r"odoo-(\d+\.\d+)\.tar\.xz", name)
        if match:
            found.append(match.group(1))
    order = {series: index for index, series in enumerate(SERIES_ORDER)}
    return sorted(found, key=lambda s: (order.get(s, len(order)), s))


def find_python311():
    """An interpreter of Python 3.11 that can make a venv with pip."""
    candidates = [os.environ.get("ODOO_LAB_PYTHON")]
    candidates += [shutil.which("python3.11"), shutil.which("python3")]
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    versions = os.path.join(pyenv_root, "versions")
    if os.path.isdir(versions):
        for name in sorted(os.listdir(versions), reverse=True):
            if name.startswith("3.11"):
                candidates.append(os.path.join(versions, name, "bin", "python3.11"))
    candidates += ["/usr/bin/python3.11", "/usr/local/bin/python3.11"]
    for candidate in candidates:
        if not candidate or not os.path.exists(candidate):
            continue
        probe = subprocess.run(
            [
                candidate,
                "-c",
                "import sys, venv, ensurepip; "
                "print('%d.%d' % sys.version_info[:2]); print(sys.executable)",
            ],
            capture_output=True,
            text=True,
        )
        lines = probe.stdout.split()
        if probe.returncode == 0 and lines and lines[0] == "3.11":
            return lines[1]
    raise SystemExit(
        "odoo_lab: no Python 3.11 with venv and ensurepip found "
        "(tried python3.11, python3, pyenv's 3.11.*); set ODOO_LAB_PYTHON"
    )


def requirement_name(line):
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
    return match.group(1).lower().replace("_", "-") if match else None


def recipe(requirements_text, series):
    """The lines of the venv's requirements file for a tree's
    requirements.txt: Odoo's pins, less what is dropped or replaced, plus
    the extras."""
    overrides = {name.lower(): spec for name, spec in OVERRIDES.get(series, {}).items()}
    lines = []
    for raw in requirements_text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if re.search(r"sys_platform\s*==\s*['\"]win32['\"]", line):
            continue
        name = requirement_name(line)
        if name in DROPPED or name in overrides:
            continue
        lines.append(line)
    lines += list(overrides.values())
    lines += [spec.strip('"') for spec in ADDED.get(series, ())]
    lines += list(EXTRA)
    return lines


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Series:
    def __init__(self, series, archives, cache=None):
        self.series = series
        self.archive = archive_path(archives, series)
        self.cache = cache or cache_dir()
        self.tree = os.path.join(self.cache, f"odoo-{series}")
        self.venv = os.path.join(self.cache, f"venv-{series}")
        self.python = os.path.join(self.venv, "bin", "python")
        self.stamp_path = os.path.join(self.venv, ".ready")
        self.tree_stamp_path = os.path.join(self.cache, f".odoo-{series}.sha256")

    def archive_sha256(self):
        if not hasattr(self, "_sha"):
            self._sha = sha256_of(self.archive)
        return self._sha

    def read_requirements(self):
        """The tree's requirements.txt: from the unpacked tree when it came
        from this archive (an xz archive reads only from its start)."""
        if self._read(self.tree_stamp_path) == self.archive_sha256():
            with contextlib.suppress(OSError):
                with open(os.path.join(self.tree, "requirements.txt")) as handle:
                    return handle.read()
        with tarfile.open(self.archive) as archive:
            member = archive.extractfile(f"odoo-{self.series}/requirements.txt")
            return member.read().decode()

    def recipe_lines(self):
        if not hasattr(self, "_recipe"):
            self._recipe = recipe(self.read_requirements(), self.series)
        return self._recipe

    def stamp(self):
        payload = json.dumps(
            {"archive": self.archive_sha256(), "recipe": self.recipe_lines()},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def _read(self, path):
        try:
            with open(path) as handle:
                return handle.read().strip()
        except OSError:
            return None

    def ready(self):
        return (
            self._read(self.tree_stamp_path) == self.archive_sha256()
            and os.path.exists(os.path.join(self.tree, "odoo-bin"))
            and self._read(self.stamp_path) == self.stamp()
            and os.path.exists(self.python)
        )

    def unpack(self):
        """The tree, unpacked anew unless it came from this very archive."""
        if self._read(self.tree_stamp_path) == self.archive_sha256() and (
            os.path.exists(os.path.join(self.tree, "odoo-bin"))
        ):
            return False
        log(f"{self.series}: unpacking {self.archive}")
        os.makedirs(self.cache, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.tree_stamp_path)
        # a changed tree invalidates the venv's smoke check too
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.stamp_path)
        shutil.rmtree(self.tree, ignore_errors=True)
        staging = tempfile.mkdtemp(prefix=f".unpack-{self.series}-", dir=self.cache)
        try:
            with tarfile.open(self.archive) as archive:
                kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                archive.extractall(staging, **kwargs)
            unpacked = os.path.join(staging, f"odoo-{self.series}")
            if not os.path.exists(os.path.join(unpacked, "odoo-bin")):
                raise SystemExit(
                    f"odoo_lab: {self.archive} holds no odoo-{self.series}/odoo-bin"
                )
            os.rename(unpacked, self.tree)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        with open(self.tree_stamp_path, "w") as handle:
            handle.write(self.archive_sha256() + "\n")
        return True

    def build_venv(self, python311):
        log(f"{self.series}: building {self.venv} with {python311}")
        shutil.rmtree(self.venv, ignore_errors=True)
        subprocess.run([python311, "-m", "venv", self.venv], check=True)
        requirements = os.path.join(self.venv, "odoo-lab-requirements.txt")
        with open(requirements, "w") as handle:
            handle.write("\n".join(self.recipe_lines()) + "\n")
        # pip's output goes to a log beside the venv, shown if it fails
        pip_log = os.path.join(self.venv, "odoo-lab-pip.log")
        with open(pip_log, "w") as handle:
            result = subprocess.run(
                [
                    self.python,
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "--prefer-binary",
                    "-r",
                    requirements,
                ],
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        if result.returncode != 0:
            with open(pip_log) as handle:
                tail = handle.read()[-6000:]
            raise SystemExit(
                f"odoo_lab: {self.series}: pip install failed ({pip_log}):\n{tail}"
            )

    def smoke_check(self):
        result = subprocess.run(
            [self.python, "-c", SMOKE, self.series],
            cwd=self.tree,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": self.tree},
        )
        if result.returncode != 0:
            raise SystemExit(
                f"odoo_lab: {self.series}: the venv fails the smoke check:\n"
                f"{result.stdout}{result.stderr}"
            )
        version = subprocess.run(
            [self.python, os.path.join(self.tree, "odoo-bin"), "--version"],
            capture_output=True,
            text=True,
        )
        if version.returncode != 0 or self.series not in version.stdout:
            raise SystemExit(
                f"odoo_lab: {self.series}: odoo-bin --version failed:\n"
                f"{version.stdout}{version.stderr}"
            )
        return version.stdout.strip()

    def prepare(self, python311=None):
        """Unpack and build what is missing or stale; (tree, python)."""
        started = time.monotonic()
        self.unpack()
        stamp = self.stamp()
        if self._read(self.stamp_path) == stamp and os.path.exists(self.python):
            log(f"{self.series}: ready (cached) in {self.cache}")
            return self.tree, self.python
        if os.path.exists(self.venv):
            log(f"{self.series}: {self.venv} is stale or half-made: rebuilding")
        self.build_venv(python311 or find_python311())
        version = self.smoke_check()
        with open(self.stamp_path + ".tmp", "w") as handle:
            handle.write(stamp + "\n")
        os.replace(self.stamp_path + ".tmp", self.stamp_path)
        log(
            f"{self.series}: ready ({version}) in "
            f"{time.monotonic() - started:.0f}s: {self.tree}, {self.python}"
        )
        return self.tree, self.python


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m tools.odoo_lab")
    parser.add_argument("command", choices=("prepare", "env", "recipe", "list"))
    parser.add_argument("series", nargs="*", help="default: every archive found")
    parser.add_argument(
        "--archives", required=True, help="folder of odoo-<series>.tar.xz"
    )
    args = parser.parse_intermixed_args(argv)
    archives = os.path.abspath(args.archives)
    if not os.path.isdir(archives):
        parser.error(f"no folder {archives}")
    series_list = args.series or available_series(archives)
    if not series_list:
        parser.error(f"no odoo-<series>.tar.xz in {archives}")
    if args.command == "list":
        print("\n".join(series_list))
        return 0
    for series in series_list:
        if not os.path.exists(archive_path(archives, series)):
            parser.error(f"no {archive_path(archives, series)}")
    if args.command == "recipe":
        for series in series_list:
            print(f"# {series}")
            print("\n".join(Series(series, archives).recipe_lines()))
        return 0
    if args.command == "env" and len(series_list) != 1:
        parser.error("env takes one series")
    python311 = None
    for series in series_list:
        lab = Series(series, archives)
        if not lab.ready():
            python311 = python311 or find_python311()
        tree, python = lab.prepare(python311)
        if args.command == "env":
            print(f"ODOO_PATH={tree}")
            print(f"ODOO_PYTHON={python}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
