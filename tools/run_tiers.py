"""Run the test tiers: the tests without Odoo once, then the real-Odoo tier
against each series of a folder of Odoo archives (``tools/odoo_lab.py``).

    python -m tools.run_tiers --odoo-archives ../shared/odoo [pytest args]

(``bash tools/run-tests.sh --odoo-archives DIR`` runs it after
``tools/setup.sh``.) The full real-Odoo tier runs on one series
(``--full-series``, 18.0 by default); the others run the tests marked
``every_series``. pytest's output streams to the console; after each tier
one line gives its summary (``odoo 18.0: 57 passed in 812.3s``), and the
last line the total (``total: N passed, N failed``). The exit code is
non-zero when a test failed or errored, a real-Odoo test was skipped, or a
tier ran no test.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ElementTree

from tools import odoo_lab

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUMMARY = re.compile(r"^=+ (.*\bin \d+(?:\.\d+)?s\b.*?) =+$")


class Tier:
    def __init__(self, name, markers, environ=None):
        self.name = name
        self.markers = markers
        self.environ = environ or {}
        self.summary = None
        self.returncode = None
        self.tests = self.failures = self.errors = self.skipped = 0
        self.problems = []

    @property
    def passed(self):
        return self.tests - self.failures - self.errors - self.skipped

    def run(self, pytest_args, workdir):
        junit = os.path.join(workdir, re.sub(r"[^\w.]+", "-", self.name) + ".xml")
        argv = [
            sys.executable,
            "-m",
            "pytest",
            "-m",
            self.markers,
            f"--junitxml={junit}",
            # the slowest tests of each tier, to keep CI's time in view
            "--durations=15",
            *pytest_args,
        ]
        print(f"\n=== tier {self.name}: {' '.join(argv[1:])}", flush=True)
        process = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env={**os.environ, **self.environ},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
        )
        for line in process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            match = SUMMARY.match(line.strip())
            if match:
                self.summary = match.group(1)
        self.returncode = process.wait()
        self.read_junit(junit)
        self.judge()
        return self

    def read_junit(self, path):
        try:
            root = ElementTree.parse(path).getroot()
        except (OSError, ElementTree.ParseError) as error:
            self.problems.append(f"no JUnit report ({error})")
            return
        suites = [root] if root.tag == "testsuite" else root.iter("testsuite")
        for suite in suites:
            self.tests += int(suite.get("tests", 0))
            self.failures += int(suite.get("failures", 0))
            self.errors += int(suite.get("errors", 0))
            self.skipped += int(suite.get("skipped", 0))

    def judge(self):
        if self.tests == 0 or self.returncode == 5:
            self.problems.append("ran no test")
        if self.returncode not in (0, 5):
            self.problems.append(f"pytest exited {self.returncode}")
        if self.failures or self.errors:
            self.problems.append(f"{self.failures} failed, {self.errors} errors")

    @property
    def failed(self):
        return self.failures + self.errors

    def line(self):
        text = f"{self.name}: {self.summary or 'no summary line from pytest'}"
        if self.problems:
            text += f"  [{'; '.join(dict.fromkeys(self.problems))}]"
        return text


class OdooTier(Tier):
    def judge(self):
        super().judge()
        if self.skipped:
            # in CI nothing may skip for want of Odoo, or for anything else
            self.problems.append(f"{self.skipped} skipped (counted as failed)")

    @property
    def failed(self):
        return self.failures + self.errors + self.skipped


class Preparer(threading.Thread):
    """Prepares each series' tree and venv in turn (odoo_lab)."""

    def __init__(self, archives, series_list):
        super().__init__(daemon=True)
        self.archives = archives
        self.series_list = series_list
        self.done = {series: threading.Event() for series in series_list}
        self.results = {}

    def run(self):
        for series in self.series_list:
            started = time.monotonic()
            try:
                prepared = odoo_lab.Series(series, self.archives).prepare()
                error = None
            except (SystemExit, Exception) as exc:  # noqa: BLE001
                prepared, error = None, exc
            self.results[series] = (prepared, error, time.monotonic() - started)
            self.done[series].set()

    def result(self, series):
        self.done[series].wait()
        return self.results[series]


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tools.run_tiers",
        allow_abbrev=False,
        description=__doc__.splitlines()[0],
    )
    parser.add_argument(
        "--odoo-archives", required=True, help="folder of odoo-<series>.tar.xz"
    )
    parser.add_argument(
        "--full-series",
        default=os.environ.get("BUS_ALT_FULL_SERIES", "18.0"),
        help="the series that runs the whole real-Odoo tier (default 18.0); "
        "'all' runs it on every series",
    )
    parser.add_argument(
        "--odoo-series",
        default=os.environ.get("BUS_ALT_SERIES", ""),
        help="comma-separated series to run (default: every archive)",
    )
    args, pytest_args = parser.parse_known_args(argv)
    archives = os.path.abspath(args.odoo_archives)
    series_list = (
        [s for s in args.odoo_series.split(",") if s]
        if args.odoo_series
        else odoo_lab.available_series(archives)
    )
    if not series_list:
        parser.error(f"no odoo-<series>.tar.xz in {archives}")

    started = time.monotonic()
    tiers = []
    lines = []
    # the trees and venvs are prepared in order in the background, while the
    # tests run: a cold build of the next series overlaps the current tier
    preparing = Preparer(archives, series_list)
    preparing.start()
    with tempfile.TemporaryDirectory(prefix="bus-alt-tiers-") as workdir:
        tier = Tier("unit+postgres", "not odoo").run(pytest_args, workdir)
        tiers.append(tier)
        lines.append(tier.line())
        print(tier.line(), flush=True)
        for series in series_list:
            waited = time.monotonic()
            prepared, error, seconds = preparing.result(series)
            if error is not None:
                tier = OdooTier(f"odoo {series}", "odoo")
                tier.problems.append(f"lab prepare failed: {error}")
                tier.errors = 1
            else:
                tree, python = prepared
                print(
                    f"odoo_lab: {series} prepared in {seconds:.0f}s "
                    f"(waited {time.monotonic() - waited:.0f}s for it)",
                    flush=True,
                )
                full = args.full_series in ("all", series)
                tier = OdooTier(
                    f"odoo {series}",
                    "odoo" if full else "odoo and every_series",
                    environ={
                        "ODOO_PATH": tree,
                        "ODOO_PYTHON": python,
                        "BUS_ALT_REQUIRE_ODOO": "1",
                    },
                ).run(pytest_args, workdir)
            tiers.append(tier)
            lines.append(tier.line())
            print(tier.line(), flush=True)

    passed = sum(tier.passed for tier in tiers)
    failed = sum(tier.failed for tier in tiers)
    bad = any(tier.problems for tier in tiers)
    print(f"\n=== tiers, {time.monotonic() - started:.0f}s in all")
    for line in lines:
        print(line)
    print(f"total: {passed} passed, {failed} failed", flush=True)
    return 1 if bad or failed else 0


if __name__ == "__main__":
    sys.exit(main())
