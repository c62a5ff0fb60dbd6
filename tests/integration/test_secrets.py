"""Secrets and surfaces: passwords in DATABASE_URL and REDIS_URL never show, and Redis can
carry no code to a worker.

- A real worker and the real Producer run end to end through a private Redis that requires a
  password, plain and over TLS (a throw-away CA made with openssl): the events land in
  PostgreSQL. The PostgreSQL URL carries a password too (trust authentication ignores it).
- Neither password appears in the worker's log (``-v``), in ``status`` / ``status --json``,
  in ``migrate``, on the /metrics page, nor in the errors of a connection that fails.
- rq jobs are JSON and sweeps only: a pickled job, a pickle that would run code when loaded,
  and a JSON job naming another function are all failed unrun by ``worker --burst``; the
  sweep queued with them still runs.
"""

from __future__ import annotations

import json
import pathlib
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from chem_persistence.eventlog.config import DatabaseSettings
from chem_persistence.eventlog.pool import Pool, open_pool
from chem_persistence.eventlog.store import PgEventStore
from chem_persistence.producer.jobs import SWEEP_FUNCTION
from lab.ports import free_port
from tests.integration.security_helpers import (
    Env,
    RedisServer,
    emit_example_flows,
    emitted_flows,
    redis_server,
    redis_tls_unsupported,
    run_burst_worker,
    run_cli,
    with_password,
    with_port,
    worker_process,
)

PG_SECRET = "pg-S3cret-in-url"
REDIS_SECRET = "redis-S3cret-pw"
SECRETS = (PG_SECRET, REDIS_SECRET)
WAIT_S = 30.0


def assert_no_secret(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{where} shows a password:\n{text[-3000:]}"


def wait_for(predicate: Any, what: str, details: Any = lambda: "") -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{details()}")
        time.sleep(0.05)


@pytest.fixture(params=["auth", pytest.param("tls", marks=pytest.mark.ci_skip_allowed)])
def private_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, with a password; over TLS for the ``tls`` case.

    The one skip allowed under CI (and printed at the end of the run): the ``tls`` case on a
    redis-server that was built without TLS, as the server itself says. Any other failure to
    start a TLS server fails the test.
    """
    tls = request.param == "tls"
    if tls and (reason := redis_tls_unsupported(tmp_path / "probe")) is not None:
        pytest.skip(reason)
    with redis_server(tmp_path / "redis", REDIS_SECRET, tls=tls) as server:
        yield server


@pytest.fixture
def secret_db_url(migrated_database_url: str) -> str:
    return with_password(migrated_database_url, PG_SECRET)


@pytest.fixture
def owner_pool(migrated_database_url: str) -> Iterator[Pool]:
    settings = DatabaseSettings(url=migrated_database_url, min_connections=1, max_connections=2)
    with open_pool(settings, migrate=False, name="chem-test-secrets") as pool:
        yield pool


def stored_count(pool: Pool) -> int:
    with pool.connection() as conn:
        row = conn.execute("SELECT count(*) FROM event_log").fetchone()
    return int(row[0]) if row else 0


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def test_end_to_end_through_auth_and_tls_shows_no_password(
    private_redis: RedisServer, secret_db_url: str, owner_pool: Pool, tmp_path: Path
) -> None:
    env = Env.new(secret_db_url, private_redis.url, "sec")
    metrics_port = free_port()
    variables = env.variables(CHEM_METRICS_PORT=str(metrics_port), CHEM_BATCH_SIZE="4")

    migrated = run_cli(variables, "-v", "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert ":***@" in migrated.stdout  # the URL is shown, redacted
    assert_no_secret("migrate", migrated.stdout + migrated.stderr)

    queued = emit_example_flows(env.settings, 3)
    flows = emitted_flows(queued)
    total = sum(len(queued.list(f)) for f in flows)

    log = tmp_path / "worker.log"
    with worker_process(variables, log, "--name", f"sec-{uuid.uuid4().hex[:8]}") as proc:
        wait_for(
            lambda: proc.poll() is not None or stored_count(owner_pool) == total,
            "the events in PostgreSQL",
            log.read_text,
        )
        assert proc.poll() is None, log.read_text()
        store = PgEventStore(owner_pool)
        for flow in flows:
            assert store.list(flow) == queued.list(flow)

        wait_for(lambda: _answers(metrics_port), "/metrics", log.read_text)
        page = scrape(metrics_port)
        assert "chem_events_appended_total" in page
        assert_no_secret("/metrics", page)

        status = run_cli(variables, "status")
        assert status.returncode == 0, status.stderr
        assert "workers: 1" in status.stdout
        assert_no_secret("status", status.stdout + status.stderr)
        as_json = run_cli(variables, "status", "--json")
        assert as_json.returncode == 0, as_json.stderr
        assert json.loads(as_json.stdout)["backlog_total"] == 0
        assert_no_secret("status --json", as_json.stdout + as_json.stderr)
    output = log.read_text()
    assert " INFO " in output  # -v: the worker did log
    assert_no_secret("the worker's log", output)

    # the same commands against a port where nothing listens: the errors show no password
    dead = free_port()
    for args, overrides in [
        (("status",), {"REDIS_URL": with_port(private_redis.url, dead)}),
        (("status", "--json"), {"REDIS_URL": with_port(private_redis.url, dead)}),
        (("migrate",), {"DATABASE_URL": with_port(secret_db_url, dead)}),
        (("worker", "--burst"), {"DATABASE_URL": with_port(secret_db_url, dead)}),
        (("worker", "--burst"), {"REDIS_URL": with_port(private_redis.url, dead)}),
    ]:
        failed = run_cli(env.variables(**overrides), "-v", *args)
        assert failed.returncode != 0, (args, failed.stdout, failed.stderr)
        assert "refused" in (failed.stdout + failed.stderr).lower(), failed.stderr
        assert_no_secret(f"a failing {' '.join(args)}", failed.stdout + failed.stderr)


def _answers(port: int) -> bool:
    try:
        scrape(port)
        return True
    except OSError:
        return False


def test_a_wrong_redis_password_is_refused_without_being_shown(
    private_redis: RedisServer, secret_db_url: str
) -> None:
    wrong = private_redis.url.replace(REDIS_SECRET, "not-" + REDIS_SECRET[::-1])
    env = Env.new(secret_db_url, wrong, "wrongpw")
    failed = run_cli(env.variables(), "status")
    assert failed.returncode != 0
    assert "invalid" in failed.stderr.lower() or "auth" in failed.stderr.lower(), failed.stderr
    assert_no_secret("status with a wrong password", failed.stdout + failed.stderr)
    assert REDIS_SECRET[::-1] not in failed.stdout + failed.stderr


# --- rq jobs: JSON sweeps only ----------------------------------------------------------------


class CodeOnLoad:
    """Pickles to 'touch this file when unpickled': what a pickle-reading worker would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def test_worker_runs_json_sweeps_only_never_pickles_nor_other_functions(
    secret_db_url: str, owner_pool: Pool, tmp_path: Path
) -> None:
    with redis_server(tmp_path / "redis", REDIS_SECRET) as server:
        env = Env.new(secret_db_url, server.url, "rce")
        client = redis.Redis.from_url(server.url)
        markers = {name: tmp_path / f"{name}.marker" for name in ("pickled", "on-load", "json")}
        pickled = Queue(env.queue, connection=client)  # rq's default: the pickle serializer
        pickled.enqueue(pathlib.Path.touch, markers["pickled"])
        pickled.enqueue(pathlib.Path.exists, CodeOnLoad(markers["on-load"]))
        as_json = Queue(env.queue, connection=client, serializer=JSONSerializer)
        as_json.enqueue("os.system", f"touch {markers['json']}")  # JSON, but not a sweep
        for name in markers:
            assert not markers[name].exists(), name
        queued = emit_example_flows(env.settings, 2)  # a real sweep, queued after the others
        flows = emitted_flows(queued)

        log = tmp_path / "worker.log"
        code = run_burst_worker(env.variables(), log)
        output = log.read_text()
        assert code == 0, output

        for name, marker in markers.items():
            assert not marker.exists(), f"the {name} job ran code:\n{output}"
        failed = FailedJobRegistry(queue=as_json)
        assert failed.count == 3, output  # refused, and visible as failed jobs
        assert f"is not {SWEEP_FUNCTION}" in output, output
        store = PgEventStore(owner_pool)
        for flow in flows:  # the worker went on with the real sweep
            assert store.list(flow) == queued.list(flow)
        assert_no_secret("the worker's log", output)
        client.close()
