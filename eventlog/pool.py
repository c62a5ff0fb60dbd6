"""The connection pool of the event log: migrate first, then open, sized by DatabaseSettings."""

from __future__ import annotations

import logging
from typing import TypeAlias

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout

from chem_persistence.eventlog import migrate as migrations
from chem_persistence.eventlog.config import DatabaseSettings, redact_text

logger = logging.getLogger(__name__)

#: How long open_pool waits for the pool's first min_connections connections.
POOL_OPEN_TIMEOUT_S = 10.0
#: The default pool name; also the connections' application_name (seen in pg_stat_activity)
#: unless the URL sets one.
DEFAULT_POOL_NAME = "chem"

Pool: TypeAlias = ConnectionPool[psycopg.Connection[TupleRow]]


class PoolOpenError(psycopg.OperationalError):
    """The database could not be migrated or reached while opening the pool (URL redacted)."""


def open_pool(
    settings: DatabaseSettings,
    *,
    migrate: bool = True,
    name: str = DEFAULT_POOL_NAME,
    open_timeout: float = POOL_OPEN_TIMEOUT_S,
) -> Pool:
    """Apply pending migrations (under the migration advisory lock), then open the pool.

    A database already at head is not locked nor touched: reading its revision needs only
    SELECT on ``alembic_version``. A role that may not migrate a database behind head gets a
    PoolOpenError telling to run ``chem-persistence migrate`` as the owner.

    The pool holds ``settings.min_connections`` connections when this returns, never opens more
    than ``settings.max_connections``, and checks a connection before lending it. Each one runs
    with ``lock_timeout``, ``statement_timeout``, ``idle_in_transaction_session_timeout`` and TCP
    keepalives from the settings (``DatabaseSettings.connection_kwargs``). Connections
    are not in autocommit: every ``with pool.connection() as conn:`` block is one transaction.
    Raises PoolOpenError (a psycopg.OperationalError) if the database does not answer; its
    message shows the URL with the password redacted.
    """
    shown = settings.redacted_url
    if migrate:
        try:
            # At head (the usual case): nothing to lock or change, so a role with only the
            # rights of chem_app (revision 0006) opens its pool without any DDL right.
            if not migrations.at_head(settings.url):
                migrations.upgrade(settings.url)
        except psycopg.OperationalError as exc:
            raise PoolOpenError(
                f"pool {name!r}: cannot migrate {shown}: {redact_text(str(exc), settings.url)}"
            ) from exc
        except psycopg.errors.InsufficientPrivilege as exc:
            raise PoolOpenError(
                f"pool {name!r}: {shown} is not at revision {migrations.head_revision()} and "
                f"this role may not migrate it ({redact_text(str(exc).strip(), settings.url)}); "
                "run `chem-persistence migrate` with the owner's DATABASE_URL first"
            ) from exc

    # Every connection opens with the session limits and keepalives of the settings: a lock
    # wait, a statement, an idle transaction and a dead peer all end well before a flow's lease.
    kwargs: dict[str, object] = {"autocommit": False, **settings.connection_kwargs()}
    in_url = conninfo_to_dict(settings.url)
    if "application_name" not in in_url:
        kwargs["application_name"] = name
    if "timezone" not in str(in_url.get("options", "")).lower():
        # Sessions in UTC: psycopg then returns timestamptz values in datetime.UTC, which is
        # what reads give back, without converting every row (the instants are unchanged).
        kwargs["options"] = f"-c TimeZone=UTC {kwargs.get('options', '')}".strip()
    pool: Pool = ConnectionPool(
        settings.url,
        kwargs=kwargs,
        min_size=settings.min_connections,
        max_size=settings.max_connections,
        name=name,
        # No check on every checkout (a round trip per transaction): a broken connection
        # fails its statement, which is classified transient and retried on a fresh one.
        open=False,
    )
    try:
        pool.open(wait=True, timeout=open_timeout)
    except PoolTimeout as exc:
        pool.close()
        raise PoolOpenError(
            f"pool {name!r}: could not open {settings.min_connections} connection(s) to "
            f"{shown} within {open_timeout:g}s (is the server up and the URL right?)"
        ) from exc
    logger.info(
        "action=pool_open pool %r open on %s (min %d, max %d connections;"
        " lock/statement/idle-in-transaction timeouts %d/%d/%d ms)",
        name,
        shown,
        settings.min_connections,
        settings.max_connections,
        settings.lock_timeout_ms,
        settings.statement_timeout_ms,
        settings.idle_in_transaction_timeout_ms,
    )
    return pool
