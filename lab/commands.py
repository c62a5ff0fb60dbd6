"""The lab's subcommands of `chem-persistence`: demo, bench, chaos.

The production command finds ``register`` through the ``chem_persistence.commands`` entry
point of the lab distribution (lab/pyproject.toml), so production code never imports the lab.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

# Each command imports its module when it runs: one lab module that does not import (a
# benchmark mid-rewrite) must not take the other commands down with it.


def cmd_demo(args: argparse.Namespace) -> int:
    from lab.demo import run_demo

    return run_demo(
        flows=args.flows,
        workers=args.workers,
        batch_size=args.batch_size,
        as_json=args.json,
        embedded=args.embedded,
        keep=args.keep,
    )


def cmd_bench(args: argparse.Namespace) -> int:
    from lab.bench import run_bench

    return run_bench(quick=args.quick, soak=args.soak, output_dir=args.output, as_json=args.json)


def cmd_chaos(args: argparse.Namespace) -> int:
    from lab.chaos import run_chaos

    return run_chaos(
        duration=args.duration,
        flows=args.flows,
        events=args.events,
        workers=args.workers,
        rate=args.rate,
        seed=args.seed,
        reply_loss=args.reply_loss,
        as_json=args.json,
    )


def register(sub: Any) -> None:
    """Add the lab's subcommands to the `chem-persistence` parser's subparsers."""
    p = sub.add_parser("demo", help="the whole pipeline end to end, with a parity check")
    p.add_argument("--flows", type=int, default=300)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument(
        "--embedded",
        action="store_true",
        help="use embedded PostgreSQL and Valkey under ./.chem/ even if local servers answer",
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the database the demo creates (its URL is printed) instead of dropping it",
    )
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser(
        "bench", help="throughput, trickle latency and costs against the alternatives"
    )
    p.add_argument("--quick", action="store_true", help="a smaller run, about 3 minutes")
    p.add_argument("--soak", action="store_true", help="add a 10-minute trickle soak (worker RSS)")
    p.add_argument("--output", type=Path, default=Path("bench-results"), help="results folder")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "chaos", help="the pipeline under load while faults are injected; counts lost events"
    )
    p.add_argument("--duration", type=float, default=600.0, help="seconds of faults (600)")
    p.add_argument("--flows", type=int, default=200)
    p.add_argument("--events", type=int, default=300, help="events per flow (300)")
    p.add_argument("--workers", type=int, default=3)
    p.add_argument(
        "--rate", type=float, default=None, help="producer events/s (default: spread over the run)"
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--reply-loss",
        type=float,
        default=0.02,
        help="share of Redis replies the proxy drops after Redis ran the command (0.02)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_chaos)
