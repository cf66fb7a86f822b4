"""``rally-metadata-meter``: the guest meter without Rally.

``script`` prints the guest probe script (run it with ``sh FILE`` inside a
guest), ``analyze`` turns a log it wrote into outages, ``compare`` says
whether a run of the Rally task got worse than a baseline.  The options and the
JSON keys are a stable interface: scripts outside this project use them.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from rally_metadata_plugin.cli import compare
from rally_metadata_plugin.core import regression
from rally_metadata_plugin.core import log_analysis as analysis
from rally_metadata_plugin.core import probe_script as script


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rally-metadata-meter",
        description="Measure metadata-service downtime from inside a guest.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    defaults = script.ProbeSettings()
    render = commands.add_parser(
        "script",
        help="print the guest probe script",
        description="Print a POSIX sh script that probes the metadata service until killed "
        "(busybox sh and dash compatible). Run it inside the guest with: sh FILE",
    )
    render.add_argument("--interval", type=_positive_float, default=defaults.interval,
                        help="seconds between probe starts (default %(default)s)")
    render.add_argument("--fast-interval", type=_positive_float,
                        default=defaults.fast_interval,
                        help="probe period while the fast flag file exists "
                             "(default %(default)s)")
    render.add_argument("--timeout", type=_positive_float, default=defaults.timeout,
                        help="total time limit of one probe in seconds (default %(default)s)")
    render.add_argument("--connect-timeout", type=_positive_float, default=None,
                        help="connect time limit of one probe (default: the smaller of "
                             f"{defaults.connect_timeout} and --timeout)")
    render.add_argument("--url", default=defaults.url,
                        help="URL to probe (default %(default)s)")
    render.add_argument("--expect", default="",
                        help="text the answer must contain (default: the guest's hostname, "
                             "read once when the script starts)")
    render.add_argument("--tool", choices=script.HTTP_TOOLS, default="auto",
                        help="HTTP client in the guest (default: busybox wget, else curl, "
                             "else wget)")
    render.add_argument("--workdir", default=defaults.workdir,
                        help="directory for the log, pid file and scratch files "
                             "(default %(default)s)")
    render.add_argument("--log", default="", help="log path (default WORKDIR/meter.log)")
    render.add_argument("--pidfile", default="", help="pid file (default WORKDIR/meter.pid)")
    render.add_argument("--duration", type=float, default=0.0,
                        help="stop by itself after this many seconds (default: run until "
                             "killed)")

    analyze = commands.add_parser(
        "analyze",
        help="analyse a meter log",
        description="Find outages in a meter log and print totals with error bounds.",
    )
    analyze.add_argument("log", help="the log file, or - for standard input")
    analyze.add_argument("--json", action="store_true", help="print one JSON object")
    analyze.add_argument("--until", type=float, default=None,
                         help="guest uptime when the log was read; an outage still going "
                              "at the end of the log counts up to it")
    regression_defaults = regression.Thresholds()
    comparison = commands.add_parser(
        "compare",
        help="compare runs of the metadata task and give a verdict",
        description="Compare each CANDIDATE run of the metadata task with BASELINE, per "
        "workload and metric: per-migration downtime, longest outage, outage count and "
        "estimated pause. Exit status: 0 no regression, 1 regression, 2 unusable input.",
    )
    comparison.add_argument("baseline", metavar="BASELINE",
                            help="task UUID in the local Rally database, or a file from "
                                 "'rally task export --type json'")
    comparison.add_argument("candidates", metavar="CANDIDATE", nargs="+",
                            help="task UUID or JSON export, compared with BASELINE")
    comparison.add_argument("--abs-threshold", type=float, default=regression_defaults.absolute,
                            help="smallest change of a median, in seconds, that counts "
                                 "(default %(default)s)")
    comparison.add_argument("--rel-threshold", type=float, default=regression_defaults.relative,
                            help="smallest relative change of a median that counts "
                                 "(default %(default)s)")
    comparison.add_argument("--confidence", type=float, default=regression_defaults.confidence,
                            help="confidence level of the interval (default %(default)s)")
    comparison.add_argument("--gate", action="append", choices=sorted(compare.METRICS_BY_NAME),
                            help="metric whose regression sets exit status 1; repeat for more "
                                 f"(default: {', '.join(compare.DEFAULT_GATES)})")
    comparison.add_argument("--rally-config", default=None,
                            help="rally.conf for reading task UUIDs (default: Rally's own "
                                 "search path)")
    comparison.add_argument("--json", action="store_true", help="print one JSON object")
    comparison.add_argument("--html", metavar="PATH", default=None,
                            help="also write a self-contained HTML page with pictures")
    return parser


def _compare(args: argparse.Namespace) -> int:
    if not 0 < args.confidence < 1:
        print("rally-metadata-meter: --confidence must be between 0 and 1", file=sys.stderr)
        return 2
    thresholds = regression.Thresholds(absolute=args.abs_threshold,
                                       relative=args.rel_threshold,
                                       confidence=args.confidence)
    try:
        baseline, *candidates = compare.load_runs([args.baseline, *args.candidates],
                                                  args.rally_config)
        result = compare.compare_runs(baseline, candidates, thresholds,
                                      args.gate or compare.DEFAULT_GATES)
    except compare.UnusableInput as error:
        print(f"rally-metadata-meter: {error}", file=sys.stderr)
        return 2
    if args.json:
        json.dump(compare.to_json(result), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(compare.format_text(result))
    if args.html:
        from rally_metadata_plugin.cli import compare_html

        with open(args.html, "w", encoding="utf-8") as page:
            page.write(compare_html.render(result))
        if not args.json:
            print(f"page: {args.html}")
    return result.exit_status


def _settings(args: argparse.Namespace) -> script.ProbeSettings:
    connect = args.connect_timeout
    if connect is None:
        connect = min(script.ProbeSettings.connect_timeout, args.timeout)
    return script.ProbeSettings(
        url=args.url, expect=args.expect, interval=args.interval,
        fast_interval=args.fast_interval, connect_timeout=connect, timeout=args.timeout,
        tool=args.tool, workdir=args.workdir, log=args.log, pidfile=args.pidfile,
        duration=args.duration,
    )


def format_report(result: analysis.Analysis, log: analysis.MeterLog) -> str:
    """The analysis as text for people."""
    lines = []
    if log.fatal:
        lines.append(f"meter gave up: {log.fatal}")
    period = "n/a" if result.period is None else f"{result.period:.3f} s"
    lines.append(
        f"probes: {result.successes} ok, {result.failures} failed, period {period}, "
        f"{result.skipped_lines} unreadable line(s) skipped"
    )
    lines.append(
        f"downtime: {result.downtime:.2f} s (between {result.downtime_lower:.2f} and "
        f"{result.downtime_upper:.2f} s) in {len(result.outages)} outage(s), "
        f"longest {result.max_outage:.2f} s"
    )
    for number, outage in enumerate(result.outages, 1):
        state = " ONGOING" if outage.ongoing else ""
        why = ", ".join(f"{analysis.describe_reason(r)} x{n}" for r, n in outage.reasons)
        lines.append(
            f"  #{number}: {outage.start:.2f} -> {outage.end:.2f}  "
            f"{outage.duration:.2f} s +/- {outage.error:.2f}{state}  [{why}]"
        )
    if result.rate_limited:
        lines.append("note: HTTP 429 seen: neutron metadata rate limiting; probe less often")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "compare":
        return _compare(args)
    if args.command == "script":
        try:
            settings = _settings(args)
        except ValueError as error:
            parser.error(str(error))
        sys.stdout.write(script.render_probe_script(settings))
        return 0
    try:
        if args.log == "-":
            text = sys.stdin.read()
        else:
            with open(args.log, encoding="utf-8", errors="replace") as stream:
                text = stream.read()
    except OSError as error:
        print(f"rally-metadata-meter: cannot read {args.log}: {error.strerror}", file=sys.stderr)
        return 2
    log = analysis.parse_log(text)
    result = analysis.analyze(log, until=args.until)
    if args.json:
        document = result.to_dict()
        document["fatal"] = log.fatal
        json.dump(document, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_report(result, log))
    return 0


if __name__ == "__main__":
    sys.exit(main())
