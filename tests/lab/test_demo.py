"""`chem-persistence demo`: the whole pipeline end to end, with its parity check."""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import fakeredis
import psycopg
import pytest
import redis
from psycopg import sql
from rich.console import Console
from rich.table import Table
from rq import Queue

from chem_persistence.eventlog.config import url_with_database
from chem_persistence.producer.config import QueueSettings
from lab import demo
from lab.demo import Summary, run_demo
from lab.ports import free_port
from tests.redis_claim import CLAIM_KEY

ROOT = Path(__file__).resolve().parents[2]
FLOWS = 30
DEMO_TIMEOUT_S = 120


def _demo_env(database_url: str, redis_url: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CHEM_", "DATABASE_"))},
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
    }


def _demo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chem_persistence.worker.cli", "demo", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,  # a deadline, not a pace
        check=False,
    )


def _created(stderr: str) -> str:
    """The name of the database the demo says it created."""
    found = re.search(r"^demo: created database (chem_demo_\w+) on ", stderr, re.M)
    assert found, stderr
    return found.group(1)


def _exists(admin_url: str, name: str) -> bool:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


def _snapshot(url: str) -> dict[str, object]:
    """Every table (any schema but the catalogs) with its row count, and the sequences."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
        ).fetchall()
        counts = {
            f"{schema}.{name}": conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, name))
            ).fetchone()
            for schema, name in tables
        }
        sequences = conn.execute(
            "SELECT schemaname, sequencename, last_value FROM pg_sequences ORDER BY 1, 2"
        ).fetchall()
    return {"counts": counts, "sequences": sequences}


#: Keys of someone else in the demo's Redis DB, some named like the demo's own.
BYSTANDERS = {
    "someone:else": "theirs",
    "chemdemo-0000000000000000:claim": "another demo's claim",
    "chem-demo-other:q": "looks like a demo queue",
    "rq:queue:someone-elses-queue": "their rq queue",
}


def test_demo_stores_every_flow_at_parity_and_touches_nothing_it_did_not_create(
    admin_url: str, migrated_database_url: str, redis_url: str, redis_conn: redis.Redis
) -> None:
    """DATABASE_URL names a database with data in it: the demo creates its own beside it and
    drops it at the end; the named database and the Redis keys of others are untouched."""
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE bystander (x int)")
        conn.execute("INSERT INTO bystander VALUES (1), (2)")
    before = _snapshot(migrated_database_url)
    for key, value in BYSTANDERS.items():
        redis_conn.set(key, value)
    redis_conn.sadd(Queue.redis_queues_keys, "rq:queue:someone-elses-queue")

    result = _demo(
        _demo_env(migrated_database_url, redis_url),
        *("--flows", str(FLOWS), "--workers", "2", "--batch-size", "50", "--json"),
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # stdout is the summary alone: workers print nothing there

    assert summary["flows"] == FLOWS
    assert summary["flows_at_parity"] == FLOWS
    assert summary["mismatches"] == []
    assert summary["events"] > FLOWS  # at least FlowInitialized and more per flow
    assert summary["artifacts"] > 0
    assert summary["dead_letters"] == 0
    assert summary["workers"] == 2
    assert summary["batch_size"] == 50
    assert summary["throughput_events_per_s"] > 0
    assert 0 < summary["failed_flows"] < FLOWS  # example flows: every 7th fails at a step
    assert 0 < summary["policy_flows"] < FLOWS
    assert summary["latency_p50_ms"] is not None  # scraped from the workers' /metrics
    assert summary["latency_p50_ms"] <= summary["latency_p99_ms"]
    assert set(summary) == set(Summary.__dataclass_fields__)

    # PostgreSQL: the named database is as it was; the demo's own is gone.
    assert _snapshot(migrated_database_url) == before
    name = _created(result.stderr)
    assert f"demo: dropped database {name}" in result.stderr
    assert not _exists(admin_url, name)

    # Redis: exactly the others' keys are left, with their values; the demo's own keys
    # (prefix, queue, jobs, worker hashes) are all gone, and rq lists only the others' queue.
    left = {key.decode() for key in redis_conn.scan_iter(count=1000)}
    assert left == {*BYSTANDERS, CLAIM_KEY, Queue.redis_queues_keys}
    assert {k: redis_conn.get(k).decode() for k in BYSTANDERS} == BYSTANDERS  # type: ignore[union-attr]
    assert redis_conn.smembers(Queue.redis_queues_keys) == {b"rq:queue:someone-elses-queue"}


def test_demo_keep_leaves_its_database_holding_the_flows(
    admin_url: str, redis_url: str, redis_conn: redis.Redis
) -> None:
    """--keep: the demo's database stays, its URL is printed (no password), it holds every
    flow. DATABASE_URL names a database that does not exist: only its server is used."""
    absent = f"chem_test_absent_{secrets.token_hex(4)}"
    result = _demo(
        _demo_env(url_with_database(admin_url, absent), redis_url),
        *("--flows", "10", "--workers", "1", "--keep", "--json"),
    )
    assert result.returncode == 0, result.stderr
    name = _created(result.stderr)
    try:
        kept = re.search(rf"^demo: kept database {name}: (\S+)$", result.stderr, re.M)
        assert kept, result.stderr
        summary = json.loads(result.stdout)
        with psycopg.connect(kept.group(1)) as conn:
            events, flows = conn.execute(
                "SELECT count(*), count(DISTINCT flow_id) FROM event_log"
            ).fetchone() or (0, 0)
        assert (events, flows) == (summary["events"], 10)
        assert summary["flows_at_parity"] == 10
        assert not _exists(admin_url, absent)  # the named database was never created
    finally:
        assert name.startswith("chem_demo_")  # the demo's, as it said: ours to drop
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _no_role_may_create(admin_url: str) -> Iterator[str]:
    role = f"chem_test_nocreatedb_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOCREATEDB").format(sql.Identifier(role)))
    try:
        yield role
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.mark.parametrize(
    ("case", "setting", "code"),
    [
        ("database-unreachable", "DATABASE_URL", 3),
        ("database-not-a-url", "DATABASE_URL", 2),
        ("database-no-createdb", "DATABASE_URL", 3),
        ("redis-unreachable", "REDIS_URL", 3),
        ("redis-not-a-url", "REDIS_URL", 2),
    ],
)
def test_a_server_that_refuses_is_one_line_naming_the_setting(
    admin_url: str, redis_url: str, case: str, setting: str, code: int
) -> None:
    closed = free_port()  # nothing listens there
    database_url, redis_target = admin_url, redis_url
    roles = _no_role_may_create(admin_url)
    if case == "database-unreachable":
        database_url = f"postgresql://postgres@127.0.0.1:{closed}/postgres"
    elif case == "database-not-a-url":
        database_url = "not a url"
    elif case == "database-no-createdb":
        server = urlsplit(admin_url)
        netloc = f"{next(roles)}@{server.hostname}:{server.port or 5432}"
        database_url = server._replace(netloc=netloc).geturl()
    elif case == "redis-unreachable":
        redis_target = f"redis://127.0.0.1:{closed}/0"
    else:
        redis_target = "http://127.0.0.1:6379/0"
    try:
        result = _demo(_demo_env(database_url, redis_target), "--flows", "5")
    finally:
        roles.close()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"demo: {setting}: "), lines[0]
    assert result.returncode == code, result.stderr
    assert result.stdout == ""
    assert "created database" not in result.stderr


def test_sigterm_stops_the_workers_and_drops_the_demos_database(
    admin_url: str, redis_url: str, redis_conn: redis.Redis, tmp_path: Path
) -> None:
    log = tmp_path / "demo.err"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chem_persistence.worker.cli",
                "demo",
                "--flows",
                "5000",
                "--workers",
                "2",
            ],
            env=_demo_env(admin_url, redis_url),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        _wait_for(lambda: log.read_text().count("action=worker_start") == 2, proc, log)
        name = _created(log.read_text())
        assert _exists(admin_url, name)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEMO_TIMEOUT_S) == 130, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert f"demo: dropped database {name}" in text
    assert not _exists(admin_url, name)
    assert [k for k in redis_conn.scan_iter(count=1000) if k != CLAIM_KEY.encode()] == []
    running = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    run_id = re.search(r"rq queue chem-demo-(\w+)", text)
    assert run_id and f"demo-{run_id.group(1)}" not in running.stdout  # workers stopped


def _wait_for(done: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + DEMO_TIMEOUT_S
    while not done():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


def test_demo_on_embedded_servers_reaches_parity_and_stops_them(tmp_path: Path) -> None:
    """--embedded: real PostgreSQL and Valkey from wheels under ./.chem/, even though local
    servers answer; every flow at parity, and no server process left running afterwards."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("CHEM_", "DATABASE_", "REDIS_"))
    }
    workdir = tmp_path / "demo"
    workdir.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "chem_persistence.worker.cli",
            "demo",
            "--embedded",
            "--flows",
            "20",
            "--json",
        ],
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["flows_at_parity"] == summary["flows"] == 20
    assert summary["mismatches"] == []
    assert (workdir / ".chem" / "pgdata" / "PG_VERSION").exists()  # it really ran embedded
    running = subprocess.run(
        ["ps", "-ww", "-eo", "args"], capture_output=True, text=True, check=True
    )
    assert str(workdir) not in running.stdout  # both servers stopped on exit


def _summary(**overrides: object) -> Summary:
    values: dict[str, object] = {
        "flows": 30,
        "events": 279,
        "artifacts": 93,
        "failed_flows": 5,
        "policy_flows": 10,
        "dead_letters": 0,
        "workers": 2,
        "batch_size": 50,
        "seconds": 0.5,
        "throughput_events_per_s": 558.0,
        "latency_p50_ms": 100.0,
        "latency_p99_ms": 250.0,
        "flows_at_parity": 30,
        "mismatches": [],
    }
    values.update(overrides)
    return Summary(**values)  # type: ignore[arg-type]


def _rendered(table: Table) -> list[str]:
    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(table)
    return console.file.getvalue().splitlines()  # type: ignore[attr-defined, no-any-return]


def test_summary_table_renders_every_row() -> None:
    lines = _rendered(_summary().table())
    assert len({len(line) for line in lines}) == 1  # a rectangle
    rows = {
        cells[0].strip(): cells[1].strip()
        for cells in (line.strip("│").split("│") for line in lines[1:-1])
    }
    assert rows == {
        "flows": "30 (5 failed at a step, 10 with a policy step)",
        "events": "279",
        "artifacts": "93",
        "dead letters": "0",
        "workers x batch size": "2 x 50",
        "throughput": "558 events/s (0.50 s)",
        "emit→durable p50": "≤ 100.0 ms",
        "emit→durable p99": "≤ 250.0 ms",
        "flows at parity": "30 / 30",
    }


def test_summary_table_without_latencies_says_na() -> None:
    table = "\n".join(
        _rendered(_summary(latency_p50_ms=None, latency_p99_ms=None, flows_at_parity=29).table())
    )
    assert "│ emit→durable p50" in table and "n/a" in table
    assert "29 / 30" in table


@pytest.mark.parametrize(("flows", "workers", "batch_size"), [(0, 2, 50), (30, 0, 50), (30, 2, 0)])
def test_run_demo_refuses_nonpositive_sizes_with_exit_2(
    flows: int,
    workers: int,
    batch_size: int,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_services(force_embedded: bool = False) -> None:
        raise AssertionError("a refused demo must not look for services")

    monkeypatch.setattr("lab.demo.resolve_services", no_services)
    assert run_demo(flows=flows, workers=workers, batch_size=batch_size, as_json=True) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "--flows, --workers and --batch-size must be at least 1" in captured.err


def test_the_cleanup_forgets_our_killed_workers_and_no_one_elses() -> None:
    """A worker SIGKILLed after the stop grace never leaves rq's set of workers itself."""
    server = fakeredis.FakeRedis()
    run_id = "0123456789abcdef"
    settings = QueueSettings(queue_name=f"chem-demo-{run_id}", key_prefix=f"chemdemo-{run_id}")
    server.sadd(demo.RQ_WORKERS_KEY, f"rq:worker:demo-{run_id}-0", "rq:worker:someone-else")
    server.set(f"{settings.key_prefix}:x:q", "1")
    server.set("bystander", "1")
    demo._cleanup_redis(server, settings, run_id)
    assert server.smembers(demo.RQ_WORKERS_KEY) == {b"rq:worker:someone-else"}
    assert sorted(server.keys()) == [b"bystander", b"rq:workers"]
