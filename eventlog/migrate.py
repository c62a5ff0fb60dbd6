"""Schema migrations, driven from Python: alembic with the repository's ``migrations/``.

The schema is defined only by ``migrations/versions`` (explicit SQL, revisions 0001..0007).
Every migrator, the ``alembic`` command included, first takes a session-level
``pg_advisory_lock(MIGRATION_LOCK_KEY)`` (see ``migrations/env.py``): processes that start
together queue on it, the first one migrates, the others then find the database at head and do
nothing. Each revision runs in its own transaction.

Errors from the database come out as psycopg errors (SQLAlchemy, which alembic needs, is an
implementation detail here), so callers classify them like any other database error.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from psycopg.rows import TupleRow
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from chem_persistence.eventlog.config import normalize_url, redact_text, redact_url

logger = logging.getLogger(__name__)

#: The revisions travel inside the package (``chem_persistence/migrations``), so an installed
#: wheel migrates from anywhere; in a checkout that folder links to the repository's migrations/.
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

HEAD = "head"
BASE = "base"

#: The pg_advisory_lock key every migrator holds while it migrates: the ASCII bytes of
#: "chemmig" read as a big-endian integer (fits a bigint). Fixed forever: changing it would
#: let an old and a new migrator run at the same time.
MIGRATION_LOCK_KEY = 0x63_68_65_6D_6D_69_67

#: The key under which the URL is handed to migrations/env.py in ``Config.attributes``
#: (not through the ini file, whose interpolation would mangle ``%`` in encoded passwords).
URL_ATTRIBUTE = "database_url"
#: ``Config.attributes`` flag telling env.py not to reconfigure logging from alembic.ini.
CONFIGURE_LOGGING_ATTRIBUTE = "configure_logging"

_STATEMENT_LOG_CHARS = 300

# alembic keeps the running environment in module globals: one command at a time per process
# (other processes are serialized by the advisory lock).
_alembic_lock = threading.Lock()


def alembic_config(url: str | None = None, output_buffer: io.StringIO | None = None) -> Config:
    """An alembic Config for the repository's migrations, aimed at ``url`` when given."""
    # No ini file: alembic.ini is for the ``alembic`` command in a checkout, not for the package.
    config = Config(output_buffer=output_buffer)
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    config.attributes[CONFIGURE_LOGGING_ATTRIBUTE] = False
    if url is not None:
        config.attributes[URL_ATTRIBUTE] = normalize_url(url)
    return config


def create_migration_engine(url: str) -> Engine:
    """A one-connection-at-a-time SQLAlchemy engine (psycopg 3) for ``url``.

    libpq parses ``url`` itself (through ``creator``), so every URL psycopg accepts works the
    same here, and SQLAlchemy never holds or prints the password.
    """
    libpq_url = normalize_url(url)

    def connect() -> psycopg.Connection[TupleRow]:
        return psycopg.connect(libpq_url)

    return create_engine("postgresql+psycopg://", poolclass=NullPool, creator=connect)


@contextmanager
def _database_errors(url: str, what: str) -> Iterator[None]:
    """Log a failure with the redacted URL, and re-raise the driver's (psycopg) error."""
    try:
        yield
    except DBAPIError as exc:
        original = exc.orig
        # A statement that failed is worth an ERROR line of its own; a connection that failed
        # is not (the caller reports it, naming DATABASE_URL), so it is only a DEBUG line.
        logger.log(
            logging.ERROR if exc.statement else logging.DEBUG,
            "action=migrate_failed %s of %s failed: %s (statement: %.*s)",
            what,
            redact_url(url),
            redact_text(str(original), url),
            _STATEMENT_LOG_CHARS,
            exc.statement,
        )
        if isinstance(original, psycopg.Error):
            raise original from None
        raise


def upgrade(url: str, revision: str = HEAD) -> None:
    """Apply every pending migration up to ``revision`` (default: head); a no-op when there."""
    logger.info("action=migrate_upgrade migrating %s up to %s", redact_url(url), revision)
    with _alembic_lock, _database_errors(url, f"upgrade to {revision}"):
        command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Revert migrations down to ``revision`` (``"base"``: an empty schema)."""
    logger.info("action=migrate_downgrade migrating %s down to %s", redact_url(url), revision)
    with _alembic_lock, _database_errors(url, f"downgrade to {revision}"):
        command.downgrade(alembic_config(url), revision)


def current(url: str) -> str | None:
    """The revision the database is at, or None when it was never migrated (or is at base)."""
    engine = create_migration_engine(url)
    try:
        with _database_errors(url, "reading the revision"), engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str | None:
    """The newest revision of the repository's migrations."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def at_head(url: str) -> bool:
    """Whether the database is at the newest revision.

    Reading needs no lock and no DDL right, only SELECT on ``alembic_version`` (granted to
    ``chem_app`` by revision 0006): a worker with least privilege checks this and does not
    migrate.
    """
    return current(url) == head_revision()


def offline_sql(revision: str = HEAD) -> str:
    """The SQL that ``upgrade`` would run from an empty database, without touching one."""
    buffer = io.StringIO()
    with _alembic_lock:
        command.upgrade(alembic_config(None, output_buffer=buffer), revision, sql=True)
    return buffer.getvalue()
