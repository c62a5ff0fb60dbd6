"""The `chem-persistence` command, run as a process the way operators and scripts run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis
from alembic.script import ScriptDirectory

from chem_persistence.domain.codec import encode_kind
from chem_persistence.domain.engine import FlowEngine
from chem_persistence.domain.examples import example_flow
from chem_persistence.domain.replay import InMemoryFlowRepository
from chem_persistence.eventlog import migrate
from chem_persistence.eventlog.pool import Pool
from chem_persistence.eventlog.store import PgEventStore
from chem_persistence.producer import Producer, QueuedEventStore, QueueSettings

ROOT = Path(__file__).resolve().parents[2]
SECRET = "cli-s3cret-pw"
CLI_TIMEOUT_S = 60
UNREACHABLE_URL = "postgresql://nobody@127.0.0.1:1/nowhere"  # nothing listens on port 1
#: Variables of the project a developer's shell may carry: the tests set what they need.
PROJECT_VARIABLES = (
    "DATABASE_URL",
    "DATABASE_MIN_CONNECTIONS",
    "DATABASE_MAX_CONNECTIONS",
    "REDIS_URL",
    "CHEM_QUEUE",
    "CHEM_KEY_PREFIX",
    "CHEM_BATCH_SIZE",
    "CHEM_METRICS_PORT",
    "CHEM_NO_ARTIFACT_INSERT",
    "CHEM_SHARDS",
    "CHEM_CLAIM_FLOWS",
    "CHEM_LEASE_TTL_MS",
    "CHEM_SWEEP_LINGER_SECONDS",
    "CHEM_CHECK_INTERVAL_SECONDS",
)


def run_cli(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in PROJECT_VARIABLES}
    return subprocess.run(
        [sys.executable, "-m", "chem_persistence.worker.cli", *args],
        env={**base, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


@pytest.fixture
def queue_env(redis_url: str, redis_conn: redis.Redis, key_prefix: str) -> dict[str, str]:
    """REDIS_URL on the (flushed) test DB, with a queue and a key prefix of this test's own."""
    run = uuid.uuid4().hex[:8]
    return {
        "REDIS_URL": redis_url,
        "CHEM_QUEUE": f"{key_prefix}-cli-{run}",
        "CHEM_KEY_PREFIX": f"{key_prefix}-cli-{run}",
    }


# --- migrate ------------------------------------------------------------------------------


def test_migrate_sql_needs_no_database() -> None:
    result = run_cli({"DATABASE_URL": UNREACHABLE_URL}, "migrate", "--sql")
    assert result.returncode == 0, result.stderr
    assert "CREATE TABLE IF NOT EXISTS event_log" in result.stdout
    assert "CREATE TABLE IF NOT EXISTS workflow_step_artifacts" in result.stdout
    head = ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()
    assert f"'{head}'" in result.stdout  # up to the head revision


def test_migrate_an_empty_database_prints_the_redacted_url_and_the_head(
    empty_database_url: str,
) -> None:
    url = with_password(empty_database_url, SECRET)  # trust auth: the password is ignored
    assert migrate.current(empty_database_url) is None

    result = run_cli({"DATABASE_URL": url}, "migrate")

    assert result.returncode == 0, result.stderr
    head = ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()
    assert head is not None
    shown = with_password(empty_database_url, "***")
    assert result.stdout.strip() == f"migrated {shown} from an empty schema to {head}"
    assert SECRET not in result.stdout + result.stderr
    assert migrate.current(empty_database_url) == head
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("SELECT to_regclass('event_log') IS NOT NULL").fetchone() == (True,)

    again = run_cli({"DATABASE_URL": url}, "migrate")  # re-runnable: already at head
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"{shown} is already at {head}: nothing to do"


# --- status -------------------------------------------------------------------------------


def test_status_of_an_empty_queue(queue_env: dict[str, str]) -> None:
    text = run_cli(queue_env, "status")
    assert text.returncode == 0, text.stderr
    assert "backlog: 0 events in 0 ready, 0 leased and 0 parked flows" in text.stdout
    assert (
        f"sweeps: 0 queued or running; queue {queue_env['CHEM_QUEUE']}: 0 jobs waiting, 0 failed"
        in text.stdout
    )
    assert "workers: 0" in text.stdout

    as_json = run_cli(queue_env, "status", "--json")
    assert as_json.returncode == 0, as_json.stderr
    status = json.loads(as_json.stdout)
    assert status["backlog_total"] == 0
    assert status["flows"] == []
    assert status["parked_flows"] == []
    assert status["sweeps"] == 0
    assert status["workers"] == []
    assert status["dead_letters_total"] == 0
    assert status["queue"] == queue_env["CHEM_QUEUE"]
    assert status["queued_jobs"] == 0
    assert status["failed_jobs"] == 0


def test_status_shows_the_backlog_per_flow_and_in_total(queue_env: dict[str, str]) -> None:
    settings = QueueSettings.from_env(queue_env)
    client = redis.Redis.from_url(settings.redis_url)
    queued = QueuedEventStore(Producer(client, settings))
    engine = FlowEngine(queued)  # no worker runs: every event stays queued in Redis
    flows = {uuid.uuid4(): 1, uuid.uuid4(): 3}  # seed 3 has a policy step: more events
    counts = {}
    for flow_id, seed in flows.items():
        engine.run(flow_id, example_flow(seed))
        counts[str(flow_id)] = len(queued.list(flow_id))
    client.close()
    assert len(set(counts.values())) == 2  # the two flows have different backlogs

    result = run_cli(queue_env, "status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["backlog_total"] == sum(counts.values())
    assert {f["flow_id"]: f["queued"] for f in status["flows"]} == counts
    assert [f["queued"] for f in status["flows"]] == sorted(counts.values(), reverse=True)
    assert not any(f["leased"] for f in status["flows"])  # ready, no sweep holds them
    assert status["queued_jobs"] == 1  # one sweep job for both flows: not per flow, per event
    assert status["sweeps"] == 1  # and it is registered
    assert status["parked_flows"] == []

    text = run_cli(queue_env, "status")
    assert text.returncode == 0, text.stderr
    assert (
        f"backlog: {sum(counts.values())} events in 2 ready, 0 leased and 0 parked flows"
        in text.stdout
    )
    assert "sweeps: 1 queued or running" in text.stdout
    assert "1 jobs waiting" in text.stdout
    for flow, count in counts.items():
        assert any(
            line.split() == [flow, str(count), "ready"] for line in text.stdout.splitlines()
        ), text.stdout


# --- dlq ----------------------------------------------------------------------------------


def test_dlq_list_without_parked_flows_says_so(queue_env: dict[str, str]) -> None:
    result = run_cli(queue_env, "dlq", "list")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "no parked flows"


# --- replay -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stored_flow(pool: Pool) -> tuple[uuid.UUID, list[dict[str, Any]]]:
    """A completed example flow written by the engine straight into PostgreSQL."""
    flow_id = uuid.uuid4()
    definition = example_flow(3)  # four steps, one of them a policy step
    store = PgEventStore(pool)
    FlowEngine(store).run(flow_id, definition)
    events = store.list(flow_id)
    instance = InMemoryFlowRepository.load(flow_id, events, definition)
    assert instance.completed
    expected = [
        {
            "seq": e.seq,
            "log_seq": e.log_seq,
            "ts": e.ts.isoformat(),
            "kind": encode_kind(e.kind),
        }
        for e in events
    ]
    return flow_id, expected


def test_replay_json_shows_events_in_order_and_the_replayed_steps(
    database_url: str, stored_flow: tuple[uuid.UUID, list[dict[str, Any]]]
) -> None:
    flow_id, expected = stored_flow
    result = run_cli({"DATABASE_URL": database_url}, "replay", str(flow_id), "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)

    assert shown["flow_id"] == str(flow_id)
    assert shown["completed"] is True
    assert shown["events"] == expected
    assert [e["seq"] for e in shown["events"]] == list(range(len(expected)))
    log_seqs = [e["log_seq"] for e in shown["events"]]
    assert all(isinstance(s, int) for s in log_seqs) and log_seqs == sorted(set(log_seqs))
    for event in shown["events"]:
        assert datetime.fromisoformat(event["ts"]).utcoffset() is not None
    kinds = [next(iter(e["kind"])) for e in shown["events"]]
    assert kinds[0] == "FlowInitialized" and kinds[-1] == "FlowCompleted"

    assert [s["step_id"] for s in shown["steps"]] == list(example_flow(3).step_ids)
    assert [s["state"] for s in shown["steps"]] == ["FinishedOk"] * 4
    assert all(s["attempts"] == 1 and len(s["fingerprint"]) == 64 for s in shown["steps"])
    assert shown["cursor"] == 4


def test_replay_text_shows_the_flow(
    database_url: str, stored_flow: tuple[uuid.UUID, list[dict[str, Any]]]
) -> None:
    flow_id, expected = stored_flow
    result = run_cli({"DATABASE_URL": database_url}, "replay", str(flow_id))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"flow {flow_id}: completed, {len(expected)} events, cursor 4"
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["pos", "log", "seq"])
    rows = [line.split() for line in lines[header + 1 :]]
    assert [(r[0], r[1], r[-1]) for r in rows] == [
        (str(e["seq"]), str(e["log_seq"]), next(iter(e["kind"])).lower()) for e in expected
    ]


def test_replay_of_an_unknown_flow_exits_1(database_url: str) -> None:
    result = run_cli({"DATABASE_URL": database_url}, "replay", str(uuid.uuid4()))
    assert result.returncode == 1
    assert "no events stored for this flow" in result.stdout


def test_replay_of_an_invalid_uuid_exits_2_naming_flow() -> None:
    result = run_cli({"DATABASE_URL": UNREACHABLE_URL}, "replay", "x1")
    assert result.returncode == 2
    assert "FLOW" in result.stderr
    assert "'x1' is not a UUID" in result.stderr


# --- configuration errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "args"),
    [
        ("CHEM_BATCH_SIZE", ("worker", "--burst")),
        ("DATABASE_MIN_CONNECTIONS", ("replay", "00000000-0000-4000-8000-000000000000")),
    ],
)
def test_an_invalid_variable_is_named_and_fails(
    database_url: str, queue_env: dict[str, str], variable: str, args: tuple[str, ...]
) -> None:
    env = {**queue_env, "DATABASE_URL": with_password(database_url, SECRET), variable: "abc"}
    result = run_cli(env, *args)
    assert result.returncode != 0
    assert variable in result.stderr
    assert "'abc'" in result.stderr
    assert "Traceback" not in result.stderr  # a message for the operator, not a crash
    assert SECRET not in result.stdout + result.stderr
