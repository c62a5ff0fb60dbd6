"""Fixtures shared by the queue tests: an isolated queue environment, worker processes, a store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chem_persistence.eventlog.pool import Pool
from chem_persistence.eventlog.store import PgEventStore
from tests.integration.queue_helpers import QueueEnv, WorkerProcesses, worker_processes


@pytest.fixture
def env(database_url: str, redis_url: str, request: pytest.FixtureRequest) -> QueueEnv:
    """A queue name and key prefix of this test's own, on the session's database and Redis."""
    return QueueEnv.new(database_url, redis_url, request.node.name)


@pytest.fixture
def workers(env: QueueEnv, tmp_path: Path) -> Iterator[WorkerProcesses]:
    """Real worker processes for ``env``, all stopped when the test ends."""
    with worker_processes(env, tmp_path) as started:
        yield started


@pytest.fixture
def store(pool: Pool) -> PgEventStore:
    return PgEventStore(pool)
