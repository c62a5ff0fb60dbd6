"""Shared fixtures: the real PostgreSQL and Redis, isolated per test session (and per test).

PostgreSQL: every session gets its own database, ``chem_test_<pid>_<random>``, built by the
migrations themselves and dropped at the end; ``empty_database_url`` gives a test a fresh
unmigrated database, ``migrated_database_url`` a fresh migrated one (cloned from a template).
Redis: one DB index per session (``TEST_REDIS_DB``, else derived from the pid, 1..15), flushed
around the session and before each test that uses ``redis_conn``; keys also carry ``key_prefix``.

A server that does not answer skips the tests that need it, or fails them when ``CI`` is set
(a CI run must never pass by skipping). Tests under tests/integration and tests/migrations are
marked ``integration`` automatically.

Environment: ``TEST_ADMIN_DATABASE_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``),
``TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379``), ``TEST_REDIS_DB``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import redis
from psycopg import sql

from eventlog import migrate
from eventlog.config import DatabaseSettings, redact_text, redact_url, url_with_database
from eventlog.pool import Pool, open_pool

ADMIN_URL_ENV = "TEST_ADMIN_DATABASE_URL"
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL_ENV = "TEST_REDIS_URL"
DEFAULT_REDIS_BASE_URL = "redis://127.0.0.1:6379"
REDIS_DB_ENV = "TEST_REDIS_DB"
#: DB 0 is left to the developer's own use (REDIS_URL's default).
REDIS_TEST_DBS = range(1, 16)
SERVER_CHECK_TIMEOUT_S = 2
TEST_DATABASE_PREFIX = "chem_test"
HOW_TO_START = "start it with `make services` (scripts/ensure-services)"

_TESTS_DIR = Path(__file__).resolve().parent
INTEGRATION_DIRS = (_TESTS_DIR / "integration", _TESTS_DIR / "migrations", _TESTS_DIR / "lab")

# A server found down stays down for the session: later tests skip at once, without timeouts.
_server_errors: dict[str, str | None] = {}


def require_server(name: str, check: Callable[[], None]) -> None:
    """Skip (locally) or fail (when ``CI`` is set) unless ``check()`` reaches the server."""
    if name not in _server_errors:
        try:
            check()
            _server_errors[name] = None
        except Exception as exc:
            _server_errors[name] = f"{type(exc).__name__}: {exc}".strip()
    error = _server_errors[name]
    if error is None:
        return
    message = f"{name} is not answering ({error}); {HOW_TO_START}"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_postgres(url: str) -> None:
    def check() -> None:
        try:
            with psycopg.connect(url, connect_timeout=SERVER_CHECK_TIMEOUT_S, autocommit=True):
                pass
        except psycopg.Error as exc:
            raise ConnectionError(redact_text(str(exc), url)) from None

    require_server(f"PostgreSQL at {redact_url(url)}", check)


def require_redis(url: str) -> None:
    def check() -> None:
        client = redis.Redis.from_url(url, socket_connect_timeout=SERVER_CHECK_TIMEOUT_S)
        try:
            client.ping()
        finally:
            client.close()

    require_server(f"Redis at {url}", check)


def new_database_name(suffix: str = "") -> str:
    return f"{TEST_DATABASE_PREFIX}_{os.getpid()}_{secrets.token_hex(4)}{suffix}"


def create_database(admin_url: str, *, template: str | None = None, suffix: str = "") -> str:
    """Create a fresh database (a copy of ``template`` when given); return its URL."""
    name = new_database_name(suffix)
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(statement)
    return url_with_database(admin_url, name)


def drop_database(admin_url: str, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.path)).resolve()
        if any(path.is_relative_to(directory) for directory in INTEGRATION_DIRS):
            item.add_marker(pytest.mark.integration)


# --- PostgreSQL ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def admin_url() -> str:
    """The maintenance database, where test databases are created and dropped."""
    url = os.environ.get(ADMIN_URL_ENV) or DEFAULT_ADMIN_URL
    require_postgres(url)
    return url


@pytest.fixture(scope="session")
def database_url(admin_url: str) -> Iterator[str]:
    """This session's own database, migrated to head by eventlog.migrate; dropped at the end."""
    url = create_database(admin_url)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        drop_database(admin_url, url)


@pytest.fixture
def empty_database_url(admin_url: str) -> Iterator[str]:
    """A fresh database with nothing in it (not even alembic_version); dropped after the test."""
    url = create_database(admin_url)
    try:
        yield url
    finally:
        drop_database(admin_url, url)


@pytest.fixture(scope="session")
def _migrated_template(admin_url: str) -> Iterator[str]:
    """A migrated database nobody connects to, so it can be cloned (CREATE DATABASE TEMPLATE)."""
    url = create_database(admin_url, suffix="_tpl")
    try:
        migrate.upgrade(url)
        yield urlsplit(url).path.lstrip("/")
    finally:
        drop_database(admin_url, url)


@pytest.fixture
def migrated_database_url(admin_url: str, _migrated_template: str) -> Iterator[str]:
    """A fresh database at head, for one test (a clone of a migrated template: fast)."""
    url = create_database(admin_url, template=_migrated_template)
    try:
        yield url
    finally:
        drop_database(admin_url, url)


@pytest.fixture(scope="session")
def db_settings(database_url: str) -> DatabaseSettings:
    """Settings for the session database, with the documented defaults (not the environment's)."""
    return DatabaseSettings(url=database_url)


@pytest.fixture(scope="session")
def pool(db_settings: DatabaseSettings) -> Iterator[Pool]:
    """The session's pool on ``database_url``, opened the way the workers open theirs."""
    opened = open_pool(db_settings, name="chem-test")
    try:
        yield opened
    finally:
        opened.close()


# --- Redis --------------------------------------------------------------------------------


def _redis_db_number() -> int:
    raw = os.environ.get(REDIS_DB_ENV)
    if raw:
        number = int(raw)
        if number not in REDIS_TEST_DBS:
            raise pytest.UsageError(f"{REDIS_DB_ENV}={raw!r}: must be in 1..15")
        return number
    return REDIS_TEST_DBS[os.getpid() % len(REDIS_TEST_DBS)]


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis DB index of this session's own, flushed before and after the session."""
    base = (os.environ.get(REDIS_URL_ENV) or DEFAULT_REDIS_BASE_URL).rstrip("/")
    url = f"{base}/{_redis_db_number()}"
    require_redis(url)
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
        yield url
        client.flushdb()
    finally:
        client.close()


@pytest.fixture
def redis_conn(redis_url: str) -> Iterator[redis.Redis]:
    """A client on the session's Redis DB, flushed before the test."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def key_prefix() -> str:
    """A key prefix no other test session uses (for CHEM_KEY_PREFIX and rq queue names)."""
    return f"chemtest{os.getpid()}"
