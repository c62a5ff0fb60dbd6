"""`chem-persistence dashboard` over HTTP, as an operator (and a compose healthcheck) calls it.

The scene (tests/integration/dashboard_helpers.py): a busy worker, a normal one, a failed sweep
job, a parked flow, the real dashboard process with basic auth. These tests only read it (or
try actions that must be refused); the browser test, in its own module, retries for real.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from chem_persistence.producer.jobs import SWEEP_FUNCTION
from lab.ports import free_port
from tests.integration.dashboard_helpers import (
    AUTH,
    BAD_SHARD,
    PASSWORD,
    USERNAME,
    Scene,
    dashboard_scene,
    get,
    start_dashboard,
    wait_answers,
)
from tests.integration.queue_helpers import REPO_ROOT, QueueEnv

PAGES = [
    "/",
    "/api/overview.json",
    "/rq/",
    "/rq/0/data/queues.json",
    "/rq/0/data/workers.json",
    "/rq/0/view/workers",
]


@pytest.fixture(scope="module")
def scene(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scene]:
    env = QueueEnv.new(database_url, redis_url, "dashboard-http")
    with dashboard_scene(env, tmp_path_factory.mktemp("dashboard-http")) as started:
        yield started


@pytest.mark.parametrize("path", PAGES)
@pytest.mark.parametrize("auth", [None, (USERNAME, "wrong"), ("intruder", PASSWORD)])
def test_without_the_right_credentials_every_page_answers_401(
    scene: Scene, path: str, auth: tuple[str, str] | None
) -> None:
    reply = get(scene.base_url + path, auth)
    assert reply.status == 401
    assert reply.headers.get("www-authenticate", "").startswith("Basic")
    assert scene.env.queue_name.encode() not in reply.body


def test_healthz_answers_without_credentials(scene: Scene) -> None:
    reply = get(scene.base_url + "/healthz")
    assert (reply.status, reply.text) == (200, "ok\n")


@pytest.mark.parametrize("path", PAGES)
def test_with_credentials_every_page_answers(scene: Scene, path: str) -> None:
    reply = get(scene.base_url + path, AUTH)
    assert reply.status == 200, reply.text[:2000]


def test_workers_json_lists_the_busy_worker_with_its_current_job(scene: Scene) -> None:
    """rq-dashboard 0.9.0 answered 500 here (DeserializationError: it unpickled the busy
    worker's JSON job), and its Workers page stayed on "Loading..."."""
    reply = get(scene.base_url + "/rq/0/data/workers.json", AUTH)
    assert reply.status == 200, reply.text[:2000]
    listed = {w["name"]: w for w in reply.json()["workers"]}
    busy = listed[scene.busy_worker]
    assert busy["state"] == "busy"
    assert busy["queues"] == [scene.env.queue_name]
    current = busy["current_job"]
    assert isinstance(current, dict), busy
    assert current["call_string"] == f"{SWEEP_FUNCTION}(0)"
    assert current["description"].startswith("sweep of shard 0")
    normal = listed[scene.normal_worker]
    assert normal["failed_job_count"] == 1
    assert normal["queues"] == [scene.env.queue_name]

    job = get(scene.base_url + f"/rq/0/data/job/{current['job_id']}.json", AUTH)
    assert job.status == 200
    assert (job.json()["status"], job.json()["origin"]) == ("started", scene.env.queue_name)


def test_rq_dashboard_shows_the_queue_and_the_failed_job(scene: Scene) -> None:
    queues = get(scene.base_url + "/rq/0/data/queues.json", AUTH)
    ours = [q for q in queues.json()["queues"] if q["name"] == scene.env.queue_name]
    assert len(ours) == 1, queues.json()
    assert ours[0]["failed_job_registry_count"] == 1
    assert ours[0]["started_job_registry_count"] >= 1  # the busy worker's sweep

    path = f"/rq/0/data/jobs/{scene.env.queue_name}/failed/8/asc/1.json"
    jobs = get(scene.base_url + path, AUTH).json()["jobs"]
    assert [j["id"] for j in jobs] == [scene.failed_job]
    assert jobs[0]["description"] == f"sweep of shard {BAD_SHARD}: starting"
    assert f"shard: {BAD_SHARD} is not a shard" in jobs[0]["exc_info"]

    job = get(scene.base_url + f"/rq/0/data/job/{scene.failed_job}.json", AUTH)
    assert (job.json()["status"], job.json()["origin"]) == ("failed", scene.env.queue_name)
    for page in (
        f"/rq/0/view/jobs/{scene.env.queue_name}/failed/8/asc/1",
        f"/rq/0/view/job/{scene.failed_job}",
    ):
        assert get(scene.base_url + page, AUTH).status == 200


def test_the_overview_numbers_are_what_redis_holds(scene: Scene) -> None:
    data = get(scene.base_url + "/api/overview.json", AUTH).json()
    client = redis.Redis.from_url(scene.env.redis_url)
    try:
        flow = scene.parked_id
        shard = scene.env.keys.for_flow(flow)
        queued, dead = client.llen(shard.queue(flow)), client.llen(shard.dead(flow))
    finally:
        client.close()
    assert (queued, dead) == (1, 1)  # P's event 4 waits behind its dead letter (3)
    assert data["backlog_total"] == queued
    assert data["dead_letters_total"] == dead
    assert (data["leased_flows"], data["ready_flows"]) == (0, 0)
    [parked] = data["parked_flows"]
    assert (parked["flow_id"], parked["dead_letters"], parked["queued"]) == (flow, 1, 1)
    assert parked["reason"].startswith("SeqGap at position 3")
    assert data["problems"] and "parked" in data["problems"][0]
    assert {w["name"] for w in data["workers"]} >= {scene.busy_worker, scene.normal_worker}
    assert [s["worker"] for s in data["running_sweeps"]].count(scene.busy_worker) == 1


def test_dlq_actions_refuse_a_post_without_the_token_or_from_another_site(scene: Scene) -> None:
    import urllib.parse
    import urllib.request

    flow = scene.parked_id

    def post(data: dict[str, str], origin: str) -> int:
        request = urllib.request.Request(
            f"{scene.base_url}/flows/{flow}/retry",
            data=urllib.parse.urlencode(data).encode(),
            headers={"Origin": origin},
            method="POST",
        )
        import base64

        token = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return int(reply.status)
        except urllib.error.HTTPError as error:
            return int(error.code)

    assert post({"generation": "1", "token": "1.forged"}, scene.base_url) == 400
    confirm = get(f"{scene.base_url}/flows/{flow}/retry", AUTH).text
    token = confirm.split('name="token" value="', 1)[1].split('"', 1)[0]
    assert post({"generation": "1", "token": token}, "http://elsewhere.example") == 403
    data = get(scene.base_url + "/api/overview.json", AUTH).json()
    assert [p["flow_id"] for p in data["parked_flows"]] == [flow]  # still parked


# --- start-up, settings and stopping: the process alone ----------------------------------


def run_dashboard(env: QueueEnv, *args: str, **overrides: str) -> subprocess.CompletedProcess[str]:
    variables = env.variables(**overrides)
    return subprocess.run(
        [sys.executable, "-m", "chem_persistence.worker.cli", "dashboard", *args],
        cwd=REPO_ROOT,
        env=variables,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_without_a_password_it_refuses_to_start_naming_both_settings(env: QueueEnv) -> None:
    result = run_dashboard(env, "--port", str(free_port()))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "CHEM_DASHBOARD_PASSWORD" in lines[0] and "CHEM_DASHBOARD_PASSWORD_FILE" in lines[0]
    assert "Traceback" not in result.stderr


def test_a_busy_port_or_unreachable_redis_is_one_or_two_lines(scene: Scene, env: QueueEnv) -> None:
    port = scene.base_url.rsplit(":", 1)[1]
    busy = run_dashboard(env, "--port", port, CHEM_DASHBOARD_PASSWORD="x")
    assert busy.returncode == 2
    assert "--port" in busy.stderr and "already in use" in busy.stderr
    assert len(busy.stderr.strip().splitlines()) <= 2 and "Traceback" not in busy.stderr

    by_env = run_dashboard(env, CHEM_DASHBOARD_PASSWORD="x", CHEM_DASHBOARD_PORT=port)
    assert by_env.returncode == 2 and "CHEM_DASHBOARD_PORT" in by_env.stderr

    away = run_dashboard(
        env,
        "--port",
        str(free_port()),
        CHEM_DASHBOARD_PASSWORD="x",
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
    )
    assert away.returncode == 3
    assert "REDIS_URL" in away.stderr and "Traceback" not in away.stderr
    assert len(away.stderr.strip().splitlines()) <= 3  # the two lines and the --debug hint

    bad = run_dashboard(env, CHEM_DASHBOARD_PASSWORD="x", REDIS_URL="redis://h:port/0")
    assert bad.returncode == 2 and "REDIS_URL" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_password_file_and_a_clean_stop(env: QueueEnv, tmp_path: Path, sig: int) -> None:
    """As compose runs it: the password in a file, then SIGTERM (or Ctrl-C) stops it, exit 0."""
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    dashboard = start_dashboard(
        env,
        tmp_path / "dashboard.log",
        "--bind",
        "127.0.0.1",
        CHEM_DASHBOARD_PASSWORD="",
        CHEM_DASHBOARD_PASSWORD_FILE=str(secret),
    )
    try:
        wait_answers(dashboard)
        assert get(dashboard.base_url + "/", (USERNAME, PASSWORD)).status == 200
        assert get(dashboard.base_url + "/").status == 401
    finally:
        code = dashboard.stop(sig)
    out = dashboard.output()
    assert code == 0, out
    assert "Traceback" not in out
    assert f"stopped ({signal.Signals(sig).name})" in out


def test_no_auth_serves_without_credentials_and_warns(env: QueueEnv, tmp_path: Path) -> None:
    dashboard = start_dashboard(env, tmp_path / "dashboard.log", "--no-auth")
    try:
        wait_answers(dashboard)
        assert get(dashboard.base_url + "/").status == 200
    finally:
        assert dashboard.stop() == 0
    assert "WARNING: --no-auth" in dashboard.output()
