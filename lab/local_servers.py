"""Which PostgreSQL and Redis the demo uses: the URLs when set, else the local servers."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql

from chem_persistence.eventlog.config import url_with_database
from lab.embedded import embedded_servers
from lab.ports import port_answers

LOCAL_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_DEMO_DATABASE = "chem_demo"
LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class Services:
    database_url: str
    redis_url: str
    origin: str  # "environment", "local" or "embedded"


def ensure_database(admin_url: str, name: str) -> str:
    """Create database ``name`` if missing; return its URL (same server and user)."""
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
        db = os.environ.get("DATABASE_URL") or ensure_database(
            LOCAL_PG_ADMIN_URL, LOCAL_DEMO_DATABASE
        )
        yield Services(db, os.environ.get("REDIS_URL") or LOCAL_REDIS_URL, origin)
        return
    with embedded_servers() as servers:
        database_url = ensure_database(servers.admin_url, LOCAL_DEMO_DATABASE)
        yield Services(database_url, servers.redis_url, origin)
