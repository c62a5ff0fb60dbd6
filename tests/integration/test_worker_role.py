"""``chem-persistence migrate --worker-role ROLE --worker-password-file PATH``: the workers' login
role, made by the owner after migrating, as compose.yaml's migrate service does.

Against the real PostgreSQL: the role is created once and checked on every re-run, it holds
chem_app's rights and nothing else, its password is the file's (sent as a SCRAM verifier, never
printed), a worker logging in as it (DATABASE_PASSWORD_FILE) drains events but cannot change
them, and a role with more rights is refused untouched. Each test's roles are its own and are
dropped at the end (roles are cluster-wide).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import redis
from psycopg import errors, sql

from chem_persistence.eventlog.config import DatabaseSettings
from chem_persistence.eventlog.pool import open_pool
from chem_persistence.eventlog.roles import APP_ROLE, RoleRefused, ensure_login_role
from chem_persistence.eventlog.store import PgEventStore
from tests.integration.security_helpers import (
    Env,
    emit_example_flows,
    emitted_flows,
    run_burst_worker,
    run_cli,
    with_user,
)


@pytest.fixture
def role_names(admin_url: str) -> Iterator[list[str]]:
    """Append the names of the roles a test makes: they are dropped when it ends."""
    names: list[str] = []
    yield names
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for name in names:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                [name],
            )
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def new_role(names: list[str]) -> str:
    name = f"chem_worker_{uuid.uuid4().hex[:12]}"
    names.append(name)
    return name


def password_file(tmp_path: Path) -> tuple[str, Path]:
    password = f"pw-{secrets.token_urlsafe(18)}"
    path = tmp_path / f"password-{uuid.uuid4().hex[:6]}"
    path.write_text(password + "\n")
    return password, path


def role_row(url: str, role: str) -> dict[str, object]:
    with psycopg.connect(url) as conn:
        cur = conn.execute(
            "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolreplication,"
            " rolbypassrls, rolpassword, pg_has_role(rolname, %s, 'USAGE') AS inherits,"
            " EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.member = a.oid"
            "   AND m.roleid = %s::regrole) AS member"
            " FROM pg_authid a WHERE rolname = %s",
            [APP_ROLE, APP_ROLE, role],
        )
        row = cur.fetchone()
        assert row is not None, f"role {role} missing"
        names = [d.name for d in cur.description or []]
    return dict(zip(names, row, strict=True))


def scram_matches(verifier: str, password: str) -> bool:
    """Whether a SCRAM-SHA-256 verifier (RFC 5802/7677, as pg_authid stores it) is of
    ``password``: what the server would accept at login, without a password-checked login."""
    match = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)", verifier)
    assert match, verifier[:20]
    iterations, salt, stored_key = int(match[1]), base64.b64decode(match[2]), match[3]
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return base64.b64encode(hashlib.sha256(client_key).digest()).decode() == stored_key


def refused(url: str, statement: str) -> psycopg.Error:
    with psycopg.connect(url) as conn:
        try:
            conn.execute(statement)
        except psycopg.Error as exc:
            return exc
    raise AssertionError(f"not refused: {statement}")


def test_migrate_makes_the_role_once_and_checks_it_on_every_run(
    empty_database_url: str, redis_url: str, tmp_path: Path, role_names: list[str]
) -> None:
    role = new_role(role_names)
    password, path = password_file(tmp_path)
    env = Env.new(empty_database_url, redis_url, "role").variables()
    args = ("migrate", f"--worker-role={role}", f"--worker-password-file={path}")

    first = run_cli(env, *args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "to 0007" in first.stdout and f"role {role} created" in first.stdout
    again = run_cli(env, *args)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already at 0007" in again.stdout and f"role {role} checked" in again.stdout
    for result in (first, again):
        assert password not in result.stdout + result.stderr

    row = role_row(empty_database_url, role)
    assert row["rolcanlogin"] and row["inherits"]
    assert not any(row[k] for k in ("rolsuper", "rolcreaterole", "rolcreatedb", "rolreplication"))
    assert not row["rolbypassrls"]
    verifier = str(row["rolpassword"])
    assert verifier.startswith("SCRAM-SHA-256$") and password not in verifier
    assert scram_matches(verifier, password)
    assert not scram_matches(verifier, password + "x")


def test_a_worker_logging_in_as_the_role_appends_but_cannot_change_anything(
    empty_database_url: str,
    redis_url: str,
    redis_conn: redis.Redis,
    tmp_path: Path,
    role_names: list[str],
) -> None:
    role = new_role(role_names)
    password, path = password_file(tmp_path)
    owner = Env.new(empty_database_url, redis_url, "role-w")
    made = run_cli(owner.variables(), "migrate", "--worker-role", role)
    assert made.returncode == 0, made.stdout + made.stderr
    made = run_cli(
        owner.variables(), "migrate", "--worker-role", role, "--worker-password-file", str(path)
    )
    assert made.returncode == 0, made.stdout + made.stderr

    # the worker's URL has no password: it comes from DATABASE_PASSWORD_FILE, as in compose
    role_url = with_user(empty_database_url, role)
    worker = Env(role_url, redis_url, owner.queue, owner.prefix)
    queued = emit_example_flows(worker.settings, 2)
    log = tmp_path / "worker.log"
    code = run_burst_worker(worker.variables(DATABASE_PASSWORD_FILE=str(path)), log)
    output = log.read_text()
    assert code == 0, output
    assert "Running upgrade" not in output and password not in output

    settings = DatabaseSettings(url=role_url, min_connections=1, max_connections=1)
    with open_pool(settings, name="chem-test-role") as pool:
        store = PgEventStore(pool)
        for flow in emitted_flows(queued):
            assert store.list(flow) == queued.list(flow)
        with pool.connection() as conn:
            assert conn.execute("SELECT current_user").fetchone() == (role,)

    for statement in (
        "UPDATE event_log SET payload = '{}'",
        "DELETE FROM event_log",
        "TRUNCATE event_log",
        "ALTER TABLE event_log DISABLE TRIGGER USER",
        "DELETE FROM workflow_step_artifacts",
        f"CREATE ROLE x_{role} LOGIN",
        f"CREATE TABLE t_{role} (i int)",
    ):
        error = refused(role_url, statement)
        assert isinstance(error, errors.InsufficientPrivilege), (statement, error)
        assert error.sqlstate == "42501", (statement, error)


def test_an_existing_role_is_completed_or_refused_never_widened(
    migrated_database_url: str, admin_url: str, role_names: list[str]
) -> None:
    url = migrated_database_url
    plain, superuser = new_role(role_names), new_role(role_names)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(plain)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER").format(sql.Identifier(superuser)))

    done = ensure_login_role(url, plain, None)  # made LOGIN and a member; no password asked
    assert (done.created, done.granted, done.login_enabled, done.password_set) == (
        False,
        True,
        True,
        False,
    )
    row = role_row(url, plain)
    assert row["rolcanlogin"] and row["member"] and row["inherits"]
    assert row["rolpassword"] is None
    assert ensure_login_role(url, plain, None) == type(done)(plain, False, False, False, False)

    with pytest.raises(RoleRefused, match="SUPERUSER"):
        ensure_login_role(url, superuser, "pw")
    row = role_row(url, superuser)
    assert row["rolsuper"] and not row["member"] and row["rolpassword"] is None

    for bad in ("postgres", APP_ROLE, "Robert'); DROP TABLE event_log;--", "pg_monitor"):
        with pytest.raises(RoleRefused):
            ensure_login_role(url, bad, "pw")


def test_the_command_refuses_a_role_with_more_rights(
    migrated_database_url: str, admin_url: str, redis_url: str, role_names: list[str]
) -> None:
    owner_like = new_role(role_names)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEROLE").format(sql.Identifier(owner_like)))
    env = Env.new(migrated_database_url, redis_url, "role-r").variables()
    result = run_cli(env, "migrate", "--worker-role", owner_like)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "CREATEROLE" in result.stderr and "role of their own" in result.stderr
    assert not role_row(migrated_database_url, owner_like)["member"]
    lone = run_cli(env, "migrate", "--worker-password-file", "/dev/null")
    assert lone.returncode == 2 and "needs --worker-role" in lone.stderr


def test_migrators_making_the_role_at_once_all_succeed(
    migrated_database_url: str, role_names: list[str]
) -> None:
    role = new_role(role_names)
    with ThreadPoolExecutor(4) as pool:
        results = list(
            pool.map(lambda _: ensure_login_role(migrated_database_url, role, "pw"), range(4))
        )
    assert sum(r.created for r in results) == 1
    assert role_row(migrated_database_url, role)["inherits"]
