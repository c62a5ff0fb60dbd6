"""Shared fixtures: the real PostgreSQL and Redis, isolated per test session (and per test).

Nothing here can hurt the machine it runs on:

- PostgreSQL: every session creates its own databases, ``chem_test_<pid>_<random>`` (CREATE
  DATABASE fails rather than adopt an existing one), and drops only databases it created
  itself (``drop_database`` refuses any other name). ``database_url`` is built by the
  migrations and dropped at the end; ``empty_database_url`` gives a test a fresh unmigrated
  database, ``migrated_database_url`` a fresh migrated one (cloned from a template).
- Redis: a session claims one DB (``tests/redis_claim.py``): atomically, only if it is empty,
  by writing an ownership key with the session's id. ``TEST_REDIS_DB=N`` names the DB (it must
  be empty or this session's, else the run stops); unset, the first free DB of 15..1 is taken.
  A DB is flushed only by one Lua call that first checks the claim is still this session's:
  before each test that uses ``redis_conn``, and at the end (which also gives the DB up). Keys
  also carry ``key_prefix``.

A server that does not answer FAILS the tests that need it; ``CHEM_TEST_ALLOW_SKIP=1`` (outside
CI only) makes them skip instead. Under CI (``CI`` set to 1/true/yes/on) the run fails if any
integration test skipped, except a skip marked ``ci_skip_allowed`` (the TLS case on a
redis-server built without TLS), which is printed at the end. Tests under tests/integration and
tests/migrations are marked ``integration`` automatically.

Environment: ``TEST_ADMIN_DATABASE_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``),
``TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379``), ``TEST_REDIS_DB``,
``CHEM_TEST_ALLOW_SKIP``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import redis
from psycopg import sql

from chem_persistence.eventlog import migrate
from chem_persistence.eventlog.config import (
    DatabaseSettings,
    redact_text,
    redact_url,
    url_with_database,
)
from chem_persistence.eventlog.pool import Pool, open_pool
from tests.redis_claim import ClaimLost, ClaimRefused, RedisClaim, new_session_id

ADMIN_URL_ENV = "TEST_ADMIN_DATABASE_URL"
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL_ENV = "TEST_REDIS_URL"
DEFAULT_REDIS_BASE_URL = "redis://127.0.0.1:6379"
REDIS_DB_ENV = "TEST_REDIS_DB"
#: DB 0 is left to the developer's own use (REDIS_URL's default).
REDIS_TEST_DBS = range(1, 16)
#: Without TEST_REDIS_DB, the first free one from the top (low numbers are the usual by hand).
REDIS_AUTO_ORDER = tuple(reversed(REDIS_TEST_DBS))
ALLOW_SKIP_ENV = "CHEM_TEST_ALLOW_SKIP"
CI_ENV = "CI"
_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
#: This session's id: the value of its Redis claim.
SESSION_ID = new_session_id()
SERVER_CHECK_TIMEOUT_S = 2
TEST_DATABASE_PREFIX = "chem_test"
HOW_TO_START = "start it with `make services` (scripts/ensure-services)"

_TESTS_DIR = Path(__file__).resolve().parent
INTEGRATION_DIRS = (_TESTS_DIR / "integration", _TESTS_DIR / "migrations", _TESTS_DIR / "lab")

# A server found down stays down for the session: later tests fail at once, without timeouts.
_server_errors: dict[str, str | None] = {}
#: Every database this session created (and so may drop).
_created_databases: set[str] = set()
#: Integration tests that skipped: (node id, reason, allowed under CI).
_integration_skips: list[tuple[str, str, bool]] = []
#: The name of the report property that marks a skipped integration test (its value: allowed).
INTEGRATION_SKIP = "chem_integration_skip"


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE_WORDS


def under_ci() -> bool:
    return env_flag(CI_ENV)


def skips_allowed() -> bool:
    """Whether a missing server skips its tests (an explicit opt-in, never under CI)."""
    return env_flag(ALLOW_SKIP_ENV) and not under_ci()


def require_server(name: str, check: Callable[[], None]) -> None:
    """Fail unless ``check()`` reaches the server; skip instead only when skips_allowed()."""
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
    if skips_allowed():
        pytest.skip(f"{message} ({ALLOW_SKIP_ENV} is set)")
    pytest.fail(f"{message}, or set {ALLOW_SKIP_ENV}=1 to skip what needs it", pytrace=False)


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
        conn.execute(statement)  # fails if the name exists: never adopts another's database
    _created_databases.add(name)
    return url_with_database(admin_url, name)


class NotOurDatabase(RuntimeError):
    """drop_database was asked to drop a database this session did not create."""


def drop_database(admin_url: str, url: str) -> None:
    """Drop a database create_database made in this session; any other name is refused."""
    name = urlsplit(url).path.lstrip("/")
    if name not in _created_databases:
        raise NotOurDatabase(
            f"refusing to drop database {name!r}: this test session did not create it"
        )
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
    _created_databases.discard(name)


#: This session's own temporary root (None when --basetemp was given).
_own_basetemp: Path | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Give the session a temporary root of its own instead of the user-wide
    ``/tmp/pytest-of-<user>``: the embedded servers open up, and later restore, the modes of
    every folder above their data, and a folder shared with other sessions would be closed
    under their feet (or theirs under ours)."""
    global _own_basetemp
    if config.option.basetemp is None:
        _own_basetemp = Path(tempfile.mkdtemp(prefix="chem-pytest-"))
        config.option.basetemp = str(_own_basetemp)


def pytest_unconfigure(config: pytest.Config) -> None:
    # Ours alone (a fresh mkdtemp): removed after a green run, kept for a look otherwise.
    status = getattr(config, "_chem_exitstatus", None)
    if _own_basetemp is None or not _own_basetemp.exists():
        return
    empty = not any(p.is_file() for p in _own_basetemp.rglob("*"))
    if status == pytest.ExitCode.OK or empty:
        shutil.rmtree(_own_basetemp, ignore_errors=True)
    else:
        print(f"\ntemporary files of this run kept in {_own_basetemp}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.path)).resolve()
        if any(path.is_relative_to(directory) for directory in INTEGRATION_DIRS):
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Tag a skipped integration test on its report: the report is what reaches the process
    that judges the run (the controller, when the tests run in parallel workers)."""
    report = yield
    if (
        report.skipped
        and not hasattr(report, "wasxfail")
        and item.get_closest_marker("integration") is not None
    ):
        allowed = item.get_closest_marker("ci_skip_allowed") is not None
        report.user_properties.append((INTEGRATION_SKIP, allowed))
    return report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    tags = [value for name, value in report.user_properties if name == INTEGRATION_SKIP]
    if report.skipped and tags:
        reason = (
            str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        )
        _integration_skips.append((report.nodeid, reason, bool(tags[0])))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not _integration_skips:
        return
    terminalreporter.section("integration tests skipped")
    for nodeid, reason, allowed in _integration_skips:
        note = "allowed under CI" if allowed else "NOT allowed under CI"
        terminalreporter.line(f"{nodeid}: {reason} [{note}]")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    refused = [skip for skip in _integration_skips if not skip[2]]
    if under_ci() and refused:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"CI: {len(refused)} integration test(s) skipped; a CI run must not pass by "
                "skipping (see 'integration tests skipped' above)",
                red=True,
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    session.config._chem_exitstatus = session.exitstatus  # type: ignore[attr-defined]


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


def requested_redis_db() -> int | None:
    """``TEST_REDIS_DB`` as a DB number in 1..15, or None when unset."""
    raw = os.environ.get(REDIS_DB_ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) not in REDIS_TEST_DBS:
        raise pytest.UsageError(f"{REDIS_DB_ENV}={raw!r}: must be a DB number in 1..15")
    return int(raw)


def claim_redis_db(base_url: str) -> RedisClaim:
    """This session's claim: on TEST_REDIS_DB, else on the first free DB of 15..1."""
    wanted = requested_redis_db()
    try:
        if wanted is not None:
            return RedisClaim.take(base_url, wanted, SESSION_ID)
        return RedisClaim.take_free(base_url, REDIS_AUTO_ORDER, SESSION_ID)
    except ClaimRefused as exc:
        hint = (
            f"set {REDIS_DB_ENV} to an empty DB" if wanted is None else f"{REDIS_DB_ENV}={wanted}"
        )
        pytest.fail(f"{exc} ({hint})", pytrace=False)


@pytest.fixture(scope="session")
def redis_claim() -> Iterator[RedisClaim]:
    """This session's own Redis DB, claimed empty; flushed and given up at the end."""
    base = (os.environ.get(REDIS_URL_ENV) or DEFAULT_REDIS_BASE_URL).rstrip("/")
    require_redis(f"{base}/0")
    claim = claim_redis_db(base)
    try:
        yield claim
    finally:
        if not claim.release():
            raise ClaimLost(f"Redis DB {claim.db}: claim lost during the session; not flushed")


@pytest.fixture(scope="session")
def redis_url(redis_claim: RedisClaim) -> str:
    """The URL of this session's Redis DB (see ``redis_claim``)."""
    return redis_claim.url


@pytest.fixture
def redis_conn(redis_claim: RedisClaim) -> Iterator[redis.Redis]:
    """A client on the session's Redis DB, emptied (but still claimed) before the test."""
    try:
        redis_claim.flush()
    except ClaimLost as exc:
        pytest.fail(str(exc), pytrace=False)
    client = redis.Redis.from_url(redis_claim.url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def key_prefix() -> str:
    """A key prefix no other test session uses (for CHEM_KEY_PREFIX and rq queue names)."""
    return f"chemtest{os.getpid()}"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--dashboard-screenshots",
        metavar="DIR",
        default=None,
        help="the dashboard's browser test saves a PNG of each page it checks into DIR"
        " (e.g. docs/, where the README's pictures live)",
    )
