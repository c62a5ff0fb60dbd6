"""Least privilege (revisions 0006 and 0007): a worker logging in as a member of chem_app drains
events into PostgreSQL and can do nothing else to them, not even choose an event's ``seq``.

Each test gets a fresh migrated database and a LOGIN role of its own, ``IN ROLE chem_app``,
dropped at the end (roles are cluster-wide; chem_app itself stays, other databases use it).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import redis
from alembic import command
from psycopg import errors, sql

from chem_persistence.domain.events import FlowInitialized, StepStarted
from chem_persistence.eventlog import migrate
from chem_persistence.eventlog.config import DatabaseSettings
from chem_persistence.eventlog.pool import PoolOpenError, open_pool
from chem_persistence.eventlog.store import PgEventStore
from tests.integration.security_helpers import (
    Env,
    emit_example_flows,
    emitted_flows,
    run_burst_worker,
    with_user,
)

APP_ROLE = "chem_app"
TABLES = ("event_log", "workflow_step_artifacts")
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
#: The columns of event_log chem_app may INSERT (0007): every one but seq.
INSERT_COLUMNS = ("flow_id", "flow_seq", "ts", "event_type", "payload")
#: (object, privilege) -> granted, for chem_app in a database at head
EXPECTED_RIGHTS = {
    **{(t, p): p in ("SELECT", "INSERT") for t in TABLES for p in TABLE_PRIVILEGES},
    ("event_log", "INSERT"): False,  # column by column instead (0007)
    **{(f"event_log.{c}", "INSERT"): True for c in INSERT_COLUMNS},
    ("event_log.seq", "INSERT"): False,
    **{("alembic_version", p): p == "SELECT" for p in TABLE_PRIVILEGES},
    ("event_log_seq_seq", "USAGE"): True,
    ("event_log_seq_seq", "SELECT"): True,
    ("event_log_seq_seq", "UPDATE"): False,
    ("schema public", "USAGE"): True,
    ("schema public", "CREATE"): False,
}


def rights(url: str, role: str = APP_ROLE) -> dict[tuple[str, str], bool]:
    """What ``role`` may do, as PostgreSQL answers it (membership and PUBLIC grants ignored:
    the role's own ACL entries only)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """
            SELECT c.relname, a.privilege_type
            FROM pg_class c, aclexplode(c.relacl) a
            WHERE c.relnamespace = 'public'::regnamespace AND a.grantee = %s::regrole
            UNION ALL
            SELECT c.relname || '.' || att.attname, a.privilege_type
            FROM pg_attribute att
            JOIN pg_class c ON c.oid = att.attrelid, aclexplode(att.attacl) a
            WHERE c.relnamespace = 'public'::regnamespace AND a.grantee = %s::regrole
            UNION ALL
            SELECT 'schema ' || n.nspname, a.privilege_type
            FROM pg_namespace n, aclexplode(n.nspacl) a
            WHERE n.nspname = 'public' AND a.grantee = %s::regrole
            """,
            [role, role, role],
        ).fetchall()
    granted = {(name, privilege) for name, privilege in rows}
    return {key: key in granted for key in EXPECTED_RIGHTS} | {
        key: True for key in granted if key not in EXPECTED_RIGHTS
    }


def owner_rights(url: str) -> dict[tuple[str, str], bool]:
    return {key: value for key, value in rights(url).items() if value}


@pytest.fixture
def worker_role(admin_url: str, migrated_database_url: str) -> Iterator[tuple[str, str]]:
    """(role name, its URL on the migrated database): LOGIN, IN ROLE chem_app, nothing else."""
    name = f"chem_worker_{uuid.uuid4().hex[:12]}"
    password = secrets.token_hex(8)  # trust authentication ignores it; password auth needs it
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
                sql.Identifier(name), sql.Literal(password), sql.Identifier(APP_ROLE)
            )
        )
    try:
        yield name, with_user(migrated_database_url, name, password)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                [name],
            )
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def refused(url: str, statement: str, params: list[Any] | None = None) -> psycopg.Error:
    with psycopg.connect(url) as conn:
        try:
            conn.execute(statement, params)
        except psycopg.Error as exc:
            return exc
        finally:
            conn.rollback()
    raise AssertionError(f"not refused: {statement}")


# --- the migration ----------------------------------------------------------------------------


def test_chem_app_has_exactly_the_rights_of_a_worker(migrated_database_url: str) -> None:
    assert rights(migrated_database_url) == EXPECTED_RIGHTS
    with psycopg.connect(migrated_database_url) as conn:
        row = conn.execute(
            "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb FROM pg_roles"
            " WHERE rolname = %s",
            [APP_ROLE],
        ).fetchone()
    assert row == (False, False, False, False)


def test_0006_reruns_over_an_existing_role_and_restores_exactly_its_rights(
    migrated_database_url: str, database_url: str
) -> None:
    url = migrated_database_url
    with psycopg.connect(url) as conn:  # someone widened the role by hand
        conn.execute(f"GRANT UPDATE, DELETE, TRUNCATE ON event_log TO {APP_ROLE}")
    assert rights(url)[("event_log", "UPDATE")]

    command.stamp(migrate.alembic_config(url), "0005")
    migrate.upgrade(url)  # the role exists (cluster-wide): created by whoever migrated first
    assert migrate.current(url) == "0007"
    assert rights(url) == EXPECTED_RIGHTS

    migrate.upgrade(url)  # at head: nothing to do
    assert rights(url) == EXPECTED_RIGHTS
    assert rights(database_url) == EXPECTED_RIGHTS  # another database was never touched


def test_0006_downgrade_revokes_here_only_and_keeps_the_role(
    migrated_database_url: str, database_url: str
) -> None:
    url = migrated_database_url
    migrate.downgrade(url, "0005")
    assert migrate.current(url) == "0005"
    assert owner_rights(url) == {}, "no right left in this database"
    assert rights(database_url) == EXPECTED_RIGHTS, "other databases keep theirs"
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [APP_ROLE]).fetchone()

    migrate.upgrade(url)
    assert rights(url) == EXPECTED_RIGHTS


def test_0006_offline_sql_creates_the_role_only_when_missing() -> None:
    text = migrate.offline_sql()
    assert f"CREATE ROLE {APP_ROLE} NOLOGIN" in text
    assert "IF NOT EXISTS (SELECT 1 FROM pg_roles" in text
    assert f"GRANT SELECT, INSERT ON TABLE event_log, workflow_step_artifacts TO {APP_ROLE}" in text
    assert "UPDATE alembic_version SET version_num='0006'" in text
    assert f"GRANT INSERT ({', '.join(INSERT_COLUMNS)}) ON TABLE event_log TO {APP_ROLE}" in text


# --- a worker with least privilege ----------------------------------------------------------


def test_a_chem_app_worker_drains_but_cannot_change_the_log(
    worker_role: tuple[str, str],
    migrated_database_url: str,
    admin_url: str,
    redis_url: str,
    redis_conn: redis.Redis,
    tmp_path: Path,
) -> None:
    role, role_url = worker_role
    env = Env.new(role_url, redis_url, "lp")
    queued = emit_example_flows(env.settings, 3)
    flows = emitted_flows(queued)

    log = tmp_path / "worker.log"
    code = run_burst_worker(env.variables(), log)
    output = log.read_text()
    assert code == 0, output
    assert "Running upgrade" not in output  # the database is at head: nothing to migrate

    # the events landed, read back as the worker role (which may SELECT)
    settings = DatabaseSettings(url=role_url, min_connections=1, max_connections=2)
    with open_pool(settings, name="chem-test-lp") as pool:  # at head: opens without DDL rights
        store = PgEventStore(pool)
        for flow in flows:
            assert store.list(flow) == queued.list(flow)
        with pool.connection() as conn:
            assert conn.execute("SELECT current_user").fetchone() == (role,)
            row = conn.execute("SELECT count(*) FROM workflow_step_artifacts").fetchone()
            assert row is not None and row[0] > 0

    # the worker role may not change or remove anything: refused by privilege
    for statement in (
        "UPDATE event_log SET payload = '{}'",
        "DELETE FROM event_log",
        "TRUNCATE event_log",
        "TRUNCATE event_log CASCADE",
        "UPDATE workflow_step_artifacts SET kind = 'x'",
        "DELETE FROM workflow_step_artifacts",
        "TRUNCATE workflow_step_artifacts",
        "DROP TABLE event_log",
        "ALTER TABLE event_log DISABLE TRIGGER USER",
        "SELECT setval('event_log_seq_seq', 1)",
        "DELETE FROM alembic_version",
    ):
        error = refused(role_url, statement)
        assert isinstance(error, errors.InsufficientPrivilege), (statement, error)
        assert error.sqlstate == "42501"

    # the owner is refused too, by the append-only trigger of 0005
    owner_url = migrated_database_url
    for statement in ("UPDATE event_log SET payload = '{}'", "DELETE FROM event_log"):
        error = refused(owner_url, statement)
        assert isinstance(error, errors.RaiseException), (statement, error)
        assert error.sqlstate == "P0001" and "append-only" in str(error)
    # nothing changed
    with psycopg.connect(owner_url) as conn:
        row = conn.execute("SELECT count(*) FROM event_log").fetchone()
    assert row == (sum(len(queued.list(f)) for f in flows),)


def test_a_chem_app_worker_will_not_migrate_and_says_who_should(
    worker_role: tuple[str, str], migrated_database_url: str
) -> None:
    _, role_url = worker_role
    migrate.downgrade(migrated_database_url, "0005")  # an owner deployed older code
    settings = DatabaseSettings(url=role_url, min_connections=1, max_connections=1)
    with pytest.raises(PoolOpenError) as caught:
        open_pool(settings, name="chem-test-lp").close()
    message = str(caught.value)
    assert "chem-persistence migrate" in message and "owner" in message
    assert "0007" in message
    password = urlsplit(role_url).password
    assert password and password not in message
    assert migrate.current(migrated_database_url) == "0005"  # it changed nothing


# --- 0007: no explicit seq ------------------------------------------------------------------


def test_0007_downgrade_gives_back_the_table_insert_and_upgrade_takes_it_again(
    migrated_database_url: str, database_url: str
) -> None:
    url = migrated_database_url
    migrate.downgrade(url, "0006")
    assert migrate.current(url) == "0006"
    at_0006 = rights(url)
    assert at_0006[("event_log", "INSERT")]
    assert not any(at_0006[(f"event_log.{c}", "INSERT")] for c in INSERT_COLUMNS)
    assert rights(database_url) == EXPECTED_RIGHTS, "other databases keep theirs"
    migrate.upgrade(url)
    assert rights(url) == EXPECTED_RIGHTS


def test_a_chem_app_login_appends_but_cannot_insert_an_explicit_seq(
    worker_role: tuple[str, str], migrated_database_url: str
) -> None:
    role, role_url = worker_role
    flow = uuid.uuid4()
    # an explicit seq far ahead of the sequence: exactly what would break every later append
    error = refused(
        role_url,
        "INSERT INTO event_log (seq, flow_id, flow_seq, event_type, payload)"
        " VALUES (1000000, %s, 0, 'stepstarted', '{}')",
        [flow],
    )
    assert isinstance(error, errors.InsufficientPrivilege), error
    assert error.sqlstate == "42501"

    # the same role appends normally: seq comes from the sequence
    settings = DatabaseSettings(url=role_url, min_connections=1, max_connections=1)
    with open_pool(settings, name="chem-test-lp-seq") as pool:
        store = PgEventStore(pool)
        kinds = [FlowInitialized("f" * 64, 1), StepStarted(0, "acquire")]
        stored = [store.append(flow, kind) for kind in kinds]
        assert [e.seq for e in stored] == [0, 1]
        assert store.list(flow) == stored
        with pool.connection() as conn:
            assert conn.execute("SELECT current_user").fetchone() == (role,)
    with psycopg.connect(migrated_database_url) as conn:
        rows = conn.execute(
            "SELECT seq FROM event_log WHERE flow_id = %s ORDER BY flow_seq", [flow]
        ).fetchall()
    assert [r[0] for r in rows] == [e.log_seq for e in stored]
    assert all(r[0] < 1000000 for r in rows)
