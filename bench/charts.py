"""PNG charts of the benchmark results, drawn with matplotlib.

* ``latency.png``: the latency distribution (CDF) per route, one panel per
  rate, without Odoo;
* ``poll_latency.png``: the same for poll mode against listen mode;
* ``odoo_latency.png``: the same through Odoo to websockets, one panel per
  cell (rate, websockets);
* ``backends.png``: PostgreSQL backends at peak per configuration (workers x
  instances), direct vs PgBouncer + addon, with PgBouncer's ceiling.

matplotlib comes from ``bench/requirements.txt`` (``bash
tools/setup-bench.sh``); without it, no chart is drawn and the run says so.
``python -m bench.charts [results dir]`` draws them again from
``summary.json``.
"""

import json
import math
import os
import sys

from .common import RESULTS_DIR, say

PERCENTS = list(range(101))


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        say("matplotlib is not installed: no charts (bash tools/setup-bench.sh)")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def _cdf_panels(pyplot, groups, title, key, path):
    """One panel per group {panel title: [(line label, quantiles_ms)]}."""
    from matplotlib import ticker

    columns = min(3, len(groups))
    rows = math.ceil(len(groups) / columns)
    figure, axes = pyplot.subplots(
        rows, columns, figsize=(4.4 * columns, 3.4 * rows), squeeze=False
    )
    flat = [axis for row in axes for axis in row]
    for axis in flat[len(groups) :]:
        axis.set_visible(False)
    for axis, (panel, lines) in zip(flat, groups.items(), strict=False):
        for label, quantiles in lines:
            points = [
                (q, p) for q, p in zip(quantiles, PERCENTS, strict=False) if q > 0
            ]
            if points:
                axis.plot(*zip(*points, strict=False), label=label)
        axis.set_xscale("log")
        axis.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axis.xaxis.set_minor_formatter(ticker.NullFormatter())
        axis.set_title(panel, fontsize=10)
        axis.set_xlabel(f"latency, ms ({key})")
        axis.grid(alpha=0.3)
        axis.set_ylim(0, 100)
        axis.set_ylabel("% of notifications")
    flat[0].legend(fontsize=8, loc="lower right")
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path


def latency_chart(pyplot, cells, results_dir):
    groups = {}
    for cell in cells:
        groups.setdefault(f"{cell['rate']}/s", []).append(
            (cell["route"], cell["quantiles_ms"])
        )
    return _cdf_panels(
        pyplot,
        groups,
        "Notification latency without Odoo, per route (CDF)",
        "COMMIT sent to listener",
        os.path.join(results_dir, "latency.png"),
    )


def odoo_latency_chart(pyplot, cells, results_dir):
    groups = {}
    for cell in cells:
        panel = f"{cell['rate']}/s, {cell['websockets']} websocket(s)"
        groups.setdefault(panel, []).append((cell["mode"], cell["quantiles_ms"]))
    return _cdf_panels(
        pyplot,
        groups,
        "Notification latency through Odoo to websockets, per mode (CDF)",
        "commit to websocket",
        os.path.join(results_dir, "odoo_latency.png"),
    )


def backends_chart(pyplot, rows, results_dir):
    configs = []
    for row in rows:
        config = (row["workers"], row["instances"])
        if config not in configs:
            configs.append(config)
    modes = list(dict.fromkeys(row["mode"] for row in rows))
    by_key = {(r["mode"], r["workers"], r["instances"]): r for r in rows}
    width = 0.8 / len(modes)
    figure, axis = pyplot.subplots(figsize=(7, 4))
    for index, mode in enumerate(modes):
        xs = [position + index * width for position in range(len(configs))]
        peaks = [by_key.get((mode, *config), {}).get("peak", 0) for config in configs]
        label = next(r["label"] for r in rows if r["mode"] == mode)
        bars = axis.bar(xs, peaks, width, label=label)
        axis.bar_label(bars, fontsize=8)
    ceilings = [
        max(
            (
                r.get("ceiling") or 0
                for r in rows
                if (r["workers"], r["instances"]) == c
            ),
            default=0,
        )
        for c in configs
    ]
    if any(ceilings):
        axis.scatter(
            [p + width * (len(modes) - 1) for p in range(len(configs))],
            ceilings,
            marker="_",
            s=400,
            color="black",
            label="PgBouncer ceiling",
        )
    axis.set_xticks(
        [p + width * (len(modes) - 1) / 2 for p in range(len(configs))],
        [f"{w} workers x {i}" for w, i in configs],
    )
    axis.set_xlabel("Odoo HTTP workers x instances")
    axis.set_ylabel("backends of role odoo (peak)")
    axis.set_title("PostgreSQL backends under load: direct vs PgBouncer + addon")
    axis.set_ylim(0, max(r["peak"] for r in rows) * 1.35)
    axis.legend(fontsize=8, loc="upper left")
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    path = os.path.join(results_dir, "backends.png")
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path


def poll_latency_chart(pyplot, cells, results_dir):
    groups = {}
    for cell in cells:
        groups.setdefault(f"{cell['rate']}/s", []).append(
            (cell["mode"], cell["quantiles_ms"])
        )
    return _cdf_panels(
        pyplot,
        groups,
        "Poll mode (250 ms) against listen mode, without Odoo",
        "COMMIT sent -> read",
        os.path.join(results_dir, "poll_latency.png"),
    )


def draw(results, results_dir=None):
    """Draw what ``results`` holds; the paths of the PNGs written."""
    results_dir = results_dir or RESULTS_DIR
    pyplot = _pyplot()
    if pyplot is None:
        return []
    os.makedirs(results_dir, exist_ok=True)
    paths = []
    if results.get("latency"):
        paths.append(latency_chart(pyplot, results["latency"], results_dir))
    if results.get("poll_latency"):
        paths.append(poll_latency_chart(pyplot, results["poll_latency"], results_dir))
    if results.get("odoo_latency"):
        paths.append(odoo_latency_chart(pyplot, results["odoo_latency"], results_dir))
    if results.get("backends"):
        paths.append(backends_chart(pyplot, results["backends"], results_dir))
    return paths


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    results_dir = argv[0] if argv else RESULTS_DIR
    with open(os.path.join(results_dir, "summary.json")) as handle:
        summary = json.load(handle)
    for path in draw(summary, results_dir):
        say(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
