"""What the benchmarks share: progress, statistics, tables, the machine, JSON.

Every figure is reported next to its baseline measured in the same run, as a
ratio; nothing here asserts a timing.
"""

import datetime
import json
import math
import os
import platform
import re
import shutil
import subprocess

RESULTS_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "results"
)


def say(text):
    """A progress line, flushed at once so that a long run shows where it is."""
    print(text, flush=True)


# statistics -----------------------------------------------------------------


def percentile(values, fraction):
    """The ``fraction`` quantile of ``values`` (nearest rank), or None."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank]


def latency_summary(latencies_s):
    """p50 / p99 / max in milliseconds of a list of seconds."""
    if not latencies_s:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "p50_ms": percentile(latencies_s, 0.50) * 1000,
        "p99_ms": percentile(latencies_s, 0.99) * 1000,
        "max_ms": max(latencies_s) * 1000,
    }


def quantiles_ms(latencies_s):
    """The 0th to 100th percentiles in milliseconds: the distribution, small
    enough to keep in the JSON and to draw from."""
    return [
        round(percentile(latencies_s, step / 100) * 1000, 4)
        for step in range(101)
        if latencies_s
    ]


def ratio(value, baseline):
    """``value / baseline``, or None when either is missing or zero."""
    if value is None or not baseline:
        return None
    return value / baseline


def add_latency_ratios(cells, same_cell, is_baseline):
    """Each cell's p50/p99/max, and p50 from the commit returned, over the
    baseline's in the same cell: ``same_cell(cell)`` names the cell,
    ``is_baseline(cell)`` tells the baseline's."""
    bases = {same_cell(c): c for c in cells if is_baseline(c)}
    for cell in cells:
        base = bases.get(same_cell(cell), {})
        for key in ("p50_ms", "p99_ms", "max_ms"):
            cell[f"{key[:-3]}_ratio"] = ratio(cell[key], base.get(key))
        cell["from_commit_returned"]["p50_ratio"] = ratio(
            cell["from_commit_returned"]["p50_ms"],
            base.get("from_commit_returned", {}).get("p50_ms"),
        )
    return cells


# formatting -----------------------------------------------------------------


def fmt(value, digits=2):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table_lines(header, rows):
    """A plain-text table: a header, a rule, the rows, columns padded."""
    cells = [tuple(header)] + [tuple(fmt(cell) for cell in row) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for index, row in enumerate(cells):
        padded = (cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        lines.append("  ".join(padded).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return lines


def print_table(title, header, rows):
    say(f"\n{title}")
    for line in table_lines(header, rows):
        say(line)


# the machine ------------------------------------------------------------------


def _first_match(path, pattern):
    try:
        with open(path) as handle:
            match = re.search(pattern, handle.read(), re.MULTILINE)
    except OSError:
        return None
    return match.group(1).strip() if match else None


def _command_output(argv):
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (result.stdout or result.stderr).strip().splitlines()[0] or None


def machine_info(sandbox=None, odoo_version=None):
    """CPU, cores, RAM, load, PostgreSQL and PgBouncer versions, Odoo version."""
    mem_kib = _first_match("/proc/meminfo", r"^MemTotal:\s+(\d+)")
    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": _first_match("/proc/cpuinfo", r"^model name\s*:\s*(.+)$")
        or platform.processor(),
        "cores": os.cpu_count(),
        "ram_gib": round(int(mem_kib) / 1024**2, 1) if mem_kib else None,
        "load_average_at_start": [round(load, 2) for load in os.getloadavg()],
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pgbouncer": None,
        "postgresql": None,
        "odoo": odoo_version,
    }
    pgbouncer = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    version = _command_output([pgbouncer, "--version"])
    info["pgbouncer"] = version.replace("PgBouncer ", "") if version else None
    if sandbox is not None:
        rows = sandbox.postgres.execute("SHOW server_version")
        info["postgresql"] = rows[0][0]
    return info


def machine_line(machine):
    """One line naming the date and the machine, for tables and the README."""
    ram = f"{machine['ram_gib']} GiB" if machine.get("ram_gib") else "? GiB"
    load = ", ".join(str(x) for x in machine.get("load_average_at_start") or [])
    parts = [
        machine["date"][:10],
        f"{machine['cpu']}, {machine['cores']} cores, {ram}",
        f"load average at start {load}",
        f"PostgreSQL {machine.get('postgresql') or '?'}",
        f"PgBouncer {machine.get('pgbouncer') or '?'}",
    ]
    if machine.get("odoo"):
        parts.append(f"Odoo {machine['odoo']}")
    return "; ".join(parts)


# results ----------------------------------------------------------------------


def write_json(name, data, results_dir=None):
    """Write ``data`` as ``<results_dir>/<name>.json``; return the path."""
    results_dir = results_dir or RESULTS_DIR
    os.makedirs(results_dir, exist_ok=True)
    path = os.path.join(results_dir, f"{name}.json")
    with open(path, "w") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
    return path
