"""`pacsbench run`: run a scenario against its target and write a run folder.

main() has already patched the process with gevent (locust runs on it) before this
command imports anything that opens a socket or starts a thread.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bench.common.errors import UserError

if TYPE_CHECKING:  # for the annotation only: a verb imports what it needs when it runs
    from bench.results.run_record import RunRecord

EPILOG_RUN = """examples:
  pacsbench run scenarios/smoke.toml           # tiny studies into the reference archive, 5 s
  pacsbench run scenarios/demo.toml --results /tmp/results
  pacsbench run scenarios/papers-day.toml --web --workers 2   # watch it at http://127.0.0.1:8089/
The last line printed is the run folder; pass it to `pacsbench report`."""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "run",
        help="run a scenario: start the target, send load with locust, write a run folder",
        description="Run a benchmark scenario (TOML): prepare the study pool (cached), start the load processes, "
        "start or reach the target, prefill it, run the scenario's locust users (modalities, reading workstations, "
        "query, echo) for its duration or shape, and write results/<run-id>/ with run.json, samples.csv, sent.csv "
        "and locust's CSV statistics.",
        epilog=EPILOG_RUN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scenario", type=Path, help="scenario file, e.g. scenarios/smoke.toml")
    p.add_argument("--results", type=Path, default=Path("results"), help="where run folders go (default ./results)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--workers",
        type=int,
        nargs="?",
        const=os.cpu_count() or 1,
        default=0,
        metavar="N",
        help="run locust as master + N local worker processes (--workers alone, after the scenario: "
        "one per core; default 0: users run in this process)",
    )
    p.add_argument(
        "--remote-workers",
        type=int,
        default=0,
        metavar="M",
        help="also wait for M workers joining from other machines (pacsbench worker --master HOST)",
    )
    p.add_argument(
        "--master-bind",
        default=None,
        metavar="HOST",
        help="address the master listens on for workers (default 127.0.0.1; 0.0.0.0 with --remote-workers)",
    )
    p.add_argument(
        "--master-port",
        type=int,
        default=None,
        metavar="PORT",
        help="port the master listens on (default: any free port; 5557 with --remote-workers)",
    )
    p.add_argument(
        "--workers-timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="how long workers may take to join and load the study pool (default 120)",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="after the load, retrieve every acknowledged instance and compare it with what was sent",
    )
    p.add_argument(
        "--verify-protocol",
        choices=("dimse", "dicomweb"),
        help="how --verify (implied) retrieves: by C-GET (dimse, the default) or by QIDO-RS and WADO-RS at the "
        "archive's DICOMweb base URL (dicomweb: the reference archive then serves DICOMweb, natively or in its "
        "guest). A guest's data goes with it at the end of the run, so this is how a guest's run is verified "
        "by WADO-RS",
    )
    add_web_options(p)
    p.set_defaults(func=cmd_run)


def add_web_options(p) -> None:
    """--web and its address and login (run and matrix)."""
    web = p.add_argument_group(
        "live web UI",
        # line breaks of its own: the verb's formatter (RawDescriptionHelpFormatter) keeps them as written
        "locust's web UI shows the run as it goes: requests/s, response times and failures per DICOM\n"
        "operation, charts, and a stop button that ends the run as Ctrl-C does; pacsbench's live page at\n"
        "/pacsbench/live adds instances/s, frames/s and MB/s per user type, the target's resources, faults\n"
        "and the bounded-by verdict so far. The run starts by itself; the UI appears when the load begins.",
    )
    web.add_argument("--web", action="store_true", help="serve locust's web UI while the scenario runs")
    web.add_argument(
        "--web-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address the web UI listens on (default 127.0.0.1; any other needs --web-auth)",
    )
    web.add_argument("--web-port", type=int, default=8089, metavar="PORT", help="its port (default 8089)")
    web.add_argument(
        "--web-auth",
        default=None,
        metavar="USER:PASSWORD",
        help=f"a login page for the web UI with this user and password (better: the environment variable "
        f"{WEB_AUTH_VARIABLE}, which keeps the password off the command line; run.json never records it)",
    )


WEB_AUTH_VARIABLE = "PACSBENCH_WEB_AUTH"


def web_settings(args):
    """The web UI's settings from --web*, or None without --web; a bad address or login is a one-line error."""
    if not args.web:
        if args.web_auth or args.web_host != "127.0.0.1" or args.web_port != 8089:
            raise UserError("--web-host, --web-port and --web-auth need --web")
        return None
    from bench.load.web import web_settings as make

    return make(args.web_host, args.web_port, args.web_auth or os.environ.get(WEB_AUTH_VARIABLE) or None)


def _processes(args):
    from bench.runs.scenario_run import Processes

    if args.workers < 0 or args.remote_workers < 0:
        raise UserError("--workers and --remote-workers must be 0 or more")
    remote = args.remote_workers > 0
    return Processes(
        args.workers,
        args.remote_workers,
        args.master_bind or ("0.0.0.0" if remote else "127.0.0.1"),
        args.master_port if args.master_port is not None else (5557 if remote else 0),
        args.workers_timeout,
    )


def _run_lines(s: dict, record: RunRecord) -> list[str]:
    """Per user type figures, steps, and the headline (last)."""
    lines = []
    for user_type, t in s["user_types"].items():
        lines.append(
            f"  {user_type or '?'}: {t['requests']} requests, {t['failed']} failed, {t['instances_per_s']:.2f} "
            f"instances/s, {t['frames_per_s']:.1f} frames/s, {t['mb_per_s']:.1f} MB/s"
        )
    for operation, t in record.suboperations.items():
        lines.append(
            f"  {operation}: {t.requests} requests, sub-operations {t.completed} completed, "
            f"{t.failed} failed, {t.warning} warning; {t.arrived} instances arrived"
        )
    for step in record.steps or []:
        lines.append(
            f"  step {step.users:>3} users: {step.instances_per_s:.2f} instances/s, "
            f"{step.frames_per_s:.1f} frames/s, {step.mb_per_s:.1f} MB/s, "
            f"C-STORE p50 {step.c_store_p50_ms} ms"
        )
    lines.append(
        f"{s['instances']} instances acknowledged in {s['window_seconds']:.1f} s: "
        f"{s['instances_per_s']:.2f} instances/s, {s['frames_per_s']:.1f} frames/s, "
        f"{s['mb_per_s']:.1f} MB/s, {s['failures']} failed requests"
    )
    return lines


def cmd_run(args) -> int:
    from bench.runs.scenario_run import run_scenario  # imports locust first

    run_dir, record = run_scenario(
        args.scenario,
        args.results,
        progress=not args.no_progress,
        processes=_processes(args),
        verify=args.verify or args.verify_protocol is not None,
        verify_protocol=args.verify_protocol or "dimse",
        web=web_settings(args),
    )
    from bench.report.page import load_samples, summarize

    try:
        s = summarize(load_samples(run_dir))
        print("\n".join(_run_lines(s, record)))
        failed, errors = s["failures"], s["failures_by_error"]
    except UserError as exc:
        print(f"pacsbench: warning: {exc}", file=sys.stderr)
        failed, errors = 1, {}
    if failed:
        common = f" (most frequent: {max(errors, key=errors.get)})" if errors else ""
        print(f"pacsbench: warning: {failed} requests failed{common}; see {run_dir / 'samples.csv'}", file=sys.stderr)
    print(run_dir)
    verified = record.verify.ok if record.verify else True
    return 1 if record.status != "completed" or not verified else 0
