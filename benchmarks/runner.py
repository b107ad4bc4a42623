"""Run benchmark suites; write a Markdown table and a chart (PNG: bars, or the scaling suite's
log-log curves) per suite, and JSON."""

from __future__ import annotations

import json
import time
from pathlib import Path

from shared.io import atomic_write_text


def format_markdown(results) -> str:
    env = results["environment"]
    lines = [f"Environment: torch {env['torch']} ({env['torch_threads']} threads), TensorFlow {env['tensorflow']}, "
             f"Keras {env['keras']}, transformers {env['transformers']}, {env['cpu_count']} CPUs "
             f"({env.get('cpu_vector_isa', 'unknown')}), device "
             f"{env['device']}, {env['dtype']}. Matmul peak measured: {results['matmul_peak_gflops']:.1f} GFLOP/s.", ""]
    for suite, data in results["suites"].items():
        if data.get("skipped"):
            lines += [f"### {suite}", "", f"skipped: {data['skipped']}", ""]
            continue
        lines += [f"### {suite}", "", "| case | side | median (ms) | IQR (ms) | value | unit |",
                  "| --- | --- | ---: | ---: | ---: | --- |"]
        for r in data["rows"]:
            value = "" if r["value"] is None else (f"{r['value']:,}" if isinstance(r["value"], int) else f"{r['value']:.4g}")
            lines.append(f"| {r['case']} | {r['side']} | {r['median_ms']:.2f} | {r['iqr_ms']:.2f} | {value} | "
                         f"{r['unit'] or ''} |")
        if data["comparisons"]:
            lines += ["", "| comparison | ratio | target | met | note |", "| --- | ---: | ---: | :---: | --- |"]
            for c in data["comparisons"]:
                met = "" if c["met"] is None else ("yes" if c["met"] else "**no**")
                target = "" if c["target"] is None else f"≥ {c['target']:g}"
                ratio = "" if c["ratio"] is None else f"{c['ratio']:.2f}"  # None: a side that could not run
                lines.append(f"| {c['comparison']} | {ratio} | {target} | {met} | {c.get('note', '')} |")
        lines.append("")
    return "\n".join(lines)


def bar_chart(suite, rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['case']}\n{r['side']}" for r in rows]
    fig, ax = plt.subplots(figsize=(10, max(3, 0.35 * len(rows))))
    ax.barh(range(len(rows)), [r["median_ms"] for r in rows], xerr=[r["iqr_ms"] for r in rows], color="tab:blue")
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("median time (ms, log scale; bars: interquartile range)")
    ax.set_title(f"sftrl bench: {suite}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def scaling_chart(suite, rows, path):
    """Three log-log panels of the scaling suite, one line per framework: tokens/s against the
    parameters (model-size sweep) and against T (sequence-length sweep), peak memory against the
    parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import NullFormatter, ScalarFormatter

    memory_unit = next(r["unit"] for r in rows if r["quantity"] == "memory")
    panels = [("tokens/s vs parameters", "model size", "params", "tokens/s", "parameters", "tokens/s"),
              ("tokens/s vs sequence length", "sequence length", "seq", "tokens/s", "sequence length T", "tokens/s"),
              ("peak memory vs parameters", "model size", "params", "memory", "parameters", memory_unit)]
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 4.5))
    for ax, (title, sweep, x, quantity, xlabel, ylabel) in zip(axes, panels):
        for framework in dict.fromkeys(r["framework"] for r in rows):
            points = [r for r in rows if (r["sweep"], r["quantity"], r["framework"]) == (sweep, quantity, framework)]
            ax.plot([r[x] for r in points], [r["value"] for r in points], marker="o",
                    label=points[0]["side"].split(":")[0])
        ax.set_xscale("log")
        ax.set_yscale("log")
        if x == "seq":  # the lengths themselves as ticks: 64, 128, ...
            ax.set_xticks([r["seq"] for r in points])
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"sftrl bench: {suite}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


CHARTS = {"scaling": scaling_chart}  # the other suites: bar_chart


def run(suites, size="default", device="cpu", out_dir="benchmarks/results", json_path=None, log=print):
    from benchmarks import suites as available
    from benchmarks.peers import SuiteSkipped
    from benchmarks.timing import environment

    s = available.SIZES[size]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {"size": size, "environment": environment(device), "suites": {}}
    results["matmul_peak_gflops"] = available.matmul_peak_gflops(s, device)
    for name in suites:
        started = time.perf_counter()
        log(f"suite {name} ...")
        try:
            if name == "train":
                rows, comparisons = available.suite_train(s, device, results["matmul_peak_gflops"])
            else:
                rows, comparisons = available.SUITES[name](s, device)
        except SuiteSkipped as skipped:
            log(f"suite {name} skipped: {skipped}")
            results["suites"][name] = {"rows": [], "comparisons": [], "skipped": str(skipped)}
            continue
        results["suites"][name] = {"rows": rows, "comparisons": comparisons,
                                   "seconds": round(time.perf_counter() - started, 1)}
        CHARTS.get(name, bar_chart)(name, rows, out_dir / f"{name}.png")
    markdown = format_markdown(results)
    atomic_write_text(out_dir / "results.md", markdown + "\n")
    atomic_write_text(Path(json_path) if json_path else out_dir / "results.json", json.dumps(results, indent=2) + "\n")
    return results, markdown
