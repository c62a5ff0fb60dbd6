"""The migrations, against the real PostgreSQL: they give the declared schema, go down and up
again, re-run harmlessly, serialize across processes, backfill flow_seq, and keep the log
append-only."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from alembic import command
from psycopg import errors

from chem_persistence.eventlog import migrate

HEAD = "0007"
REPO_ROOT = Path(migrate.__file__).resolve().parent.parent
SECRET = "topsecret"
CLOSED_PORT_URL = f"postgresql://nobody:{SECRET}@127.0.0.1:1/nowhere"
SUBPROCESS_TIMEOUT_S = 60

SCHEMA_QUERIES = {
    "columns": """
        SELECT table_name, column_name, data_type, is_nullable, column_default
        FROM information_schema.columns
        WHERE table_schema = 'public'
        ORDER BY table_name, ordinal_position
    """,
    "constraints": """
        SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid)
        FROM pg_constraint
        WHERE connamespace = 'public'::regnamespace
        ORDER BY 1, 2
    """,
    "indexes": """
        SELECT tablename, indexname, indexdef
        FROM pg_indexes WHERE schemaname = 'public'
        ORDER BY 1, 2
    """,
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid)
        FROM pg_trigger WHERE NOT tgisinternal
        ORDER BY 1, 2
    """,
    "functions": """
        SELECT proname, pg_get_functiondef(oid)
        FROM pg_proc WHERE pronamespace = 'public'::regnamespace
        ORDER BY 1
    """,
    "sequences": """
        SELECT sequencename, data_type, increment_by
        FROM pg_sequences WHERE schemaname = 'public'
        ORDER BY 1
    """,
    # chem_app's own rights (0006, 0007): on tables and sequences, and on single columns
    "privileges": """
        SELECT c.relname, NULL::text, a.privilege_type
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.relnamespace = 'public'::regnamespace AND a.grantee = 'chem_app'::regrole
        UNION ALL
        SELECT c.relname, att.attname::text, a.privilege_type
        FROM pg_attribute att
        JOIN pg_class c ON c.oid = att.attrelid, aclexplode(att.attacl) a
        WHERE c.relnamespace = 'public'::regnamespace AND a.grantee = 'chem_app'::regrole
        ORDER BY 1, 2, 3
    """,
}

EXPECTED_COLUMNS = [
    ("alembic_version", "version_num", "character varying", "NO", None),
    ("event_log", "seq", "bigint", "NO", "nextval('event_log_seq_seq'::regclass)"),
    ("event_log", "flow_id", "uuid", "NO", None),
    ("event_log", "ts", "timestamp with time zone", "NO", "now()"),
    ("event_log", "event_type", "text", "NO", None),
    ("event_log", "payload", "jsonb", "NO", None),
    ("event_log", "flow_seq", "integer", "NO", None),
    ("workflow_step_artifacts", "artifact_hash", "text", "NO", None),
    ("workflow_step_artifacts", "kind", "text", "NO", None),
    ("workflow_step_artifacts", "payload", "jsonb", "NO", None),
    ("workflow_step_artifacts", "metadata", "jsonb", "YES", None),
    ("workflow_step_artifacts", "produced_in_seq", "bigint", "NO", None),
]

EVENT_TYPES = (
    "flowinitialized",
    "stepstarted",
    "stepfinished",
    "stepfailed",
    "stepsignal",
    "propertypreferenceassigned",
    "flowcompleted",
)

# name -> (table, contype, a fragment of its definition)
EXPECTED_CONSTRAINTS = {
    "alembic_version_pkc": ("alembic_version", "p", "PRIMARY KEY (version_num)"),
    "event_log_pkey": ("event_log", "p", "PRIMARY KEY (seq)"),
    "event_log_event_type_check": ("event_log", "c", "(event_type = lower(event_type))"),
    "event_log_event_type_known": ("event_log", "c", "'propertypreferenceassigned'::text"),
    "event_log_flow_seq_check": ("event_log", "c", "(flow_seq >= 0)"),
    "event_log_flow_id_flow_seq_key": ("event_log", "u", "UNIQUE (flow_id, flow_seq)"),
    "workflow_step_artifacts_pkey": ("workflow_step_artifacts", "p", "PRIMARY KEY (artifact_hash)"),
    "workflow_step_artifacts_artifact_hash_check": (
        "workflow_step_artifacts",
        "c",
        "(length(artifact_hash) = 64)",
    ),
    "workflow_step_artifacts_produced_in_seq_fkey": (
        "workflow_step_artifacts",
        "f",
        "FOREIGN KEY (produced_in_seq) REFERENCES event_log(seq)",
    ),
}

EXPECTED_INDEXES = {
    "alembic_version_pkc": "(version_num)",
    "event_log_pkey": "(seq)",
    "event_log_flow_id_seq_idx": "(flow_id, seq)",
    "event_log_flow_id_flow_seq_key": "UNIQUE INDEX event_log_flow_id_flow_seq_key "
    "ON public.event_log USING btree (flow_id, flow_seq)",
    "workflow_step_artifacts_pkey": "(artifact_hash)",
    "workflow_step_artifacts_produced_in_seq_idx": "(produced_in_seq)",
}


def schema_dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        return {name: conn.execute(query).fetchall() for name, query in SCHEMA_QUERIES.items()}


def fetch(url: str, query: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params or None).fetchall()


def insert_event(conn: psycopg.Connection[Any], flow_id: uuid.UUID, **columns: object) -> int:
    values = {"flow_id": flow_id, "event_type": "stepstarted", "payload": "{}", **columns}
    names = ", ".join(values)
    marks = ", ".join(["%s"] * len(values))
    row = conn.execute(
        f"INSERT INTO event_log ({names}) VALUES ({marks}) RETURNING seq",  # type: ignore[arg-type]
        list(values.values()),
    ).fetchone()
    assert row is not None
    return int(row[0])


def alembic_command() -> list[str]:
    script = Path(sys.executable).parent / "alembic"
    return [str(script)] if script.exists() else [sys.executable, "-m", "alembic"]


# --- The declared schema ------------------------------------------------------------------


def test_session_database_has_the_declared_schema(database_url: str) -> None:
    dump = schema_dump(database_url)

    assert dump["columns"] == EXPECTED_COLUMNS

    constraints = {
        name: (table, kind, definition) for table, name, kind, definition in dump["constraints"]
    }
    assert set(constraints) == set(EXPECTED_CONSTRAINTS)
    for name, (table, kind, fragment) in EXPECTED_CONSTRAINTS.items():
        assert constraints[name][:2] == (table, kind), name
        assert fragment in constraints[name][2], (name, constraints[name][2])
    known = constraints["event_log_event_type_known"][2]
    assert sorted(re.findall(r"'(\w+)'::text", known)) == sorted(EVENT_TYPES)

    indexes = {name: definition for _, name, definition in dump["indexes"]}
    assert set(indexes) == set(EXPECTED_INDEXES)
    for name, fragment in EXPECTED_INDEXES.items():
        assert fragment in indexes[name], (name, indexes[name])

    triggers = {name: definition for _, name, definition in dump["triggers"]}
    assert set(triggers) == {"event_log_append_only_row", "event_log_append_only_truncate"}
    row_trigger = triggers["event_log_append_only_row"]
    assert "BEFORE DELETE OR UPDATE ON public.event_log FOR EACH ROW" in row_trigger
    truncate_trigger = triggers["event_log_append_only_truncate"]
    assert "BEFORE TRUNCATE ON public.event_log FOR EACH STATEMENT" in truncate_trigger
    assert [name for name, _ in dump["functions"]] == ["event_log_append_only"]

    assert fetch(database_url, "SELECT version_num FROM alembic_version") == [(HEAD,)]
    assert migrate.current(database_url) == HEAD


def test_upgrade_downgrade_upgrade_on_an_empty_database(empty_database_url: str) -> None:
    url = empty_database_url
    assert migrate.current(url) is None

    migrate.upgrade(url)
    at_head = schema_dump(url)
    assert migrate.current(url) == HEAD

    migrate.downgrade(url, "base")
    assert migrate.current(url) is None
    emptied = schema_dump(url)
    assert {row[0] for row in emptied["columns"]} == {"alembic_version"}
    assert [row[1] for row in emptied["constraints"]] == ["alembic_version_pkc"]
    assert emptied["triggers"] == emptied["functions"] == emptied["sequences"] == []

    migrate.upgrade(url)
    assert migrate.current(url) == HEAD
    assert schema_dump(url) == at_head


def test_each_step_down_and_up_again(empty_database_url: str) -> None:
    url = empty_database_url
    migrate.upgrade(url)
    at_head = schema_dump(url)
    for revision in ("0006", "0005", "0004", "0003", "0002", "0001"):
        migrate.downgrade(url, revision)
        assert migrate.current(url) == revision
    migrate.upgrade(url)
    assert schema_dump(url) == at_head


def test_migrating_again_changes_nothing(empty_database_url: str) -> None:
    url = empty_database_url
    migrate.upgrade(url)
    with psycopg.connect(url) as conn:  # rows present: re-running 0004/0005 must not touch them
        insert_event(conn, uuid.uuid4(), flow_seq=0)
    before = schema_dump(url)

    migrate.upgrade(url)  # at head: nothing to do
    assert schema_dump(url) == before

    # Forget the version and run every revision again over the existing schema: the IF NOT
    # EXISTS / DO-block guards make each of them a no-op.
    command.stamp(migrate.alembic_config(url), "base")
    assert migrate.current(url) is None
    migrate.upgrade(url)
    assert migrate.current(url) == HEAD
    assert schema_dump(url) == before
    assert fetch(url, "SELECT count(*), min(flow_seq) FROM event_log") == [(1, 0)]


# --- Concurrency --------------------------------------------------------------------------

MIGRATOR = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from chem_persistence.eventlog.config import DatabaseSettings
from chem_persistence.eventlog.pool import open_pool
settings = DatabaseSettings(url=sys.argv[1], min_connections=1, max_connections=1)
print("ready", flush=True)
sys.stdin.readline()
open_pool(settings, name=sys.argv[2]).close()
print("done", flush=True)
"""


@pytest.mark.slow
def test_ten_processes_opening_pools_at_once_migrate_once(empty_database_url: str) -> None:
    url = empty_database_url
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATOR, url, f"migrator-{i}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
        )
        for i in range(10)
    ]
    try:
        # Every process has paid its start-up and imports; now release them together.
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready"
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        results = [process.communicate(timeout=SUBPROCESS_TIMEOUT_S) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    for process, (out, err) in zip(processes, results, strict=True):
        assert process.returncode == 0, err
        assert out.strip() == "done", err
    all_stderr = "".join(err for _, err in results)
    # One process ran the seven revisions; the nine others waited on the lock, found head.
    assert all_stderr.count("Running upgrade") == 7, all_stderr
    assert fetch(url, "SELECT version_num FROM alembic_version") == [(HEAD,)]


def test_open_pool_migrates_a_fresh_database(empty_database_url: str) -> None:
    from chem_persistence.eventlog.config import DatabaseSettings
    from chem_persistence.eventlog.pool import open_pool

    settings = DatabaseSettings(url=empty_database_url, min_connections=1, max_connections=1)
    open_pool(settings, name="chem-test-migrate").close()
    assert migrate.current(empty_database_url) == HEAD
    open_pool(settings, migrate=False, name="chem-test-migrate").close()


# --- 0004: backfill of databases written before flow_seq existed --------------------------


def test_flow_seq_backfill_numbers_each_flow_in_seq_order(empty_database_url: str) -> None:
    url = empty_database_url
    migrate.upgrade(url, "0003")
    flow_a, flow_b = uuid.uuid4(), uuid.uuid4()
    order = [flow_a, flow_b, flow_a, flow_a, flow_b, flow_a]
    with psycopg.connect(url) as conn:  # as the older synchronous store wrote them
        for flow_id in order:
            insert_event(conn, flow_id)

    migrate.upgrade(url)

    rows = fetch(url, "SELECT flow_id, seq, flow_seq FROM event_log ORDER BY seq")
    assert [flow_id for flow_id, _, _ in rows] == order
    for flow_id in (flow_a, flow_b):
        positions = [flow_seq for fid, _, flow_seq in rows if fid == flow_id]
        assert positions == list(range(order.count(flow_id)))

    with psycopg.connect(url) as conn:
        with pytest.raises(errors.UniqueViolation) as caught:
            insert_event(conn, flow_b, flow_seq=1)
        assert caught.value.diag.constraint_name == "event_log_flow_id_flow_seq_key"
    with psycopg.connect(url) as conn, pytest.raises(errors.CheckViolation) as caught:
        insert_event(conn, uuid.uuid4(), flow_seq=-1)
    assert caught.value.diag.constraint_name == "event_log_flow_seq_check"
    with psycopg.connect(url) as conn, pytest.raises(errors.NotNullViolation):
        insert_event(conn, uuid.uuid4())


# --- Constraints and 0005: append-only ----------------------------------------------------


def test_event_type_must_be_a_known_lowercase_kind(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        for event_type, constraint in [
            ("StepStarted", "event_log_event_type_check"),
            ("stepexploded", "event_log_event_type_known"),
        ]:
            with pytest.raises(errors.CheckViolation) as caught, conn.transaction():
                insert_event(conn, uuid.uuid4(), flow_seq=0, event_type=event_type)
            assert caught.value.diag.constraint_name == constraint
        conn.rollback()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE event_log SET payload = '{\"x\": 1}' WHERE seq = %s",
        "DELETE FROM event_log WHERE seq = %s",
        "TRUNCATE event_log CASCADE",
    ],
    ids=["update", "delete", "truncate"],
)
def test_event_log_is_append_only(database_url: str, statement: str) -> None:
    with psycopg.connect(database_url) as conn:
        try:
            seq = insert_event(conn, uuid.uuid4(), flow_seq=0)  # inserting is allowed
            with pytest.raises(errors.RaiseException) as caught, conn.transaction():
                conn.execute(statement, [seq] if "%s" in statement else None)  # type: ignore[arg-type]
            assert caught.value.sqlstate == "P0001"
            assert "event_log is append-only" in str(caught.value)
            assert statement.split()[0] in str(caught.value)
            assert conn.execute(
                "SELECT count(*) FROM event_log WHERE seq = %s", [seq]
            ).fetchone() == (1,)
        finally:
            conn.rollback()  # leave the session database as it was


def test_plain_truncate_is_rejected_too(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        try:
            with pytest.raises(psycopg.Error):
                conn.execute("TRUNCATE event_log")
        finally:
            conn.rollback()


# --- Passwords -----------------------------------------------------------------------------


def with_password(url: str, password: str) -> tuple[str, str]:
    """``url`` with a password, and that password: the URL's own when it has one (a server
    that checks passwords needs the real one), else ``password`` (a trusting server ignores
    it). Either way the test then hunts for that password in every log line and error."""
    parts = urlsplit(url)
    if parts.password is not None:
        return url, parts.password
    user, _, hosts = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user or 'postgres'}:{password}@{hosts}")), password


def test_migration_logs_and_errors_never_show_the_password(
    empty_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    url, secret = with_password(empty_database_url, SECRET)
    assert secret
    with caplog.at_level(logging.DEBUG):
        migrate.upgrade(url)
        assert migrate.current(url) == HEAD
        with pytest.raises(psycopg.OperationalError) as caught:  # the driver's error, as is
            migrate.upgrade(CLOSED_PORT_URL)
    assert ":***@" in caplog.text
    assert secret not in caplog.text
    assert SECRET not in str(caught.value)


# --- Offline SQL and the plain alembic command --------------------------------------------


def test_offline_sql_needs_no_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", CLOSED_PORT_URL)
    text = migrate.offline_sql()
    assert re.search(r"CREATE TABLE (IF NOT EXISTS )?event_log\b", text)
    assert re.search(r"CREATE TABLE (IF NOT EXISTS )?workflow_step_artifacts\b", text)
    assert "CREATE OR REPLACE FUNCTION event_log_append_only()" in text
    assert text.count("COMMIT;") == 7  # one transaction per revision
    assert f"pg_advisory_lock({migrate.MIGRATION_LOCK_KEY})" in text
    assert "UPDATE alembic_version SET version_num='0007'" in text
    assert SECRET not in text


def run_alembic(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*alembic_command(), *args],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        check=False,
    )


def test_plain_alembic_command_from_the_repo_root(empty_database_url: str) -> None:
    upgraded = run_alembic("upgrade", "head", env={"DATABASE_URL": empty_database_url})
    assert upgraded.returncode == 0, upgraded.stderr
    assert "Running upgrade 0005 -> 0006" in upgraded.stderr
    assert "Running upgrade 0006 -> 0007" in upgraded.stderr
    assert migrate.current(empty_database_url) == HEAD

    # -x url=... wins over DATABASE_URL (which points nowhere here)
    shown = run_alembic(
        "-x", f"url={empty_database_url}", "current", env={"DATABASE_URL": CLOSED_PORT_URL}
    )
    assert shown.returncode == 0, shown.stderr
    assert "0007 (head)" in shown.stdout


def test_migrated_database_url_is_a_fresh_clone_at_head(
    migrated_database_url: str, database_url: str
) -> None:
    assert migrated_database_url != database_url
    assert migrate.current(migrated_database_url) == HEAD
    assert fetch(migrated_database_url, "SELECT count(*) FROM event_log") == [(0,)]
    assert schema_dump(migrated_database_url) == schema_dump(database_url)
