"""The benchmarks run and write what the README's table is built from.

Tiny runs, on the session's sandbox; no timing is asserted here: latencies
are figures to report, not to test.
"""

import json
import os

from bench import latency, odoo_latency, poll_latency, run
from bench.common import machine_info, percentile, write_json

CELL_KEYS = {
    "route",
    "rate",
    "sent",
    "received",
    "lost",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "p50_ratio",
    "p99_ratio",
    "from_commit_returned",
    "quantiles_ms",
}


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile([7], 0.99) == 7
    assert percentile([], 0.5) is None


def test_latency_bench_tiny_run_writes_its_json(sandbox, tmp_path):
    cells = latency.run(sandbox, rates=(200,), counts=20)
    path = write_json(
        "latency",
        {"machine": machine_info(sandbox), "cells": cells},
        results_dir=str(tmp_path),
    )
    with open(path) as handle:
        data = json.load(handle)
    assert data["machine"]["postgresql"]
    assert data["machine"]["cores"] >= 1
    assert [cell["route"] for cell in data["cells"]] == [
        route.key for route in latency.ROUTES
    ]
    for cell in data["cells"]:
        assert CELL_KEYS <= set(cell)
        assert (cell["rate"], cell["sent"], cell["received"], cell["lost"]) == (
            200,
            20,
            20,
            0,
        )
        assert len(cell["quantiles_ms"]) == 101
        assert cell["quantiles_ms"] == sorted(cell["quantiles_ms"])
    baseline = data["cells"][0]
    assert baseline["route"] == latency.BASELINE
    assert baseline["p50_ratio"] == 1.0
    latency.report(data["cells"], data["machine"])
    lines = run.tables_text({**data["machine"], "duration_s": 1}, {"latency": cells})
    assert any(line.startswith("addon ") for line in lines)


def test_readme_results_block_is_replaced(tmp_path):
    """As bench/README.rst: the chart paths are relative to the README."""
    readme = tmp_path / "README.rst"
    readme.write_text(
        "Title\n=====\n\n.. bench-results-begin\n\nold\n\n"
        ".. bench-results-end\n\nAfter\n"
    )
    lines = ["2026-01-01; a machine", "", "route  p50 ms", "-----  ------"]
    chart = os.path.join(tmp_path, "results", "latency.png")
    assert run.update_readme(lines, [chart], readme=str(readme))
    text = readme.read_text()
    assert "old" not in text
    assert "    route  p50 ms" in text
    assert ".. image:: results/latency.png" in text
    assert text.startswith("Title\n") and text.endswith("After\n")
    assert run.update_readme(lines, [], readme=str(readme))  # markers kept


def test_the_results_go_to_bench_readme():
    assert run.README == os.path.join(run.REPO_ROOT, "bench", "README.rst")
    chart = os.path.join(run.RESULTS_DIR, "latency.png")
    block = run.readme_block([], [chart], os.path.dirname(run.README))
    assert ".. image:: results/latency.png" in block


def test_a_missing_readme_is_left_alone(tmp_path):
    assert not run.update_readme(["a line"], [], readme=str(tmp_path / "none.rst"))


def test_odoo_latency_bench_tiny_run(sandbox, odoo_tree, odoo_database, odoo_workdir):
    """Both modes deliver every notification to every websocket (real Odoo)."""
    cells = odoo_latency.run(
        sandbox,
        odoo_tree,
        os.path.join(odoo_workdir, "bench"),
        cells=((20, 2, 10),),
        dbname=odoo_database,
    )
    assert [cell["mode"] for cell in cells] == [m.key for m in odoo_latency.MODES]
    for cell in cells:
        assert (cell["committed"], cell["deliveries"], cell["lost"]) == (10, 20, 0)
        assert len(cell["quantiles_ms"]) == 101


def test_poll_latency_tiny_run_delivers_every_row_once(sandbox):
    cells = poll_latency.run(sandbox, rates=(100,), counts=20, interval_ms=50)
    assert [cell["mode"] for cell in cells] == ["listen", "poll"]
    for cell in cells:
        assert (cell["sent"], cell["received"], cell["lost"], cell["twice"]) == (
            20,
            20,
            0,
            0,
        )
        assert len(cell["quantiles_ms"]) == 101
    listen, poll = cells
    assert listen["queries_per_s"] == 0
    assert poll["queries_per_s"] > 0
    assert poll["target_p50_ms"] == 45
    lines = run.tables_text(
        {**machine_info(sandbox), "duration_s": 1}, {"poll_latency": cells}
    )
    assert any(line.startswith("poll ") for line in lines)
