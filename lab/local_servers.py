"""Which PostgreSQL and Redis the demo uses, and the fresh database it makes for itself there.

``DATABASE_URL`` and ``REDIS_URL``, when set, name *servers* (and credentials), not places to
write: the demo creates a database of its own on that PostgreSQL (``chem_demo_<UTC time>_<random>``,
never an existing one) and drops it at the end, and keeps to its own keys in that Redis.
Without them: the local servers when they answer, else embedded ones under ./.chem/.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import psycopg
import redis.exceptions
from psycopg import sql
from redis import Redis

from chem_persistence.eventlog.config import redact_text, redact_url, url_with_database
from chem_persistence.worker.cli import EXIT_UNREACHABLE, EXIT_USAGE
from lab.embedded import embedded_servers
from lab.ports import port_answers

LOCAL_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"
DEMO_DATABASE_PREFIX = "chem_demo_"
CONNECT_TIMEOUT_SECONDS = 5


@dataclass(frozen=True)
class Services:
    server_url: str  # a PostgreSQL server and credentials: the demo creates its database there
    redis_url: str
    origin: str  # "environment", "local" or "embedded"
    #: What an error names: the variable the URL came from, or how to choose another.
    database_setting: str = "DATABASE_URL"
    redis_setting: str = "REDIS_URL"


class SetupRefused(RuntimeError):
    """A server the demo was given cannot be used: one line naming the setting, and what to do."""

    def __init__(self, message: str, code: int = EXIT_UNREACHABLE) -> None:
        super().__init__(message)
        self.code = code


def ensure_database(admin_url: str, name: str) -> str:
    """Create database ``name`` if missing; return its URL (chaos: on its private server)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return url_with_database(admin_url, name)


def choose(environ: Mapping[str, str], force_embedded: bool) -> str:
    """``environment`` if both URLs are set, else ``local`` if both ports answer, else embedded."""
    if force_embedded:
        return "embedded"
    if environ.get("DATABASE_URL") and environ.get("REDIS_URL"):
        return "environment"
    if port_answers("127.0.0.1", 5432) and port_answers("127.0.0.1", 6379):
        return "local"
    return "embedded"


@contextmanager
def resolve_services(force_embedded: bool = False) -> Iterator[Services]:
    origin = choose(os.environ, force_embedded)
    if origin == "environment":
        yield Services(os.environ["DATABASE_URL"], os.environ["REDIS_URL"], origin)
        return
    if origin == "local":
        local = "the local {} (set {} to use another)"
        database, redis_url = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
        yield Services(
            database or LOCAL_PG_ADMIN_URL,
            redis_url or LOCAL_REDIS_URL,
            origin,
            "DATABASE_URL" if database else local.format("PostgreSQL", "DATABASE_URL"),
            "REDIS_URL" if redis_url else local.format("Redis", "REDIS_URL"),
        )
        return
    with embedded_servers() as servers:
        embedded = "the embedded {} under ./.chem/"
        yield Services(
            servers.admin_url,
            servers.redis_url,
            origin,
            embedded.format("PostgreSQL"),
            embedded.format("Redis"),
        )


def new_database_name() -> str:
    return f"{DEMO_DATABASE_PREFIX}{datetime.now(UTC):%Y%m%d_%H%M%S}_{secrets.token_hex(3)}"


def server_of(url: str) -> str:
    """``url`` without its database and password: which server, as which user."""
    return redact_url(url_with_database(url, ""))


def check_redis(url: str, setting: str) -> None:
    """SetupRefused unless the Redis at ``url`` answers."""
    try:
        client = Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_SECONDS)
    except ValueError as exc:
        message = f"{setting}: {redact_url(url)!r} is not a Redis URL ({exc})"
        raise SetupRefused(message, EXIT_USAGE) from None
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        raise SetupRefused(
            f"{setting}: cannot use Redis at {redact_url(url)} ({redact_text(str(exc), url)}):"
            f" is it running, and is {setting} right?"
        ) from None
    finally:
        client.close()


def _admin_connection(url: str, setting: str) -> tuple[psycopg.Connection[object], str]:
    """A connection to the server of ``url``, and the URL it used: the database ``url`` names,
    or the server's ``postgres`` database when that one does not exist."""
    if urlsplit(url).scheme not in ("postgresql", "postgres"):
        raise SetupRefused(
            f"{setting}: {redact_url(url)!r} is not a postgresql:// URL"
            " (e.g. postgresql://user@host:5432/postgres)",
            EXIT_USAGE,
        )
    candidates = [url]
    if urlsplit(url).path != "/postgres":
        candidates.append(url_with_database(url, "postgres"))
    first = ""
    for candidate in candidates:
        try:
            conn = psycopg.connect(
                candidate, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
            )
            return conn, candidate
        except psycopg.Error as exc:
            lines = redact_text(str(exc), candidate).strip().splitlines()
            first = first or (lines[0] if lines else type(exc).__name__)
            if "does not exist" not in first or "database" not in first:
                break  # only a missing database is worth another try
    raise SetupRefused(
        f"{setting}: cannot connect to PostgreSQL at {server_of(url)} ({first}):"
        f" is it running, and are the host, port and user in {setting} right?"
    )


@contextmanager
def demo_database(services: Services, keep: bool) -> Iterator[str]:
    """Create a fresh database on the server of ``services``; yield its URL; drop it on exit
    (Ctrl-C and SIGTERM included) unless ``keep``. Only this database is ever written. Says on
    stderr which database it created and what became of it."""
    setting = services.database_setting
    conn, admin_url = _admin_connection(services.server_url, setting)
    name = new_database_name()
    url = url_with_database(services.server_url, name)
    refused = False  # else it may exist: a signal can come between CREATE and its reply
    try:
        with conn:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except psycopg.errors.InsufficientPrivilege:
                refused, user = True, conn.info.user
                raise SetupRefused(
                    f"{setting}: user {user!r} may not create databases on"
                    f" {server_of(services.server_url)}, and the demo writes only into a database"
                    f" it creates: grant it CREATEDB (ALTER ROLE {user} CREATEDB) or point"
                    f" {setting} at a server where it may"
                ) from None
        fate = "kept (--keep)" if keep else "dropped at the end (--keep keeps it)"
        _say(f"created database {name} on {server_of(url)}; it is {fate}")
        yield url
        if keep:
            _say(f"kept database {name}: {redact_url(url)}")
    finally:
        if not (keep or refused) and _drop(admin_url, name):
            _say(f"dropped database {name}")


def _say(message: str) -> None:
    print(f"demo: {message}", file=sys.stderr, flush=True)


def _drop(admin_url: str, name: str) -> bool:
    """Drop the demo's own database (IF EXISTS: it may not have been created yet)."""
    assert name.startswith(DEMO_DATABASE_PREFIX)
    statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    try:
        with psycopg.connect(
            admin_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
        ) as conn:
            conn.execute(statement)
        return True
    except psycopg.Error as exc:
        first = (redact_text(str(exc), admin_url).strip().splitlines() or [""])[0]
        _say(f"could not drop database {name} on {server_of(admin_url)} ({first}); drop it by hand")
        return False
