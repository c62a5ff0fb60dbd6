"""The dashboard in a real browser: Debian's chromium driven by playwright.

The scene is tests/integration/dashboard_helpers.py (real workers, a busy one, a failed job,
a parked flow, the real ``chem-persistence dashboard`` process). Every page is loaded as an
operator would: ours, and rq-dashboard's queues, workers (the busy worker is listed, not
"Loading...") and jobs pages; the numbers shown are checked against Redis; then the operator
fixes the cause (emits the missing event), clicks Retry, confirms, and the flow's events end
up in PostgreSQL.

The browser is ``CHEM_CHROMIUM`` (default /usr/bin/chromium: ``make test`` installs it with
scripts/ensure-browser); playwright never downloads one. Without it the test fails (skips only
with CHEM_TEST_ALLOW_SKIP=1, never under CI). ``--dashboard-screenshots DIR`` saves a PNG of
each page into DIR (``docs/`` for the README). Every wait is on a condition, 30 s and more.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import skips_allowed
from tests.integration.dashboard_helpers import PASSWORD, USERNAME, Scene, dashboard_scene
from tests.integration.queue_helpers import QueueEnv, stored_counts, wait_until

CHROMIUM_ENV = "CHEM_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 45_000
STORE_TIMEOUT_S = 90.0
VIEWPORT = {"width": 1280, "height": 860}
#: The status of a fetch from the page, without credentials (so chromium shows no prompt),
#: or -1 if it has not answered within 20 s: a test must never wait for ever.
FETCH_STATUS = """path => Promise.race([
  fetch(path, {credentials: 'omit', cache: 'no-store'}).then(r => r.status),
  new Promise(done => setTimeout(() => done(-1), 20000)),
])"""


def chromium_path() -> str:
    path = os.environ.get(CHROMIUM_ENV) or DEFAULT_CHROMIUM
    if not os.access(path, os.X_OK):
        message = (
            f"{path} ({CHROMIUM_ENV}) is not an executable: run scripts/ensure-browser"
            " (make test does) or set CHEM_CHROMIUM"
        )
        if skips_allowed():
            pytest.skip(message)
        pytest.fail(message, pytrace=False)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    path = chromium_path()
    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=path, args=CHROMIUM_ARGS, headless=True, timeout=WAIT_MS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def scene(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scene]:
    env = QueueEnv.new(database_url, redis_url, "dashboard-browser")
    with dashboard_scene(env, tmp_path_factory.mktemp("dashboard-browser")) as started:
        yield started


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(
        http_credentials={"username": USERNAME, "password": PASSWORD}, viewport=VIEWPORT
    )
    context.set_default_timeout(WAIT_MS)
    opened = context.new_page()
    try:
        yield opened
    finally:
        context.close()


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Any:
    folder = request.config.getoption("--dashboard-screenshots")

    def shoot(page: Page, name: str) -> None:
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(folder) / f"dashboard-{name}.png"), full_page=True)

    return shoot


def in_redis(scene: Scene) -> dict[str, int]:
    client = redis.Redis.from_url(scene.env.redis_url)
    try:
        flow = scene.parked_id
        shard = scene.env.keys.for_flow(flow)
        return {
            "queued": int(client.llen(shard.queue(flow))),
            "dead": int(client.llen(shard.dead(flow))),
            "parked": int(client.zcard(shard.parked)),
        }
    finally:
        client.close()


def test_every_page_loads_and_shows_what_redis_holds(scene: Scene, page: Page, shots: Any) -> None:
    held = in_redis(scene)
    assert held == {"queued": 1, "dead": 1, "parked": 1}
    reply = page.goto(scene.base_url + "/")
    assert reply is not None and reply.status == 200
    expect(page.get_by_test_id("backlog")).to_have_text(str(held["queued"]))
    expect(page.get_by_test_id("parked-count")).to_have_text(str(held["parked"]))
    expect(page.get_by_test_id("dead-letters-total")).to_have_text(str(held["dead"]))
    row = page.locator(f'[data-testid=parked] tr[data-flow="{scene.parked_id}"]')
    expect(row.get_by_test_id("reason")).to_contain_text("SeqGap at position 3")
    expect(row.get_by_test_id("dead-letters")).to_have_text(str(held["dead"]))
    expect(row.get_by_test_id("queued")).to_have_text(str(held["queued"]))
    expect(page.get_by_test_id("rate")).not_to_have_text("measuring…")  # two samples by now
    shots(page, "overview")

    row.get_by_test_id("dead-letters").click()
    expect(page.get_by_test_id("records")).to_contain_text("SeqGap")

    page.goto(scene.base_url + "/rq/")
    expect(page.locator("table#queues")).to_contain_text(scene.env.queue_name)

    page.goto(scene.base_url + "/rq/0/view/workers")
    table = page.locator("table#workers")
    expect(table).not_to_contain_text("Loading...")
    busy = table.locator("tr", has_text=scene.busy_worker)
    expect(busy).to_contain_text("worker.job.sweep(0)")  # its current job, read as JSON
    expect(table).to_contain_text(scene.normal_worker)
    shots(page, "rq-workers")

    page.goto(f"{scene.base_url}/rq/0/view/jobs/{scene.env.queue_name}/failed/8/asc/1")
    expect(page.locator("table#jobs")).to_contain_text(scene.failed_job)
    page.goto(f"{scene.base_url}/rq/0/view/job/{scene.failed_job}")
    expect(page.locator("body")).to_contain_text("is not a shard")


def test_retry_from_the_page_unparks_the_flow_and_its_events_are_stored(
    scene: Scene, page: Page, shots: Any
) -> None:
    # the operator fixes the cause first: the missing event 2 queues behind the parked flow
    client = redis.Redis.from_url(scene.env.redis_url)
    try:
        scene.env.producer(client).emit(*scene.parked.items[2])
    finally:
        client.close()
    assert in_redis(scene)["queued"] == 2

    page.goto(scene.base_url + "/")
    row = page.locator(f'[data-testid=parked] tr[data-flow="{scene.parked_id}"]')
    expect(row.get_by_test_id("queued")).to_have_text("2")
    row.get_by_test_id("retry").click()

    expect(page.get_by_role("heading")).to_contain_text("Retry the dead letters")
    expect(page.get_by_test_id("records")).to_contain_text("SeqGap")
    assert in_redis(scene)["parked"] == 1  # the confirmation changed nothing yet
    shots(page, "confirm")
    page.get_by_test_id("confirm").click()

    expect(page.get_by_test_id("flash")).to_contain_text(
        "1 dead letter(s) put back in position order; resumed"
    )
    flow_id = scene.parked.flow_id
    wait_until(
        lambda: stored_counts(scene.env.database_url, [flow_id]).get(flow_id) == 5,
        STORE_TIMEOUT_S,
        "flow P's five events in PostgreSQL",
        details=scene.details,
    )
    held = in_redis(scene)
    assert (held["parked"], held["dead"]) == (0, 0)
    page.goto(scene.base_url + "/")
    expect(page.get_by_test_id("no-parked")).to_be_visible()
    expect(page.get_by_test_id("parked-count")).to_have_text("0")


def test_without_credentials_401_and_healthz_200(scene: Scene, browser: Browser) -> None:
    """A browser with no credentials: /healthz loads; every other page answers 401 (asked
    with the page's own fetch: a navigation to a 401 ends in chromium's auth error page)."""
    context = browser.new_context()
    context.set_default_timeout(WAIT_MS)
    try:
        anonymous = context.new_page()
        reply = anonymous.goto(scene.base_url + "/healthz")
        assert reply is not None and reply.status == 200
        assert anonymous.locator("body").inner_text().strip() == "ok"
        for path in ("/", "/api/overview.json", "/rq/", "/rq/0/view/workers"):
            status = anonymous.evaluate(FETCH_STATUS, path)
            assert status == 401, path
    finally:
        context.close()
