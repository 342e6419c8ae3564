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
bench/README.rst. ``--from-results`` measures nothing and redoes the tables,
charts and README from ``summary.json``. No figure is asserted.
"""

import argparse
import dataclasses
import json
import os
import re
import sys
import time

from tools.odoo_harness import odoo_from_environment

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
    machine_line,
    say,
    table_lines,
    write_json,
)
from .entry import setting

#: each part's script, in the order they run (recovery last: it stops and
#: starts PostgreSQL)
SCRIPTS = {
    "latency": latency.SCRIPT,
    "poll_latency": poll_latency.SCRIPT,
    "odoo_latency": odoo_latency.SCRIPT,
    "backends": backends.SCRIPT,
    "cron_trigger": cron_trigger.SCRIPT,
    "recovery": recovery.SCRIPT,
}
PARTS = tuple(SCRIPTS)
#: the parts that need no Odoo
PLAIN_PARTS = ("latency", "poll_latency")
#: a part's options in a quick run, as on its script's command line; the
#: parts not named here take ``--quick``
QUICK_OPTIONS = {
    "cron_trigger": ["--triggers", "1"],
    "recovery": ["--observe", "60"],
}
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: the README that shows the results, and its name in messages
README = os.path.join(REPO_ROOT, "bench", "README.rst")
README_NAME = "bench/README.rst"
README_BEGIN = ".. bench-results-begin"
README_END = ".. bench-results-end"


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
        help=f"write the tables and charts into {README_NAME}",
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


def parts_to_run(args, odoo):
    """The parts asked for, in the order of PARTS; without Odoo, the plain ones."""
    parts = [p for p in PARTS if p in args.only and (p in PLAIN_PARTS or odoo)]
    if len(parts) < len(set(args.only)):
        say("ODOO_PATH/ODOO_PYTHON not set: only the parts without Odoo run")
    return parts


def part_setting(bench, part):
    """The run's setting as the part's script sees it: the arguments its
    command line would give, and a scratch folder of its own (the parts'
    Odoo servers name their folders alike)."""
    argv = QUICK_OPTIONS.get(part, ["--quick"]) if bench.args.quick else []
    return dataclasses.replace(
        bench,
        args=SCRIPTS[part].parse_args(argv),
        workdir=os.path.join(bench.workdir, part),
    )


def run_parts(bench):
    """Run the parts asked for, one Odoo database for all; (machine, results)."""
    parts = parts_to_run(bench.args, bench.odoo)
    steps, results = Steps(parts), {}
    say(f"machine: {machine_line(bench.machine)}")
    for part in parts:
        if part not in PLAIN_PARTS and bench.dbname is None:
            bench.create_database()
        steps.begin(part)
        results[part] = SCRIPTS[part].measure(part_setting(bench, part))
    bench.machine["duration_s"] = round(time.monotonic() - steps.started)
    return bench.machine, results


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


def readme_block(lines, chart_paths, readme_dir):
    """The results block: the tables as a literal block, then the charts,
    their paths relative to ``readme_dir`` (where the README is)."""
    block = [README_BEGIN, "", "::", ""]
    block += [f"    {line}".rstrip() for text in lines for line in text.split("\n")]
    for path in chart_paths:
        relative = os.path.relpath(os.path.abspath(path), readme_dir)
        block += ["", f".. image:: {relative}", f"   :alt: {os.path.basename(path)}"]
    return block + ["", README_END]


def update_readme(lines, chart_paths, readme=README):
    """Replace the README's results block; False when it has none."""
    try:
        with open(readme) as handle:
            text = handle.read()
    except FileNotFoundError:
        say(f"{readme} does not exist: not updated")
        return False
    pattern = re.compile(
        re.escape(README_BEGIN) + r".*?" + re.escape(README_END), re.DOTALL
    )
    if not pattern.search(text):
        say(f"{readme} has no '{README_BEGIN}' marker: not updated")
        return False
    readme_dir = os.path.dirname(os.path.abspath(readme))
    block = "\n".join(readme_block(lines, chart_paths, readme_dir))
    with open(readme, "w") as handle:
        handle.write(pattern.sub(lambda _match: block, text))
    return True


def load_results(results_dir):
    with open(os.path.join(results_dir, "summary.json")) as handle:
        summary = json.load(handle)
    return summary.pop("machine"), summary


def measure(args):
    with setting(args, odoo_from_environment()) as bench:
        machine, results = run_parts(bench)
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
        say(f"{README_NAME} left alone: it shows a run of every part (needs ODOO_PATH)")
    elif args.update_readme and update_readme(lines, chart_paths):
        say(f"{README_NAME}: tables and charts updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
