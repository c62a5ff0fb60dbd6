"""The `chem-persistence` command: the composition root (the only place that wires it all)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any
from uuid import UUID

from rq import Queue

from producer.config import QueueSettings
from producer.jobs import ingest_queue
from producer.keys import Keys
from producer.scripts import Scripts
from worker.deadletters import DeadLetters, StaleCommand
from worker.runtime import starter
from worker.version import __version__

log = logging.getLogger("chem_persistence")

ENV_LOG_LEVEL = "CHEM_LOG_LEVEL"
#: Entry-point group through which the lab distribution adds its commands.
LAB_COMMANDS_GROUP = "chem_persistence.commands"


def _flow(text: str) -> str:
    try:
        return str(UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"FLOW: {text!r} is not a UUID") from None


def _dead_letters() -> tuple[DeadLetters, Queue]:
    settings = QueueSettings.from_env()
    redis = settings.redis()
    queue = ingest_queue(redis, settings.queue_name)
    keys = Keys(settings.key_prefix, settings.shards)
    return DeadLetters(redis, keys, Scripts.register(redis), starter(queue)), queue


def cmd_migrate(args: argparse.Namespace) -> int:
    from eventlog import migrate
    from eventlog.config import DatabaseSettings, redact_url

    if args.sql:
        print(migrate.offline_sql())
        return 0
    settings = DatabaseSettings.from_env()
    migrate.upgrade(settings.url)
    print(f"migrated {redact_url(settings.url)} to {migrate.current(settings.url)}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from worker.service import run_worker

    run_worker(burst=args.burst, fork=args.fork, name=args.name)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from worker.status import collect, render

    dlq, queue = _dead_letters()
    status = collect(dlq.redis, dlq.keys, queue, dlq)
    print(json.dumps(status.as_dict(), indent=2) if args.json else render(status))
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    dlq, _ = _dead_letters()
    if args.action == "list":
        parked = dlq.parked()
        if not parked:
            print("no parked flows")
        for p in parked:
            print(f"{p.flow_id}  dead={p.dead_letters} queued={p.queued}  {p.reason[:100]}")
        return 0
    if args.flow is None:
        print(
            f"dlq {args.action}: give the FLOW id (see `chem-persistence dlq list`)",
            file=sys.stderr,
        )
        return 2
    if args.action == "show":
        records = dlq.show(args.flow)
        print(json.dumps(records, indent=2, ensure_ascii=False) if records else "no dead letters")
        return 0 if records else 1
    try:
        if args.action == "retry":
            n = dlq.retry(args.flow)
            print(f"flow {args.flow}: {n} dead letter(s) put back in position order; resumed")
            return 0
        if not args.yes:
            print("dlq discard deletes events for good: add --yes to confirm", file=sys.stderr)
            return 2
        n = dlq.discard(args.flow)
        print(f"flow {args.flow}: {n} dead letter(s) discarded (logged); flow resumed")
        return 0
    except (LookupError, StaleCommand) as exc:
        print(str(exc), file=sys.stderr)
        return 1


def cmd_replay(args: argparse.Namespace) -> int:
    from eventlog.config import DatabaseSettings
    from eventlog.pool import open_pool
    from eventlog.store import PgEventStore
    from worker.replay_view import as_json, render, replay

    settings = DatabaseSettings.from_env()
    with open_pool(settings) as pool:
        events = PgEventStore(pool).list(UUID(args.flow))
    instance = replay(events)
    print(
        json.dumps(as_json(events, instance), indent=2) if args.json else render(events, instance)
    )
    return 0 if events else 1


def _lab_commands() -> list[Callable[[Any], None]]:
    """The lab's commands (demo, bench, chaos), when the lab distribution is installed.

    They plug in through an entry point, so this production module never imports the lab.
    """
    found = []
    for ep in entry_points(group=LAB_COMMANDS_GROUP):
        try:
            found.append(ep.load())
        except Exception as exc:  # a broken lab must never take the worker's commands down
            print(f"chem-persistence: lab commands unavailable ({exc})", file=sys.stderr)
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chem-persistence",
        description="Queue-driven ingestion of chemistry-workflow events into PostgreSQL.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (repeat for more)"
    )
    parser.add_argument("-q", "--quiet", action="count", default=0, help="log less")
    parser.add_argument("--version", action="version", version=f"chem-persistence {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("migrate", help="apply pending migrations (DATABASE_URL)")
    p.add_argument("--sql", action="store_true", help="print the SQL instead; needs no database")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("worker", help="run a sweep worker on the chem-ingest queue")
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    p.add_argument("--fork", action="store_true", help="run each job in a forked child")
    p.add_argument("--name", help="worker name shown in rq-dashboard")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("status", help="backlog, ready, leased and parked flows, sweeps, workers")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "dlq", help="dead letters: list | show FLOW | retry FLOW | discard FLOW --yes"
    )
    p.add_argument("action", choices=["list", "show", "retry", "discard"])
    p.add_argument("flow", nargs="?", type=_flow)
    p.add_argument("--yes", action="store_true", help="confirm a discard")
    p.set_defaults(func=cmd_dlq)

    p = sub.add_parser("replay", help="read a flow from PostgreSQL and show its replayed state")
    p.add_argument("flow", type=_flow)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_replay)

    for register in _lab_commands():
        register(sub)
    return parser


def log_level(configured: str | None, command: str, verbose: int, quiet: int) -> int:
    """``CHEM_LOG_LEVEL`` (a level name), else INFO for the worker and WARNING for the
    one-shot commands (their output is the result); each -v one step more, each -q one less."""
    if configured:
        level = logging.getLevelName(configured.strip().upper())
        if not isinstance(level, int):
            raise ValueError(
                f"{ENV_LOG_LEVEL}: {configured!r} is not DEBUG, INFO, WARNING or ERROR"
            )
    else:
        level = logging.INFO if command == "worker" else logging.WARNING
    return min(max(level + 10 * (quiet - verbose), logging.DEBUG), logging.CRITICAL)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        level = log_level(os.environ.get(ENV_LOG_LEVEL), args.command, args.verbose, args.quiet)
    except ValueError as exc:
        print(f"chem-persistence: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(
            "chem-persistence: interrupted; what this command started has been stopped",
            file=sys.stderr,
        )
        return 130
    except ValueError as exc:  # configuration and input errors name the variable and the value
        print(f"chem-persistence: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
