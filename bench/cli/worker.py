"""`pacsbench worker`: join a run's load from this machine as a locust worker.

main() has already patched the process with gevent before this command imports locust.
"""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "worker",
        help="join a run's load from this machine as a locust worker",
        description="Connect to a `pacsbench run --remote-workers M` master, receive the scenario, load the study "
        "pool (synthesized here if this machine's cache lacks it), and run the users the master assigns. The "
        "samples travel to the master's run folder.",
    )
    p.add_argument("--master", required=True, metavar="HOST", help="the master's address")
    p.add_argument("--master-port", type=int, default=5557, help="the master's port (default 5557)")
    p.add_argument("--join-timeout", type=float, default=60.0, help="seconds to wait for the master (default 60)")
    p.set_defaults(func=cmd_worker)


def cmd_worker(args) -> int:
    from bench.load.worker import run_worker  # imports locust first

    return run_worker(args.master, args.master_port, args.join_timeout)
