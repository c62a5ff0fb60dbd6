"""The ``dashboard`` subcommand's arguments, and its start, for ``worker.cli``.

Imports no web library: the ``dashboard`` extra (Flask through rq-dashboard, waitress) is
optional in a production install, and without it the command says so in one line.
"""

from __future__ import annotations

import argparse
import sys
from importlib.util import find_spec

EXTRA_HINT = "pip install 'chem-persistence[dashboard]'"
#: What the dashboard imports beyond the production dependencies.
NEEDED = ("flask", "rq_dashboard", "waitress", "six")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bind", help="address to listen on (CHEM_DASHBOARD_BIND, default 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, help="port to listen on (CHEM_DASHBOARD_PORT, default 9181)"
    )
    parser.add_argument(
        "--no-auth",
        action="store_true",
        help="serve without basic auth (CHEM_DASHBOARD_PASSWORD[_FILE] not needed): never"
        " on a reachable address",
    )


def missing() -> list[str]:
    return [name for name in NEEDED if find_spec(name) is None]


def run(args: argparse.Namespace) -> int:
    absent = missing()
    if absent:
        print(
            f"chem-persistence dashboard needs the dashboard extra ({', '.join(absent)}"
            f" missing): {EXTRA_HINT}",
            file=sys.stderr,
        )
        return 2
    try:
        from chem_persistence.worker.dashboard.server import serve
    except ImportError as exc:
        print(
            f"chem-persistence dashboard needs the dashboard extra ({exc}): {EXTRA_HINT}",
            file=sys.stderr,
        )
        return 2
    return serve(bind=args.bind, port=args.port, no_auth=args.no_auth)
