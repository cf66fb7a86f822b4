"""One self-contained HTML page for a comparison: verdicts and pictures.

The figures are drawn with matplotlib (the optional ``compare`` extra) as
inline SVG, so the page opens offline, has no scripts and needs nothing
but the file.
"""

from __future__ import annotations

import html
import io
import random

from rally_metadata_plugin.cli import compare
from rally_metadata_plugin.core import regression

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #bbb; padding: 0.3em 0.6em; text-align: right; }
th { background: #eee; } td.text { text-align: left; }
.regression { background: #f8d0d0; font-weight: bold; }
.improvement { background: #d0f0d0; font-weight: bold; }
.verdict { font-size: 1.4em; }
figure { display: inline-block; margin: 0 1em 1em 0; vertical-align: top; }
"""


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("--html needs matplotlib: pip install 'rally-metadata-plugin[compare]'")
    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def _ticker():
    from matplotlib import ticker

    return ticker


def _svg(figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _distribution(pyplot, runs, key: str, metric: compare.Metric) -> str:
    """Box plot with every migration drawn on top, one column per run."""
    figure, axes = pyplot.subplots(figsize=(6, 4))
    samples = [run.workloads[key].values(metric) if key in run.workloads else [] for run in runs]
    axes.boxplot([s or [float("nan")] for s in samples], showfliers=False)
    jitter = random.Random(0)
    for position, values in enumerate(samples, 1):
        xs = [position + jitter.uniform(-0.12, 0.12) for _ in values]
        axes.scatter(xs, values, s=14, alpha=0.7, zorder=3)
    axes.set_xticks(range(1, len(runs) + 1), [run.label for run in runs], rotation=15)
    axes.set_ylabel(f"{metric.title} ({metric.unit})" if metric.unit else metric.title)
    axes.set_title(f"{metric.title}: every migration")
    axes.grid(axis="y", alpha=0.3)
    svg = _svg(figure)
    pyplot.close(figure)
    return svg


def _by_index(pyplot, runs, key: str, metric: compare.Metric) -> str:
    """Values by the migration's position in the loop: the first often differs."""
    ticker = _ticker()
    figure, axes = pyplot.subplots(figsize=(6, 4))
    for offset, run in enumerate(runs):
        if key not in run.workloads:
            continue
        grouped = run.workloads[key].by_index(metric)
        shift = (offset - (len(runs) - 1) / 2) * 0.08
        for index, values in grouped.items():
            axes.scatter([index + shift] * len(values), values, s=14, alpha=0.6,
                         color=f"C{offset}")
        indexes = sorted(grouped)
        medians = [regression.Summary.of(grouped[i]).median for i in indexes]
        axes.plot([i + shift for i in indexes], medians, marker="o", color=f"C{offset}",
                  label=f"{run.label} (median)")
    axes.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    axes.set_xlabel("migration number within the iteration")
    axes.set_ylabel(f"{metric.title} ({metric.unit})" if metric.unit else metric.title)
    axes.set_title(f"{metric.title} by migration number")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    svg = _svg(figure)
    pyplot.close(figure)
    return svg


def _cell(value, css: str = "") -> str:
    cls = f' class="{css}"' if css else ""
    return f"<td{cls}>{html.escape(str(value))}</td>"


def _table(result: compare.Report) -> str:
    rows = []
    for c in result.comparisons:
        r = c.result
        change = "n/a" if r.change is None else f"{r.change:+.3f}"
        interval = "n/a" if r.interval is None else f"[{r.interval[0]:+.3f}, {r.interval[1]:+.3f}]"
        verdict_css = {regression.REGRESSION: "regression",
                       regression.IMPROVEMENT: "improvement"}.get(r.verdict, "")
        median = lambda s: "-" if s.median is None else f"{s.median:.3f}"  # noqa: E731
        p95 = lambda s: "-" if s.p95 is None else f"{s.p95:.3f}"  # noqa: E731
        rows.append("<tr>" + "".join([
            _cell(c.workload, "text"), _cell(c.metric.title, "text"), _cell(c.candidate, "text"),
            _cell(r.baseline.count), _cell(median(r.baseline)), _cell(p95(r.baseline)),
            _cell(r.candidate.count), _cell(median(r.candidate)), _cell(p95(r.candidate)),
            _cell(change), _cell(interval),
            _cell(r.verdict + ("" if c.gating else " (not gating)"), verdict_css),
            _cell(r.reason, "text"),
        ]) + "</tr>")
    head = ("<tr><th>workload</th><th>metric</th><th>candidate</th><th>n base</th>"
            "<th>median base</th><th>p95 base</th><th>n cand</th><th>median cand</th>"
            "<th>p95 cand</th><th>change</th><th>interval</th><th>verdict</th><th>why</th></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def render(result: compare.Report) -> str:
    pyplot = _pyplot()
    runs = [result.baseline, *result.candidates]
    t = result.thresholds
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        "<title>Metadata downtime: regression check</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Metadata downtime during live migration: regression check</h1>",
        f"<p class='verdict'>Verdict: <span class='{result.verdict.split()[0]}'>"
        f"{html.escape(result.verdict)}</span></p>",
        "<p>Baseline: " + html.escape(f"{result.baseline.label} (task {result.baseline.task_uuid})")
        + "<br>Candidates: " + html.escape(", ".join(f"{c.label} (task {c.task_uuid})"
                                                     for c in result.candidates)) + "</p>",
        f"<p>Change is the difference of medians (candidate − baseline) with a {t.confidence:.0%} "
        f"percentile-bootstrap interval ({t.resamples} resamples). A regression needs the "
        f"interval above 0 and a change of at least {t.absolute:g} s (1 outage for counts) and "
        f"{t.relative:.0%}. Gating metrics decide the exit status.</p>",
        _table(result),
    ]
    for key in result.baseline.workloads:
        parts.append(f"<h2>{html.escape(key)}</h2>")
        for run in runs:
            workload = run.workloads.get(key)
            if workload and workload.sla_failures:
                parts.append("<p>SLA breaches in " + html.escape(run.label) + ": "
                             + html.escape("; ".join(workload.sla_failures)) + "</p>")
        for metric in (compare.METRICS_BY_NAME["downtime"], compare.METRICS_BY_NAME["max_outage"]):
            parts.append(f"<figure>{_distribution(pyplot, runs, key, metric)}</figure>")
        network = compare.METRICS_BY_NAME["network_downtime"]
        if any(run.workloads[key].values(network) for run in runs if key in run.workloads):
            parts.append(f"<figure>{_distribution(pyplot, runs, key, network)}</figure>")
        parts.append(f"<figure>{_by_index(pyplot, runs, key, compare.METRICS_BY_NAME['downtime'])}"
                     "</figure>")
    parts.append("</body></html>")
    return "\n".join(parts)
