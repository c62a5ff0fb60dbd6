"""rq-dashboard 0.9.0, mounted in our app under ``/rq``, reading our jobs as JSON.

rq-dashboard keeps its serializer in a module-level ``config`` object (its ``--json`` flag sets
it); its queue and job views use it. Two of its views ignore it, and one of its hooks opens a
client of its own; all three are replaced here in *our* app's tables (the blueprint's module
is not touched):

- ``workers.json`` builds each ``Worker`` without a serializer, so ``get_current_job()``
  fetches a busy worker's job with rq's default serializer (pickle): reading the job's call
  string unpickles our JSON job data, raises ``DeserializationError``, the view answers 500
  and the Workers page stays on "Loading..." whenever a worker is busy. Our view builds the
  workers with the JSON serializer (same JSON shape, which its page's script reads).
- ``requeue`` (one failed job, and all of a queue's) fetch the job the same way; ours pass
  the JSON serializer.
- Before each request it opens a new Redis client from the URL (no timeouts); ours hands it
  the app's one client (``REDIS_URL``, with the socket timeouts and retries of the workers).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, abort, current_app, jsonify, request
from redis import Redis
from rq import Queue, Worker, requeue_job
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import BaseWorker
from rq_dashboard import web as rq_web

URL_PREFIX = "/rq"
BLUEPRINT = "rq_dashboard"
POLL_INTERVAL_MS = 2500


def mount(app: Flask, redis: Redis, shown_url: str) -> None:
    """Register rq-dashboard's blueprint under URL_PREFIX, on ``redis``."""
    rq_web.config.serializer = JSONSerializer  # what its --json flag does
    app.config["RQ_DASHBOARD_REDIS_URL"] = (shown_url,)  # shown on its pages only
    app.config["RQ_DASHBOARD_POLL_INTERVAL"] = POLL_INTERVAL_MS
    app.register_blueprint(rq_web.blueprint, url_prefix=URL_PREFIX)
    app.redis_conn = redis  # type: ignore[attr-defined]  # where its views look for Redis

    def use_our_client() -> None:
        instance = (request.view_args or {}).get("instance_number")
        if instance not in (None, 0):
            abort(404)  # one Redis: instance 0
        current_app.redis_conn = redis  # type: ignore[attr-defined]

    # replaces its before_request (a new client per request) in this app only
    app.before_request_funcs[BLUEPRINT] = [use_our_client]
    app.view_functions[f"{BLUEPRINT}.list_workers"] = workers_json
    app.view_functions[f"{BLUEPRINT}.requeue_job_view"] = requeue_one
    app.view_functions[f"{BLUEPRINT}.requeue_all"] = requeue_all


def _redis() -> Redis:
    client: Redis = current_app.redis_conn  # type: ignore[attr-defined]
    return client


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


def _current_job(worker: BaseWorker) -> dict[str, Any] | str:
    job: Job | None = worker.get_current_job()
    if job is None:
        return "idle"  # what its page's script expects for an idle worker
    return {
        "job_id": job.id,
        "description": job.description,
        "created_at": _iso(job.created_at),
        "call_string": job.get_call_string(),
    }


def _no_store(body: Response) -> Response:
    body.headers["Cache-Control"] = "no-store"
    return body


def workers_json(instance_number: int) -> Response:
    """Every registered worker, its state and its current job, read with the JSON serializer."""
    rows = []
    for worker in Worker.all(connection=_redis(), serializer=JSONSerializer):
        rows.append(
            {
                "name": worker.name,
                "pid": worker.pid,
                "queues": [q.name for q in worker.queues],
                "state": str(worker.get_state()),
                "current_job": _current_job(worker),
                "last_heartbeat": _iso(worker.last_heartbeat),
                "birth_date": _iso(worker.birth_date),
                "successful_job_count": worker.successful_job_count,
                "failed_job_count": worker.failed_job_count,
                "total_working_time": worker.total_working_time,
                "version": getattr(worker, "version", ""),
                "python_version": getattr(worker, "python_version", ""),
            }
        )
    rows.sort(key=lambda w: (w["state"], w["queues"], w["name"]))
    return _no_store(jsonify(workers=rows))


def requeue_one(job_id: str) -> Response:
    requeue_job(job_id, connection=_redis(), serializer=JSONSerializer)
    return _no_store(jsonify(status="OK"))


def requeue_all(queue_name: str) -> Response:
    if request.method != "POST":
        abort(405)  # a GET must not change anything
    queue = Queue(queue_name, connection=_redis(), serializer=JSONSerializer)
    ids = queue.failed_job_registry.get_job_ids(cleanup=False)
    for job_id in ids:
        requeue_job(job_id, connection=_redis(), serializer=JSONSerializer)
    return _no_store(jsonify(status="OK", count=len(ids)))
