#!/usr/bin/env python3
"""Collects benchmark results into tables and SVG plots for docs/benchmarks.md.

Subcommands:

  snapshot-workqueue RUNS.json
      Appends the medians of the last `cargo bench --bench workqueue` (read from
      target/criterion) to RUNS.json as one run.
  workqueue RUNS.json SVG
      Prints the workqueue table (medians over the runs, ratios taken within each run)
      and draws throughput against workers.
  etcd RESULT.json LATENCY_SVG LIST_SVG
      Draws the latency percentiles and the list times of a bench_etcd --json result.
  k8s RESULT.json LIST_SVG
      Draws the list times of a bench_k8s --json result.

Only the standard library is used, so the script runs wherever python3 does.
"""

import json
import math
import pathlib
import statistics
import sys

CRITERION = pathlib.Path("target/criterion")
STREAMS = ["distinct", "hot"]
CASES = ["queue", "controller", "kube_applier", "mpsc"]
WORKERS = [1, 4, 16]
LABELS = {
    "queue": "informer WorkQueue",
    "controller": "informer Controller",
    "kube_applier": "kube-runtime applier",
    "mpsc": "tokio mpsc (floor)",
}
COLORS = {
    "queue": "#1b9e77",
    "controller": "#d95f02",
    "kube_applier": "#7570b3",
    "mpsc": "#888888",
    "raw": "#7570b3",
    "pipeline": "#d95f02",
}


def snapshot_workqueue(runs_path):
    """Appends one run of events per second, keyed `stream/case/workers`."""
    run = {}
    for stream in STREAMS:
        for case in CASES:
            for workers in WORKERS:
                directory = CRITERION / f"workqueue_{stream}" / case / str(workers) / "new"
                estimates = json.loads((directory / "estimates.json").read_text())
                benchmark = json.loads((directory / "benchmark.json").read_text())
                events = benchmark["throughput"]["Elements"]
                nanos = estimates["median"]["point_estimate"]
                run[f"{stream}/{case}/{workers}"] = events / (nanos * 1e-9)
    path = pathlib.Path(runs_path)
    runs = json.loads(path.read_text()) if path.exists() else []
    runs.append(run)
    path.write_text(json.dumps(runs, indent=1))
    print(f"{runs_path}: {len(runs)} runs")


def median_ratio(runs, numerator, denominator):
    return statistics.median(run[numerator] / run[denominator] for run in runs)


def workqueue(runs_path, svg_path):
    runs = json.loads(pathlib.Path(runs_path).read_text())
    print(f"Events per second, median of {len(runs)} runs; ratios are medians of per-run ratios.\n")
    print("| keys | workers | WorkQueue | Controller | kube-runtime applier | tokio mpsc | "
          "Controller ÷ applier | WorkQueue ÷ applier | Controller ÷ mpsc |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for stream in STREAMS:
        for workers in WORKERS:
            key = lambda case: f"{stream}/{case}/{workers}"
            values = [statistics.median(run[key(case)] for run in runs) for case in CASES]
            cells = " | ".join(f"{value / 1e3:,.0f}k" for value in values)
            print(f"| {stream} | {workers} | {cells} | "
                  f"{median_ratio(runs, key('controller'), key('kube_applier')):.2f} | "
                  f"{median_ratio(runs, key('queue'), key('kube_applier')):.2f} | "
                  f"{median_ratio(runs, key('controller'), key('mpsc')):.2f} |")
    panels = []
    for stream in STREAMS:
        series = {
            case: [statistics.median(run[f"{stream}/{case}/{w}"] for run in runs) / 1e6
                   for w in WORKERS]
            for case in CASES
        }
        panels.append((f"{stream} keys", series))
    pathlib.Path(svg_path).write_text(line_panels(
        panels, [str(w) for w in WORKERS], "workers", "million events/s", log_y=True))


def etcd(result_path, latency_svg, list_svg):
    document = json.loads(pathlib.Path(result_path).read_text())
    results = document["results"]
    percentiles = ["p50", "p75", "p90", "p95", "p99", "p99.9", "max"]
    panels = []
    for case in sorted(key for key in results if key.startswith("latency/")):
        rate = case.split("/")[1]
        series = {}
        for side in ["raw", "pipeline"]:
            series[side] = [
                statistics.median(run[side]["micros"][index] for run in results[case]) / 1000
                for index in range(len(percentiles))
            ]
        panels.append((f"{rate} puts/s", series))
    if panels:
        labels = {"raw": "raw etcd-client watch", "pipeline": "informer pipeline, reconcile start"}
        pathlib.Path(latency_svg).write_text(line_panels(
            panels, percentiles, "percentile", "ms from put", log_y=True, labels=labels))

    bars = []
    for case, label, field in [
        ("list/raw/500", "raw, 500 per page", "secs"),
        ("list/raw/10000", "raw, 10,000 per page", "secs"),
        ("list/raw/25000", "raw, 25,000 per page", "secs"),
        ("list/raw/50000", "raw, 50,000 per page", "secs"),
        ("list/raw/0", "raw, unpaged", "secs"),
        ("list/pipeline/10000", "pipeline cached, 10,000 per page", "secs"),
        ("list/pipeline/10000", "pipeline reconciled, 10,000 per page", "reconciled_secs"),
        ("list/pipeline/25000", "pipeline cached, 25,000 per page", "secs"),
        ("list/pipeline/50000", "pipeline cached, 50,000 per page", "secs"),
        ("list/pipeline/0", "pipeline cached, one page", "secs"),
        ("list/pipeline/0", "pipeline reconciled, one page", "reconciled_secs"),
    ]:
        if case in results:
            bars.append((label, statistics.median(run[field] for run in results[case])))
    if bars:
        pathlib.Path(list_svg).write_text(bar_chart(
            bars, f"Initial list of {document['keys']:,} keys", "seconds"))


def k8s(result_path, list_svg):
    document = json.loads(pathlib.Path(result_path).read_text())
    results = document["results"]
    bars = []
    for page, page_label in [("500", "500 per page"), ("0", "unpaged")]:
        for reader, reader_label in [
            ("raw", "raw kube Api::list"),
            ("kube_runtime", "kube-runtime"),
            ("pipeline", "pipeline"),
        ]:
            case = f"list/{reader}/{page}"
            if case in results:
                seconds = statistics.median(run["secs"] for run in results[case])
                bars.append((f"{reader_label}, {page_label}", seconds))
    if bars:
        colors = {"raw": COLORS["mpsc"], "kube-runtime": COLORS["kube_applier"],
                  "pipeline": COLORS["pipeline"]}
        pathlib.Path(list_svg).write_text(bar_chart(
            bars, f"Initial list of {document['objects']:,} ConfigMaps", "seconds",
            colors=colors))


def escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def nice_ticks(low, high, log_y):
    if log_y:
        ticks = []
        exponent = math.floor(math.log10(low))
        while 10 ** exponent <= high * 1.0001:
            for mantissa in (1, 2, 5):
                value = mantissa * 10 ** exponent
                if low / 1.0001 <= value <= high * 1.0001:
                    ticks.append(value)
            exponent += 1
        return ticks
    step = 10 ** math.floor(math.log10(max(high - low, 1e-9)))
    if (high - low) / step < 4:
        step /= 2
    start = math.floor(low / step) * step
    return [start + i * step for i in range(int((high - start) / step) + 2)]


def line_panels(panels, x_labels, x_title, y_title, log_y=False, labels=None):
    """Draws one line chart per panel, side by side, sharing a legend."""
    labels = labels or LABELS
    width, height = 360, 260
    left, right, top, bottom = 60, 15, 30, 45
    legend_height = 22 * len(next(iter(panels))[1])
    total_width = width * len(panels)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_width}" '
             f'height="{height + legend_height}" font-family="sans-serif" font-size="12">',
             f'<rect width="100%" height="100%" fill="white"/>']
    for index, (title, series) in enumerate(panels):
        x0 = index * width
        values = [v for line in series.values() for v in line if v > 0]
        low, high = min(values), max(values)
        if log_y:
            low, high = 10 ** math.floor(math.log10(low)), 10 ** math.ceil(math.log10(high))
        else:
            low, high = 0, high * 1.1
        plot_w, plot_h = width - left - right, height - top - bottom

        def y_of(value):
            if log_y:
                fraction = (math.log10(value) - math.log10(low)) / (math.log10(high) - math.log10(low))
            else:
                fraction = (value - low) / (high - low)
            return top + plot_h * (1 - fraction)

        def x_of(position):
            return x0 + left + plot_w * (position + 0.5) / len(x_labels)

        parts.append(f'<text x="{x0 + left + plot_w / 2}" y="18" text-anchor="middle" '
                     f'font-weight="bold">{escape(title)}</text>')
        for tick in nice_ticks(low, high, log_y):
            y = y_of(tick)
            parts.append(f'<line x1="{x0 + left}" x2="{x0 + left + plot_w}" y1="{y:.1f}" '
                         f'y2="{y:.1f}" stroke="#ddd"/>')
            parts.append(f'<text x="{x0 + left - 5}" y="{y + 4:.1f}" text-anchor="end">{tick:g}</text>')
        for position, label in enumerate(x_labels):
            parts.append(f'<text x="{x_of(position):.1f}" y="{top + plot_h + 16}" '
                         f'text-anchor="middle">{escape(label)}</text>')
        parts.append(f'<text x="{x0 + left + plot_w / 2}" y="{top + plot_h + 34}" '
                     f'text-anchor="middle">{escape(x_title)}</text>')
        parts.append(f'<text transform="translate({x0 + 14},{top + plot_h / 2}) rotate(-90)" '
                     f'text-anchor="middle">{escape(y_title)}</text>')
        parts.append(f'<rect x="{x0 + left}" y="{top}" width="{plot_w}" height="{plot_h}" '
                     f'fill="none" stroke="#333"/>')
        for name, line in series.items():
            points = " ".join(f"{x_of(i):.1f},{y_of(v):.1f}" for i, v in enumerate(line) if v > 0)
            color = COLORS.get(name, "#000")
            parts.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2"/>')
            for i, v in enumerate(line):
                if v > 0:
                    parts.append(f'<circle cx="{x_of(i):.1f}" cy="{y_of(v):.1f}" r="3" fill="{color}"/>')
    for index, name in enumerate(next(iter(panels))[1]):
        y = height + 14 + 22 * index
        color = COLORS.get(name, "#000")
        parts.append(f'<line x1="{left}" x2="{left + 24}" y1="{y - 4}" y2="{y - 4}" '
                     f'stroke="{color}" stroke-width="3"/>')
        parts.append(f'<text x="{left + 30}" y="{y}">{escape(labels.get(name, name))}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def bar_chart(bars, title, unit, colors=None):
    """Draws horizontal bars with their values.

    `colors` maps label prefixes to colors; without it, labels starting with "pipeline" get the
    pipeline's color and the others the raw client's.
    """
    label_width, bar_width, row = 260, 300, 26
    height = 40 + row * len(bars) + 20
    high = max(value for _, value in bars) * 1.15
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_width + bar_width + 80}" '
             f'height="{height}" font-family="sans-serif" font-size="12">',
             f'<rect width="100%" height="100%" fill="white"/>',
             f'<text x="10" y="20" font-weight="bold">{escape(title)} ({escape(unit)})</text>']
    for index, (label, value) in enumerate(bars):
        y = 36 + row * index
        if colors:
            color = next(c for prefix, c in colors.items() if label.startswith(prefix))
        else:
            color = COLORS["pipeline"] if label.startswith("pipeline") else COLORS["raw"]
        length = bar_width * value / high
        parts.append(f'<text x="{label_width - 8}" y="{y + 15}" text-anchor="end">{escape(label)}</text>')
        parts.append(f'<rect x="{label_width}" y="{y + 2}" width="{length:.1f}" height="{row - 8}" fill="{color}"/>')
        parts.append(f'<text x="{label_width + length + 5:.1f}" y="{y + 15}">{value:.3f}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main(argv):
    commands = {
        "snapshot-workqueue": (snapshot_workqueue, 1),
        "workqueue": (workqueue, 2),
        "etcd": (etcd, 3),
        "k8s": (k8s, 2),
    }
    if len(argv) < 2 or argv[1] not in commands or len(argv) - 2 != commands[argv[1]][1]:
        print(__doc__, file=sys.stderr)
        return 2
    function, _ = commands[argv[1]]
    function(*argv[2:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
