"""The `chem-persistence` command: the composition root (the only place that wires it all)."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any
from uuid import UUID

import psycopg
import redis.exceptions
from rq import Queue

from chem_persistence.eventlog.config import DEFAULT_DATABASE_URL, redact_text, redact_url
from chem_persistence.producer.config import DEFAULT_REDIS_URL, QueueSettings
from chem_persistence.producer.jobs import ingest_queue
from chem_persistence.producer.keys import Keys
from chem_persistence.producer.scripts import Scripts
from chem_persistence.worker import logs
from chem_persistence.worker.dashboard import command as dashboard_command
from chem_persistence.worker.deadletters import DeadLetters, StaleCommand
from chem_persistence.worker.runtime import starter
from chem_persistence.worker.version import __version__

log = logging.getLogger("chem_persistence")

ENV_LOG_LEVEL = "CHEM_LOG_LEVEL"
#: Exit codes: 0 fine, 1 unhealthy (status) or nothing found, 2 bad input or settings,
#: 3 a server could not be reached, 130 interrupted.
EXIT_UNHEALTHY = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
DEFAULT_MAX_BACKLOG_AGE_SECONDS = 300.0
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
    from chem_persistence.eventlog import migrate
    from chem_persistence.eventlog.config import DatabaseSettings, redact_url

    if args.sql:
        print(migrate.offline_sql())
        return 0
    settings = DatabaseSettings.from_env()
    before = migrate.current(settings.url)
    migrate.upgrade(settings.url)
    after = migrate.current(settings.url)
    if before == after:
        print(f"{redact_url(settings.url)} is already at {after}: nothing to do")
    else:
        print(f"migrated {redact_url(settings.url)} from {before or 'an empty schema'} to {after}")
    if args.worker_role:
        from chem_persistence.eventlog.config import read_password_file
        from chem_persistence.eventlog.roles import ensure_login_role

        password = None
        if args.worker_password_file:
            password = read_password_file(args.worker_password_file, "--worker-password-file")
        done = ensure_login_role(settings.url, args.worker_role, password)
        what = "created" if done.created else "checked"
        secret = ", password set" if done.password_set else ""
        print(f"role {done.role} {what}: LOGIN, member of chem_app{secret}")
    elif args.worker_password_file:
        print("migrate: --worker-password-file needs --worker-role", file=sys.stderr)
        return EXIT_USAGE
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from chem_persistence.worker.service import run_worker

    run_worker(burst=args.burst, fork=args.fork, name=args.name)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from chem_persistence.worker.status import collect, health, render

    dlq, queue = _dead_letters()
    status = collect(dlq.redis, dlq.keys, queue, dlq)
    problems = health(status, args.max_age)
    if args.json:
        print(json.dumps({**status.as_dict(), "problems": problems}, indent=2))
    else:
        print(render(status))
        for problem in problems:
            print(f"UNHEALTHY: {problem}")
    return EXIT_UNHEALTHY if problems else 0


def cmd_dlq(args: argparse.Namespace) -> int:
    dlq, _ = _dead_letters()
    if args.action == "list":
        parked = dlq.parked()
        if args.json:
            print(json.dumps([p.as_dict() for p in parked], indent=2))
            return 0
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
    from chem_persistence.eventlog.config import DatabaseSettings
    from chem_persistence.eventlog.pool import open_pool
    from chem_persistence.eventlog.store import PgEventStore
    from chem_persistence.worker.replay_view import as_json, render, replay

    settings = DatabaseSettings.from_env()
    with open_pool(settings) as pool:
        events = PgEventStore(pool).list(UUID(args.flow))
    instance = replay(events)
    print(
        json.dumps(as_json(events, instance), indent=2) if args.json else render(events, instance)
    )
    return 0 if events else 1


def cmd_dashboard(args: argparse.Namespace) -> int:
    return dashboard_command.run(args)


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
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("migrate", help="apply pending migrations (DATABASE_URL)")
    p.add_argument("--sql", action="store_true", help="print the SQL instead; needs no database")
    p.add_argument(
        "--worker-role",
        metavar="ROLE",
        help="then make ROLE a LOGIN member of chem_app (created if missing; idempotent)",
    )
    p.add_argument(
        "--worker-password-file",
        metavar="PATH",
        help="--worker-role's password, read from this file (sent only as a SCRAM verifier)",
    )
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("worker", help="run a sweep worker on the chem-ingest queue")
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    p.add_argument("--fork", action="store_true", help="run each job in a forked child")
    p.add_argument("--name", help="worker name shown in rq-dashboard")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser(
        "status",
        help="backlog, ready, leased and parked flows, sweeps, workers;"
        " exit 1 when flows are parked or the backlog is older than --max-age",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--max-age",
        type=float,
        default=DEFAULT_MAX_BACKLOG_AGE_SECONDS,
        help="seconds a flow may wait for a sweep before the status is unhealthy (300)",
    )
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "dlq", help="dead letters: list | show FLOW | retry FLOW | discard FLOW --yes"
    )
    p.add_argument("action", choices=["list", "show", "retry", "discard"])
    p.add_argument("flow", nargs="?", type=_flow)
    p.add_argument("--yes", action="store_true", help="confirm a discard")
    p.add_argument("--json", action="store_true", help="dlq list: as JSON")
    p.set_defaults(func=cmd_dlq)

    p = sub.add_parser("replay", help="read a flow from PostgreSQL and show its replayed state")
    p.add_argument("flow", type=_flow)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser(
        "dashboard",
        help="the operator's web app: backlog, parked flows, dlq retry/discard, rq-dashboard",
    )
    dashboard_command.add_arguments(p)
    p.set_defaults(func=cmd_dashboard)

    for register in _lab_commands():
        register(sub)
    return parser


def explain(exc: BaseException) -> tuple[str, int]:
    """One or two lines an operator can act on, naming the setting, and the exit code."""
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        url = redact_url(os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL)
        return (
            f"cannot reach Redis at {url} (REDIS_URL): {exc}\n"
            "  is Redis running, and is REDIS_URL right?",
            EXIT_UNREACHABLE,
        )
    if isinstance(exc, psycopg.OperationalError):
        url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
        text = redact_text(str(exc), url).strip().splitlines()
        first = text[0] if text else type(exc).__name__
        hint = "is PostgreSQL running, and is DATABASE_URL right?"
        if "does not exist" in first:
            hint = "create the database (createdb) or point DATABASE_URL at one that exists"
        return (
            f"cannot use PostgreSQL at {redact_url(url)} (DATABASE_URL): {first}\n  {hint}",
            EXIT_UNREACHABLE,
        )
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        port = os.environ.get("CHEM_METRICS_PORT", "?")
        return (
            f"CHEM_METRICS_PORT: port {port} is already in use; choose another or unset it",
            EXIT_USAGE,
        )
    if isinstance(exc, ValueError):  # settings and input errors name the variable and the value
        return str(exc), EXIT_USAGE
    return f"{type(exc).__name__}: {exc}", 1


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
        chosen_format = logs.log_format(os.environ.get(logs.ENV_LOG_FORMAT))
    except ValueError as exc:
        print(f"chem-persistence: {exc}", file=sys.stderr)
        return 2
    logs.configure(level, chosen_format)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(
            "chem-persistence: interrupted; what this command started has been stopped",
            file=sys.stderr,
        )
        return 130
    except BrokenPipeError:  # `status | head`: the reader has what it wanted
        sys.stderr.close()
        return 0
    except Exception as exc:
        if args.debug:
            raise
        message, code = explain(exc)
        if code != EXIT_USAGE:  # on the hint's line: the whole error stays within two lines
            message += "\n " if "\n" not in message else ""
            message += " (--debug for the details)"
        print(f"chem-persistence: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
