"""What every benchmark run does around its measurement.

A bench script (``python -m bench.<script>``) parses its options and
``--results-dir``, asks for a real Odoo tree if it needs one, starts the
sandbox (PostgreSQL and PgBouncer) and a scratch folder, creates the Odoo
database, measures, prints its table and writes ``<script>.json``. A
script states only what is its own, as a :class:`Script`, whose ``main``
is the script's. ``bench/run.py`` runs the scripts' measurements in one
:func:`setting`.
"""

import argparse
import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable

from tools.odoo_harness import create_bus_database, odoo_from_environment, odoo_series
from tools.pg_sandbox import Sandbox

from .common import machine_info, say, write_json

#: the Odoo database of the benchmarks
DBNAME = "bus_bench"


@dataclasses.dataclass
class Setting:
    """Where a measurement runs, for the length of one run.

    ``odoo`` is (odoo_path, odoo_python), or None without Odoo; ``workdir``
    a scratch folder, removed after the run; ``dbname`` the Odoo database,
    once created.
    """

    args: argparse.Namespace
    sandbox: Sandbox
    machine: dict
    odoo: tuple = None
    workdir: str = None
    dbname: str = None

    @property
    def odoo_site(self):
        """(sandbox, odoo, workdir, dbname), the first arguments of the
        ``run`` of the Odoo benchmarks that take a database."""
        return self.sandbox, self.odoo, self.workdir, self.dbname

    def create_database(self, dbname=DBNAME):
        """Create the Odoo database with ``bus`` installed; its name."""
        say(f"creating the Odoo database {dbname} (about a minute) ...")
        workdir = os.path.join(self.workdir, "init")
        odoo, postgres = self.odoo, self.sandbox.postgres
        self.dbname = create_bus_database(odoo, postgres, workdir, dbname)
        return self.dbname


@contextlib.contextmanager
def setting(args, odoo=None):
    """A running sandbox and a scratch folder, both gone after the run."""
    workdir = tempfile.mkdtemp(prefix="bus-alt-bench-")
    try:
        with Sandbox() as sandbox:
            machine = machine_info(sandbox, odoo and odoo_series(odoo[0]))
            yield Setting(args, sandbox, machine, odoo, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def machine_and(key):
    """The JSON most scripts write: ``{"machine": machine, key: results}``."""
    return lambda results, machine: {"machine": machine, key: results}


@dataclasses.dataclass(frozen=True)
class Script:
    """What is a bench script's own; :meth:`main` does the rest.

    ``name``: its JSON is ``<name>.json``; ``doc``: its module's docstring,
    whose first line describes it in ``--help``. ``options(parser)`` adds
    its options; ``measure(setting)`` measures, in the sandbox, and returns
    the results; ``report(results, machine)`` prints them once the sandbox
    is stopped; ``payload(results, machine)`` is what its JSON holds.
    ``needs_odoo``: why it needs a real Odoo tree, or None; with one, the
    database ``dbname`` is created before ``measure``.
    """

    name: str
    doc: str
    options: Callable
    measure: Callable
    report: Callable
    payload: Callable = machine_and("cells")
    needs_odoo: str = None
    dbname: str = DBNAME

    def parse_args(self, argv=None):
        """The script's options, then ``--results-dir``."""
        parser = argparse.ArgumentParser(description=self.doc.splitlines()[0])
        self.options(parser)
        parser.add_argument("--results-dir", help=f"where to write {self.name}.json")
        return parser.parse_args(argv)

    def main(self, argv=None):
        """``python -m bench.<name>``: 0, or 2 when it needs Odoo and has none."""
        args = self.parse_args(argv)
        odoo = odoo_from_environment() if self.needs_odoo else None
        if self.needs_odoo and odoo is None:
            say(f"needs ODOO_PATH and ODOO_PYTHON ({self.needs_odoo})")
            return 2
        with setting(args, odoo) as bench:
            if odoo:
                bench.create_database(self.dbname)
            results = self.measure(bench)
        self.report(results, bench.machine)
        data = self.payload(results, bench.machine)
        say(f"\nwritten: {write_json(self.name, data, args.results_dir)}")
        return 0
