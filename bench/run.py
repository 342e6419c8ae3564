"""The benchmark suite: every figure next to its baseline, on one machine, in one run.

``python -m bench.run`` (or ``make bench``) starts a private PostgreSQL and a
transaction-mode PgBouncer, and runs:

1. notification latency without Odoo (bench/latency.py), always;
2. poll mode against listen mode without Odoo (bench/poll_latency.py), always;

and, when ``ODOO_PATH`` and ``ODOO_PYTHON`` name a real Odoo tree, one Odoo
benchmark at a time:

3. notification latency through Odoo to websockets (bench/odoo_latency.py);
4. PostgreSQL backends under prefork load (bench/backends.py);
5. cron trigger to job start (bench/cron_trigger.py);
6. recovery after a PostgreSQL restart (bench/recovery.py).

It prints progress lines, then every table; writes ``bench/results/*.json``
(one per benchmark and ``summary.json``), ``bench/results/tables.txt`` and
PNG charts; with ``--update-readme`` it puts the tables and charts in
README.rst. ``--from-results`` measures nothing and redoes the tables,
charts and README from ``summary.json``. No figure is asserted.
"""

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time

from tools.odoo_harness import odoo_from_environment, odoo_series
from tools.pg_sandbox import Sandbox

from . import (
    backends,
    charts,
    cron_trigger,
    latency,
    odoo_latency,
    poll_latency,
    recovery,
)
from .common import (
    RESULTS_DIR,
    machine_info,
    machine_line,
    say,
    table_lines,
    write_json,
)
from .odoo_common import init_database

PARTS = (
    "latency",
    "poll_latency",
    "odoo_latency",
    "backends",
    "cron_trigger",
    "recovery",
)
#: the parts that need no Odoo
PLAIN_PARTS = ("latency", "poll_latency")
QUICK_CRON_TRIGGERS = 1
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO_ROOT, "README.rst")
README_BEGIN = ".. bench-results-begin"
README_END = ".. bench-results-end"
QUICK_RECOVERY_OBSERVE_S = 60.0


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a short run (minutes): fewer cells"
    )
    parser.add_argument(
        "--only", nargs="+", choices=PARTS, default=list(PARTS), help="these parts"
    )
    parser.add_argument("--results-dir", default=RESULTS_DIR)
    parser.add_argument(
        "--from-results",
        action="store_true",
        help="measure nothing: tables, charts (and README) from summary.json",
    )
    parser.add_argument(
        "--update-readme",
        action="store_true",
        help="write the tables and charts into README.rst",
    )
    return parser.parse_args(argv)


class Steps:
    """Numbered progress lines: '[2/4 odoo_latency] ...' with elapsed time."""

    def __init__(self, parts):
        self.parts = parts
        self.started = time.monotonic()

    def begin(self, part):
        index = self.parts.index(part) + 1
        elapsed = time.monotonic() - self.started
        say(f"\n=== [{index}/{len(self.parts)}] {part} (at {elapsed:.0f} s) ===")


def run_parts(args, odoo, workdir):
    """Run the parts asked for; (machine, {part: results})."""
    parts = [p for p in args.only if p in PLAIN_PARTS or odoo]
    if odoo is None and parts != args.only:
        say("ODOO_PATH/ODOO_PYTHON not set: only the parts without Odoo run")
    steps, results = Steps(parts), {}
    with Sandbox() as sandbox:
        machine = machine_info(sandbox, odoo and odoo_series(odoo[0]))
        say(f"machine: {machine_line(machine)}")
        if "latency" in parts:
            steps.begin("latency")
            counts = latency.QUICK_COUNTS if args.quick else latency.COUNTS
            results["latency"] = latency.run(sandbox, counts=counts)
        if "poll_latency" in parts:
            steps.begin("poll_latency")
            counts = poll_latency.QUICK_COUNTS if args.quick else poll_latency.COUNTS
            results["poll_latency"] = poll_latency.run(sandbox, counts=counts)
        if odoo and set(parts) - set(PLAIN_PARTS):
            dbname = init_database(sandbox, odoo, workdir)
        if "odoo_latency" in parts:
            steps.begin("odoo_latency")
            cells = odoo_latency.QUICK_CELLS if args.quick else odoo_latency.CELLS
            results["odoo_latency"] = odoo_latency.run(
                sandbox, odoo, os.path.join(workdir, "latency"), cells
            )
        if "backends" in parts:
            steps.begin("backends")
            results["backends"] = backends.run(
                sandbox,
                odoo,
                os.path.join(workdir, "backends"),
                backends.QUICK_CONFIGS if args.quick else backends.CONFIGS,
                measure_s=backends.QUICK_MEASURE_S if args.quick else None,
            )
        if "cron_trigger" in parts:
            steps.begin("cron_trigger")
            results["cron_trigger"] = cron_trigger.run(
                sandbox,
                odoo,
                os.path.join(workdir, "cron"),
                dbname,
                QUICK_CRON_TRIGGERS if args.quick else 3,
            )
        if "recovery" in parts:  # last: it stops and starts PostgreSQL
            steps.begin("recovery")
            observe = QUICK_RECOVERY_OBSERVE_S if args.quick else recovery.OBSERVE_S
            results["recovery"] = recovery.run(
                sandbox, odoo, os.path.join(workdir, "recovery"), dbname, observe
            )
    machine["duration_s"] = round(time.monotonic() - steps.started)
    return machine, results


# tables -----------------------------------------------------------------------


#: (part, its module, the table's title), in the order the tables are shown
TABLES = (
    ("latency", latency, "Notification latency without Odoo, COMMIT sent -> listener"),
    ("poll_latency", poll_latency, "Poll mode against listen mode, without Odoo"),
    (
        "odoo_latency",
        odoo_latency,
        "Notification latency through Odoo, commit -> websocket",
    ),
    ("backends", backends, backends.TITLE),
    (
        "cron_trigger",
        cron_trigger,
        "Cron trigger to job start (threaded Odoo, one cron thread)",
    ),
    ("recovery", recovery, "Recovery after a PostgreSQL restart"),
)


def tables_text(machine, results):
    """Every table of the run as plain text, as printed and as in the README."""
    out = [f"{machine_line(machine)}; run took {machine['duration_s']} s"]
    for part, module, title in TABLES:
        if part not in results:
            continue
        rows = results[part]
        out += ["", title]
        out += table_lines(module.TABLE_HEADER, module.table_rows(rows))
        if part == "recovery":
            out += [recovery.ratio_line(rows)]
        else:
            out += getattr(module, "FOOTNOTE", "").splitlines()
    return [line for text in out for line in text.split("\n")]


def write_results(machine, results, results_dir):
    paths = []
    series = machine.get("odoo")
    for part, data in results.items():
        if part == "recovery":
            payload = recovery.result_data(series, data, machine)
        else:
            payload = {"machine": machine, "rows": data}
        paths.append(write_json(part, payload, results_dir))
    summary = {"machine": machine, **{k: v for k, v in results.items()}}
    paths.append(write_json("summary", summary, results_dir))
    return paths


def readme_block(lines, chart_paths):
    block = [README_BEGIN, "", "::", ""]
    block += [f"    {line}".rstrip() for text in lines for line in text.split("\n")]
    for path in chart_paths:
        relative = os.path.relpath(os.path.abspath(path), REPO_ROOT)
        block += ["", f".. image:: {relative}", f"   :alt: {os.path.basename(path)}"]
    return block + ["", README_END]


def update_readme(lines, chart_paths, readme=README):
    with open(readme) as handle:
        text = handle.read()
    pattern = re.compile(
        re.escape(README_BEGIN) + r".*?" + re.escape(README_END), re.DOTALL
    )
    if not pattern.search(text):
        say(f"{readme} has no '{README_BEGIN}' marker: not updated")
        return False
    block = "\n".join(readme_block(lines, chart_paths))
    with open(readme, "w") as handle:
        handle.write(pattern.sub(lambda _match: block, text))
    return True


def load_results(results_dir):
    with open(os.path.join(results_dir, "summary.json")) as handle:
        summary = json.load(handle)
    return summary.pop("machine"), summary


def measure(args):
    odoo = odoo_from_environment()
    workdir = tempfile.mkdtemp(prefix="bus-alt-bench-")
    try:
        machine, results = run_parts(args, odoo, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(args.results_dir, exist_ok=True)
    return machine, results, write_results(machine, results, args.results_dir)


def main(argv=None):
    args = parse_args(argv)
    if args.from_results:
        machine, results = load_results(args.results_dir)
        paths = []
    else:
        machine, results, paths = measure(args)
    lines = tables_text(machine, results)
    say("\n" + "\n".join(lines))
    with open(os.path.join(args.results_dir, "tables.txt"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    paths.append(os.path.join(args.results_dir, "tables.txt"))
    chart_paths = charts.draw(results, args.results_dir)
    say("\nwritten: " + ", ".join(paths + chart_paths))
    if args.update_readme and set(results) != set(PARTS):
        say("README.rst left alone: it shows a run of every part (needs ODOO_PATH)")
    elif args.update_readme and update_readme(lines, chart_paths):
        say("README.rst: tables and charts updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
