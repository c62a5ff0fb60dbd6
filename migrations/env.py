"""Alembic environment of chem-persistence: explicit SQL migrations, no ORM metadata.

Which database (first found wins):
  1. ``Config.attributes["database_url"]``, set by eventlog.migrate (the Python entry points);
  2. ``alembic -x url=postgresql://...``;
  3. ``sqlalchemy.url`` in alembic.ini, when not empty;
  4. ``DATABASE_URL`` through eventlog.config (default ``postgresql://127.0.0.1:5432/chem``).

Online, the migrator first takes the session-level advisory lock
``pg_advisory_lock(MIGRATION_LOCK_KEY)`` and keeps it until every revision is applied, so
concurrent migrators serialize and the later ones find nothing to do; each revision runs in its
own transaction (``transaction_per_migration``). Offline (``alembic upgrade head --sql``) the same
SQL is printed, lock included, without any database.
"""

from __future__ import annotations

import logging
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, text

from chem_persistence.eventlog.config import database_url_from_env, normalize_url, redact_url
from chem_persistence.eventlog.migrate import (
    CONFIGURE_LOGGING_ATTRIBUTE,
    MIGRATION_LOCK_KEY,
    URL_ATTRIBUTE,
    create_migration_engine,
)

config = context.config
logger = logging.getLogger("migrations.env")

# From the command line, log as alembic.ini says; from Python, leave the application's logging be.
if config.config_file_name is not None and config.attributes.get(CONFIGURE_LOGGING_ATTRIBUTE, True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

LOCK_SQL = f"SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"
UNLOCK_SQL = f"SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"


def database_url() -> str:
    url = config.attributes.get(URL_ATTRIBUTE)
    if isinstance(url, str) and url:
        return normalize_url(url)
    url = context.get_x_argument(as_dictionary=True).get("url")
    if url:
        return normalize_url(url, variable="-x url")
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return normalize_url(url, variable="sqlalchemy.url")
    return database_url_from_env()


def run_migrations_offline() -> None:
    context.configure(
        dialect_name="postgresql",
        literal_binds=True,
        transaction_per_migration=True,
    )
    context.execute(LOCK_SQL)
    with context.begin_transaction():
        context.run_migrations()
    context.execute(UNLOCK_SQL)


def _unlock(connection: Connection) -> None:
    # Closing the connection releases the lock anyway; never let a failed unlock hide the
    # error that brought us here.
    try:
        connection.rollback()
        connection.execute(text(UNLOCK_SQL))
        connection.commit()
    except Exception:
        logger.warning(
            "could not release the migration lock",
            exc_info=True,
            extra={"action": "migrate_unlock_failed"},
        )


def run_migrations_online() -> None:
    url = database_url()
    engine = create_migration_engine(url)
    try:
        with engine.connect() as connection:
            logger.info(
                "waiting for the migration lock on %s",
                redact_url(url),
                extra={"action": "migrate_lock_wait"},
            )
            connection.execute(text(LOCK_SQL))
            # End the transaction the lock query opened (the session lock stays): alembic must
            # see no outer transaction, or it would run every revision in that one.
            connection.commit()
            try:
                context.configure(connection=connection, transaction_per_migration=True)
                with context.begin_transaction():
                    context.run_migrations()
            finally:
                _unlock(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
