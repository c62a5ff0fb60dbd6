"""The bench's servers: a fresh database and this run's Redis names, emptied between runs
and removed at the end."""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import psycopg
from psycopg import sql
from redis import Redis
from rq import Queue, Worker
from rq.registry import (
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.serializers import JSONSerializer

from chem_persistence.eventlog import migrate
from chem_persistence.eventlog.config import redact_url, url_with_database
from chem_persistence.producer.config import QueueSettings
from lab.bench.config import ADMIN_URL_ENV, BenchError, say
from lab.bench.data import Dataset
from lab.bench.measure import chunks
from lab.local_servers import LOCAL_PG_ADMIN_URL, LOCAL_REDIS_URL

# --- the bench environment: database, Redis names, cleanup ------------------------------------


@dataclass
class BenchEnv:
    run_id: str
    admin_url: str
    database_url: str
    redis_url: str
    queue_name: str
    naive_queue_name: str
    key_prefix: str
    scratch: Path
    worker_log: Path

    @property
    def queue_settings(self) -> QueueSettings:
        return QueueSettings(self.redis_url, self.queue_name, self.key_prefix)

    def worker_env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CHEM_", "DATABASE_")) and k != "REDIS_URL"
        }
        env.update(
            DATABASE_URL=self.database_url,
            REDIS_URL=self.redis_url,
            CHEM_QUEUE=self.queue_name,
            CHEM_KEY_PREFIX=self.key_prefix,
        )
        env.update(extra)
        return env


def _admin_url() -> str:
    explicit = os.environ.get(ADMIN_URL_ENV)
    if explicit:
        return explicit
    database_url = os.environ.get("DATABASE_URL")
    if database_url:
        return url_with_database(database_url, "postgres")
    return LOCAL_PG_ADMIN_URL


@contextmanager
def bench_environment(output_dir: Path) -> Iterator[BenchEnv]:
    """A fresh database (migrated), this run's Redis names; everything removed at the end."""
    run_id = secrets.token_hex(4)
    admin_url = _admin_url()
    name = f"chem_bench_{run_id}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    database_url = url_with_database(admin_url, name)
    redis_url = os.environ.get("REDIS_URL") or LOCAL_REDIS_URL
    scratch = Path(tempfile.mkdtemp(prefix=f"chem-bench-{run_id}-"))
    env = BenchEnv(
        run_id=run_id,
        admin_url=admin_url,
        database_url=database_url,
        redis_url=redis_url,
        queue_name=f"chem-bench-{run_id}",
        naive_queue_name=f"chem-bench-{run_id}-naive",
        key_prefix=f"chembench-{run_id}",
        scratch=scratch,
        worker_log=output_dir / "bench-workers.log",
    )
    say(f"database {redact_url(database_url)}, Redis {redis_url}, keys {env.key_prefix}:*")
    try:
        migrate.upgrade(database_url)
        yield env
    finally:
        redis = Redis.from_url(redis_url)
        try:
            for queue in (env.queue_name, env.naive_queue_name):
                cleanup_queue(redis, queue)
            delete_keys(redis, f"{env.key_prefix}:*")
            forget_workers(redis, f"bench-{run_id}-")
        finally:
            redis.close()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        for path in scratch.iterdir():
            path.unlink()
        scratch.rmdir()
        say(f"dropped {name}, deleted the run's Redis keys")


def delete_keys(redis: Redis, pattern: str) -> int:
    deleted = 0
    batch: list[bytes] = []
    for key in redis.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            deleted += int(redis.delete(*batch))
            batch = []
    if batch:
        deleted += int(redis.delete(*batch))
    return deleted


def cleanup_queue(redis: Redis, name: str) -> None:
    """Forget an rq queue: its jobs (queued or in any registry), its keys, its name."""
    queue = Queue(name, connection=redis, serializer=JSONSerializer)
    job_ids = set(queue.get_job_ids())
    for registry_class in (
        FailedJobRegistry,
        StartedJobRegistry,
        FinishedJobRegistry,
        DeferredJobRegistry,
        ScheduledJobRegistry,
        CanceledJobRegistry,
    ):
        registry = registry_class(queue=queue)
        job_ids.update(registry.get_job_ids())
    for chunk in chunks(sorted(job_ids), 500):
        redis.delete(*(f"rq:job:{job_id}" for job_id in chunk))
    delete_keys(redis, f"rq:*:{name}")
    delete_keys(redis, f"rq:*:{name}:*")
    redis.srem(Queue.redis_queues_keys, Queue.redis_queue_namespace_prefix + name)


def forget_workers(redis: Redis, name_prefix: str) -> None:
    """rq keeps a stopped worker's key for 60 s and its name in the workers' sets: drop them."""
    prefix = f"{Worker.redis_worker_namespace_prefix}{name_prefix}"
    sets: list[bytes | str] = [Worker.redis_workers_keys]
    sets.extend(redis.scan_iter(match="rq:workers:*", count=1000))
    for key in sets:
        members = [
            m for m in cast(set[bytes], redis.smembers(key)) if m.decode().startswith(prefix)
        ]
        if members:
            redis.srem(key, *members)
    delete_keys(redis, f"{prefix}*")


def reset_database(conn: psycopg.Connection[Any]) -> None:
    """Empty the event log before a run (the bench's own database: the append-only trigger is
    set aside for the TRUNCATE only), then CHECKPOINT so that every run starts alike."""
    with conn.transaction():
        conn.execute("ALTER TABLE event_log DISABLE TRIGGER event_log_append_only_truncate")
        conn.execute("TRUNCATE event_log, workflow_step_artifacts RESTART IDENTITY")
        conn.execute("ALTER TABLE event_log ENABLE TRIGGER event_log_append_only_truncate")
    try:
        with conn.transaction():
            conn.execute("CHECKPOINT")
    except psycopg.errors.InsufficientPrivilege:
        pass


def count_rows(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    with conn.transaction():
        events = conn.execute("SELECT count(*) FROM event_log").fetchone()
        artifacts = conn.execute("SELECT count(*) FROM workflow_step_artifacts").fetchone()
    assert events is not None and artifacts is not None
    return int(events[0]), int(artifacts[0])


def check_stored(conn: psycopg.Connection[Any], data: Dataset, what: str) -> None:
    events, artifacts = count_rows(conn)
    if events != len(data.events) or artifacts != data.artifact_rows:
        raise BenchError(
            f"{what}: stored {events} events and {artifacts} artifact rows, "
            f"expected {len(data.events)} and {data.artifact_rows}"
        )
