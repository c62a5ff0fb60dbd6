"""DatabaseSettings from the environment, and the pool built from them on the real PostgreSQL."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

import psycopg
import pytest
from psycopg_pool import PoolTimeout

from chem_persistence.eventlog import migrate
from chem_persistence.eventlog.config import (
    DEFAULT_DATABASE_URL,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MIN_CONNECTIONS,
    ConfigError,
    DatabaseSettings,
    redact_url,
)
from chem_persistence.eventlog.pool import Pool, PoolOpenError, open_pool

SECRET = "topsecret"
BACKEND_EXIT_WAIT_S = 30.0  # a generous deadline: the condition is polled, not slept on

# --- Parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, (DEFAULT_DATABASE_URL, DEFAULT_MIN_CONNECTIONS, DEFAULT_MAX_CONNECTIONS, False)),
        (
            {"DATABASE_URL": "postgresql://chem@db:5432/chem"},
            ("postgresql://chem@db:5432/chem", 2, 16, False),
        ),
        (
            {"DATABASE_URL": f"postgres://chem:{SECRET}@db/chem"},
            (f"postgresql://chem:{SECRET}@db/chem", 2, 16, False),
        ),
        (
            {"DATABASE_URL": "postgresql+psycopg://db/chem?sslmode=require"},
            ("postgresql://db/chem?sslmode=require", 2, 16, False),
        ),
        (
            {"DATABASE_URL": "  postgresql://db/chem\n", "DATABASE_MIN_CONNECTIONS": " 0 "},
            ("postgresql://db/chem", 0, 16, False),
        ),
        (
            {"DATABASE_MIN_CONNECTIONS": "4", "DATABASE_MAX_CONNECTIONS": "4"},
            (DEFAULT_DATABASE_URL, 4, 4, False),
        ),
        (
            {"DATABASE_URL": "", "DATABASE_MIN_CONNECTIONS": "", "DATABASE_MAX_CONNECTIONS": ""},
            (DEFAULT_DATABASE_URL, 2, 16, False),
        ),
        ({"CHEM_NO_ARTIFACT_INSERT": "1"}, (DEFAULT_DATABASE_URL, 2, 16, True)),
        ({"CHEM_NO_ARTIFACT_INSERT": "true"}, (DEFAULT_DATABASE_URL, 2, 16, True)),
        ({"CHEM_NO_ARTIFACT_INSERT": "YES"}, (DEFAULT_DATABASE_URL, 2, 16, True)),
        ({"CHEM_NO_ARTIFACT_INSERT": "0"}, (DEFAULT_DATABASE_URL, 2, 16, False)),
        ({"CHEM_NO_ARTIFACT_INSERT": "no"}, (DEFAULT_DATABASE_URL, 2, 16, False)),
        ({"CHEM_NO_ARTIFACT_INSERT": ""}, (DEFAULT_DATABASE_URL, 2, 16, False)),
    ],
)
def test_settings_from_env(environ: Mapping[str, str], expected: tuple[Any, ...]) -> None:
    settings = DatabaseSettings.from_env(environ)
    assert (
        settings.url,
        settings.min_connections,
        settings.max_connections,
        settings.no_artifact_insert,
    ) == expected


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://elsewhere/chem")
    monkeypatch.setenv("DATABASE_MAX_CONNECTIONS", "7")
    settings = DatabaseSettings.from_env()
    assert (settings.url, settings.max_connections) == ("postgresql://elsewhere/chem", 7)


@pytest.mark.parametrize(
    ("environ", "variable", "shown"),
    [
        ({"DATABASE_MIN_CONNECTIONS": "two"}, "DATABASE_MIN_CONNECTIONS", "'two'"),
        ({"DATABASE_MIN_CONNECTIONS": "1.5"}, "DATABASE_MIN_CONNECTIONS", "'1.5'"),
        ({"DATABASE_MIN_CONNECTIONS": "-1"}, "DATABASE_MIN_CONNECTIONS", "'-1'"),
        ({"DATABASE_MAX_CONNECTIONS": "0"}, "DATABASE_MAX_CONNECTIONS", "'0'"),
        ({"DATABASE_MAX_CONNECTIONS": "many"}, "DATABASE_MAX_CONNECTIONS", "'many'"),
        ({"CHEM_NO_ARTIFACT_INSERT": "maybe"}, "CHEM_NO_ARTIFACT_INSERT", "'maybe'"),
        (
            {"DATABASE_URL": f"mysql://chem:{SECRET}@db/chem"},
            "DATABASE_URL",
            "mysql://chem:***@db/chem",
        ),
        (
            {"DATABASE_URL": f"host=db user=chem password={SECRET}"},
            "DATABASE_URL",
            "password=***",
        ),
        (
            {"DATABASE_URL": f"postgresql://chem:{SECRET}@db:port/chem"},
            "DATABASE_URL",
            "postgresql://chem:***@db:port/chem",
        ),
        (  # libpq quotes the bad token, which here is the password itself
            {"DATABASE_URL": f"postgresql://chem:{SECRET}%zz@db/chem"},
            "DATABASE_URL",
            "invalid percent-encoded token",
        ),
        (
            {"DATABASE_URL": f"postgresql://db/chem?password={SECRET}&nonsense=1"},
            "DATABASE_URL",
            "password=***",
        ),
    ],
)
def test_invalid_values_name_the_variable_and_hide_the_password(
    environ: Mapping[str, str], variable: str, shown: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        DatabaseSettings.from_env(environ)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert message.startswith(f"{variable}: ")  # the one dialect of every setting
    assert shown in message
    assert SECRET not in message


LIMIT_VARIABLES = {
    "DATABASE_LOCK_TIMEOUT_MS": ("lock_timeout_ms", 5_000),
    "DATABASE_STATEMENT_TIMEOUT_MS": ("statement_timeout_ms", 10_000),
    "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS": ("idle_in_transaction_timeout_ms", 15_000),
    "DATABASE_KEEPALIVES_IDLE_S": ("keepalives_idle_s", 10),
    "DATABASE_KEEPALIVES_INTERVAL_S": ("keepalives_interval_s", 5),
    "DATABASE_KEEPALIVES_COUNT": ("keepalives_count", 3),
}


@pytest.mark.parametrize("variable", sorted(LIMIT_VARIABLES))
def test_each_limit_has_its_documented_default_and_is_read_from_its_variable(
    variable: str,
) -> None:
    field, default = LIMIT_VARIABLES[variable]
    assert getattr(DatabaseSettings.from_env({}), field) == default
    assert getattr(DatabaseSettings.from_env({variable: " 1234 "}), field) == 1234
    assert getattr(DatabaseSettings.from_env({variable: "0"}), field) == 0  # off
    for bad in ("-1", "5s", "1.5"):
        with pytest.raises(ConfigError) as caught:
            DatabaseSettings.from_env({variable: bad})
        assert str(caught.value).startswith(f"{variable}: ")
        assert repr(bad.strip()) in str(caught.value) or repr(bad) in str(caught.value)
    with pytest.raises(ConfigError, match=field):
        DatabaseSettings(**{field: -1})


def test_connection_kwargs_carry_the_limits_and_keepalives() -> None:
    settings = DatabaseSettings.from_env({"DATABASE_LOCK_TIMEOUT_MS": "250"})
    assert settings.connection_kwargs() == {
        "keepalives": "1",
        "keepalives_idle": "10",
        "keepalives_interval": "5",
        "keepalives_count": "3",
        "options": "-c lock_timeout=250 -c statement_timeout=10000"
        " -c idle_in_transaction_session_timeout=15000",
    }
    off = DatabaseSettings(
        lock_timeout_ms=0,
        keepalives_idle_s=0,
        keepalives_interval_s=0,
        keepalives_count=0,
    ).connection_kwargs()
    assert off["options"].startswith("-c lock_timeout=0 ")  # 0 is PostgreSQL's "no limit"
    assert "keepalives_idle" not in off and off["keepalives"] == "1"


def test_the_urls_own_parameters_are_left_to_it() -> None:
    url = "postgresql://db/chem?keepalives_idle=60&options=-c%20lock_timeout%3D99"
    kwargs = DatabaseSettings(url=url).connection_kwargs()
    assert "keepalives_idle" not in kwargs
    assert kwargs["keepalives_interval"] == "5"
    # ours first, the URL's last (the later -c wins); no second lock_timeout of ours
    assert kwargs["options"] == (
        "-c statement_timeout=10000 -c idle_in_transaction_session_timeout=15000 -c lock_timeout=99"
    )


def test_min_above_max_is_clamped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="chem_persistence.eventlog.config"):
        settings = DatabaseSettings.from_env(
            {"DATABASE_MIN_CONNECTIONS": "20", "DATABASE_MAX_CONNECTIONS": "4"}
        )
    assert (settings.min_connections, settings.max_connections) == (4, 4)
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "DATABASE_MIN_CONNECTIONS=20" in record.getMessage()
    assert "DATABASE_MAX_CONNECTIONS=4" in record.getMessage()


def test_direct_construction_is_validated_too(caplog: pytest.LogCaptureFixture) -> None:
    assert DatabaseSettings(url="postgres://db/chem").url == "postgresql://db/chem"
    with pytest.raises(ConfigError, match="min_connections"):
        DatabaseSettings(min_connections=-1)
    with pytest.raises(ConfigError, match="max_connections"):
        DatabaseSettings(max_connections=0)
    with pytest.raises(ConfigError, match="url"):
        DatabaseSettings(url="sqlite:///chem.db")
    with caplog.at_level(logging.WARNING, logger="chem_persistence.eventlog.config"):
        assert DatabaseSettings(min_connections=9, max_connections=3).min_connections == 3
    assert "min_connections=9" in caplog.text


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        (f"postgresql://chem:{SECRET}@db:5432/chem", "postgresql://chem:***@db:5432/chem"),
        ("postgresql://chem@db/chem", "postgresql://chem@db/chem"),
        ("postgresql://db/chem", "postgresql://db/chem"),
        (f"postgres://:{SECRET}@db/chem", "postgres://:***@db/chem"),
        (f"postgresql://chem:p@ss:{SECRET}@db/chem", "postgresql://chem:***@db/chem"),
        (
            f"postgresql://db/chem?sslmode=require&password={SECRET}",
            "postgresql://db/chem?sslmode=require&password=***",
        ),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


def test_repr_never_shows_the_password() -> None:
    settings = DatabaseSettings(url=f"postgresql://chem:{SECRET}@db/chem")
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)
    assert "chem:***@db" in repr(settings)


# --- The pool on the real PostgreSQL ------------------------------------------------------


def backends_named(database_url: str, application_name: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s",
            [application_name],
        ).fetchone()
    assert row is not None
    return int(row[0])


def wait_for_backends(database_url: str, application_name: str, expected: int) -> int:
    """Backends exit a moment after their client hangs up: poll briefly."""
    deadline = time.monotonic() + BACKEND_EXIT_WAIT_S
    while (count := backends_named(database_url, application_name)) != expected:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return count


def test_pool_honours_min_and_max_and_closes_everything(database_url: str) -> None:
    name = f"chemtest-pool-{uuid.uuid4().hex[:8]}"
    settings = DatabaseSettings(url=database_url, min_connections=2, max_connections=3)
    pool = open_pool(settings, migrate=False, name=name)
    try:
        stats = pool.get_stats()
        assert (stats["pool_min"], stats["pool_max"], stats["pool_size"]) == (2, 3, 2)
        assert wait_for_backends(database_url, name, 2) == 2

        held = [pool.getconn() for _ in range(3)]
        try:
            assert all(not conn.autocommit for conn in held)
            with pytest.raises(PoolTimeout):
                pool.getconn(timeout=0.2)
            assert backends_named(database_url, name) == 3
        finally:
            for conn in held:
                pool.putconn(conn)
    finally:
        pool.close()
    assert wait_for_backends(database_url, name, 0) == 0


def test_session_pool_fixture_is_migrated_and_transactional(pool: Pool, database_url: str) -> None:
    assert migrate.current(database_url) == migrate.head_revision() == "0007"
    with pool.connection() as conn:
        assert not conn.autocommit
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        conn.execute("SELECT to_regclass('event_log')::text").fetchone()
        # a statement opened a transaction the block will end: not autocommit
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert conn.execute("SELECT to_regclass('event_log')::text").fetchone() == ("event_log",)
    stats = pool.get_stats()
    assert (stats["pool_min"], stats["pool_max"]) == (
        DEFAULT_MIN_CONNECTIONS,
        DEFAULT_MAX_CONNECTIONS,
    )


@pytest.mark.parametrize("migrate_first", [True, False], ids=["migrating", "opening"])
def test_open_errors_show_only_the_redacted_url(
    caplog: pytest.LogCaptureFixture, migrate_first: bool
) -> None:
    settings = DatabaseSettings(
        url=f"postgresql://chem:{SECRET}@127.0.0.1:1/chem", min_connections=1, max_connections=1
    )
    with caplog.at_level(logging.DEBUG), pytest.raises(PoolOpenError) as caught:
        open_pool(settings, migrate=migrate_first, name="chemtest-unreachable", open_timeout=0.5)
    assert isinstance(caught.value, psycopg.OperationalError)  # classified like any lost server
    assert "postgresql://chem:***@127.0.0.1:1/chem" in str(caught.value)
    assert SECRET not in str(caught.value)
    assert SECRET not in caplog.text
