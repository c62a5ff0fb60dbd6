"""SweepJob, behaviour first: a real rq SimpleWorker (on fakeredis) runs sweep jobs that carry
success, failure and stopped callbacks and webhooks, and none of them runs or is sent.

The same jobs under rq's plain ``Job`` class do run their callbacks and send their webhooks
(the control case): the test can see them when they happen, so their absence means something.
The sweep function itself is replaced by a stub here (its own tests are elsewhere).
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from rq import Queue, SimpleWorker
from rq.job import Callback, Job, JobStatus
from rq.serializers import JSONSerializer
from rq.webhook import Webhook

import chem_persistence.worker.job
from chem_persistence.producer.jobs import SWEEP_FUNCTION
from chem_persistence.worker.service import SweepJob

GOOD_FLOW = 0  # the shard a good sweep job is given
BAD_FLOW = 7  # the shard whose stub sweep fails
#: What each callback did, by name; cleared for every test.
CALLED: list[str] = []


def on_success(job: Any, connection: Any, result: Any) -> None:
    CALLED.append("success")


def on_failure(job: Any, connection: Any, *exc_info: Any) -> None:
    CALLED.append("failure")


def on_stopped(job: Any, connection: Any) -> None:
    CALLED.append("stopped")


def stub_sweep(shard: int) -> dict[str, str | int]:
    if shard == BAD_FLOW:
        raise RuntimeError("the sweep failed")
    return {"shard": shard, "events": 0}


class Hooks(http.server.BaseHTTPRequestHandler):
    received: list[str]

    def do_GET(self) -> None:
        self.received.append(self.path)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook_server() -> Iterator[tuple[str, list[str]]]:
    received: list[str] = []
    handler = type("RecordingHooks", (Hooks,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def run_jobs(job_class: type[Job], base_url: str, monkeypatch: pytest.MonkeyPatch) -> list[Job]:
    CALLED.clear()
    monkeypatch.setattr(chem_persistence.worker.job, "sweep", stub_sweep)
    redis = fakeredis.FakeRedis()
    queue = Queue("dj", connection=redis, serializer=JSONSerializer, job_class=job_class)
    module = __name__
    jobs = [
        queue.enqueue_call(
            SWEEP_FUNCTION,
            args=[flow],
            on_success=Callback(f"{module}.on_success"),
            on_failure=Callback(f"{module}.on_failure"),
            on_stopped=Callback(f"{module}.on_stopped"),
            webhooks=[
                Webhook(f"{base_url}/finished/{flow}", "finished"),
                Webhook(f"{base_url}/failed/{flow}", "failed"),
            ],
        )
        for flow in (GOOD_FLOW, BAD_FLOW)
    ]
    worker_ = SimpleWorker(
        [queue], connection=redis, serializer=JSONSerializer, job_class=job_class
    )
    worker_.work(burst=True, with_scheduler=False)
    for job in jobs:
        job.refresh()
    return jobs


def test_sweep_jobs_run_but_their_callbacks_and_webhooks_are_dropped(
    webhook_server: tuple[str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    base_url, received = webhook_server
    jobs = run_jobs(SweepJob, base_url, monkeypatch)
    assert [job.get_status() for job in jobs] == [JobStatus.FINISHED, JobStatus.FAILED]
    assert jobs[0].return_value() == {"shard": 0, "events": 0}
    assert CALLED == []
    assert received == []
    dropped = caplog.text
    for what in ("success_callback", "failure_callback", "webhooks"):
        assert f"dropped={what}" in dropped


def test_the_control_plain_rq_jobs_do_run_callbacks_and_send_webhooks(
    webhook_server: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    base_url, received = webhook_server
    jobs = run_jobs(Job, base_url, monkeypatch)
    assert [job.get_status() for job in jobs] == [JobStatus.FINISHED, JobStatus.FAILED]
    assert sorted(CALLED) == ["failure", "success"]
    assert sorted(received) == [f"/failed/{BAD_FLOW}", f"/finished/{GOOD_FLOW}"]


def test_a_job_naming_another_function_fails_unrun(monkeypatch: pytest.MonkeyPatch) -> None:
    CALLED.clear()
    redis = fakeredis.FakeRedis()
    queue = Queue("dj", connection=redis, serializer=JSONSerializer, job_class=SweepJob)
    job = queue.enqueue_call(f"{__name__}.on_stopped", args=[None, None])
    SimpleWorker([queue], connection=redis, serializer=JSONSerializer, job_class=SweepJob).work(
        burst=True, with_scheduler=False
    )
    job.refresh()
    assert job.get_status() == JobStatus.FAILED
    result = job.latest_result()
    assert result is not None and "RefusedJob" in (result.exc_string or "")
    assert CALLED == []
