"""The dashboard without servers: settings, basic auth, form tokens, the events rate, and the
app on fakeredis (the pages, dlq actions behind the token and the generation, /healthz)."""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from flask.testing import FlaskClient
from rq import Queue
from rq.serializers import JSONSerializer

from chem_persistence.producer.dead_letter import make_record
from chem_persistence.producer.keys import Keys
from chem_persistence.producer.scripts import Scripts
from chem_persistence.worker.dashboard import command
from chem_persistence.worker.dashboard.app import create_app
from chem_persistence.worker.dashboard.auth import credentials_match
from chem_persistence.worker.dashboard.csrf import Tokens, same_origin
from chem_persistence.worker.dashboard.data import Context
from chem_persistence.worker.dashboard.rate import Sampler, StoredRate
from chem_persistence.worker.dashboard.settings import (
    DashboardConfigError,
    DashboardSettings,
    MissingPassword,
)
from chem_persistence.worker.deadletters import DeadLetters

PASSWORD = "s3cret pass"
ORIGIN = {"Origin": "http://localhost"}

# --- settings -----------------------------------------------------------------------------


def test_defaults_bind_to_loopback_and_need_a_password() -> None:
    with pytest.raises(MissingPassword) as caught:
        DashboardSettings.from_env({})
    message = str(caught.value)
    assert "CHEM_DASHBOARD_PASSWORD" in message and "CHEM_DASHBOARD_PASSWORD_FILE" in message
    assert "\n" not in message
    s = DashboardSettings.from_env({"CHEM_DASHBOARD_PASSWORD": PASSWORD})
    assert (s.username, s.password, s.bind, s.port, s.auth) == (
        "admin",
        PASSWORD,
        "127.0.0.1",
        9181,
        True,
    )
    assert PASSWORD not in repr(s)


def test_no_auth_needs_no_password_and_options_win_over_the_environment() -> None:
    env = {"CHEM_DASHBOARD_BIND": "0.0.0.0", "CHEM_DASHBOARD_PORT": "9000"}
    s = DashboardSettings.from_env(env, no_auth=True)
    assert (s.auth, s.bind, s.port) == (False, "0.0.0.0", 9000)
    s = DashboardSettings.from_env(env, no_auth=True, bind="::1", port=9999)
    assert (s.bind, s.port) == ("::1", 9999)


def test_the_password_file_is_read_without_its_line_break(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(PASSWORD + "\n")
    s = DashboardSettings.from_env(
        {"CHEM_DASHBOARD_PASSWORD_FILE": str(secret), "CHEM_DASHBOARD_USERNAME": "ops"}
    )
    assert (s.username, s.password) == ("ops", PASSWORD)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CHEM_DASHBOARD_PASSWORD_FILE": "/nonexistent/secret"}, "CHEM_DASHBOARD_PASSWORD_FILE"),
        ({"CHEM_DASHBOARD_PASSWORD": "a", "CHEM_DASHBOARD_PASSWORD_FILE": "/x"}, "and"),
        ({"CHEM_DASHBOARD_PASSWORD": "a", "CHEM_DASHBOARD_PORT": "0"}, "CHEM_DASHBOARD_PORT"),
        ({"CHEM_DASHBOARD_PASSWORD": "a", "CHEM_DASHBOARD_PORT": "x"}, "CHEM_DASHBOARD_PORT"),
        ({"CHEM_DASHBOARD_PASSWORD": "a", "CHEM_DASHBOARD_USERNAME": "a:b"}, "USERNAME"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(DashboardConfigError) as caught:
        DashboardSettings.from_env(env)
    assert named in str(caught.value)
    assert "\n" not in str(caught.value)


def test_an_empty_password_file_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("\n")
    with pytest.raises(DashboardConfigError, match="holds no password"):
        DashboardSettings.from_env({"CHEM_DASHBOARD_PASSWORD_FILE": str(secret)})


def test_without_the_extra_the_command_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(command, "find_spec", lambda name: None if name == "waitress" else 1)
    assert command.run(None) == 2  # type: ignore[arg-type]  # fails before reading the args
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "pip install 'chem-persistence[dashboard]'" in err and "waitress" in err


# --- auth and tokens ----------------------------------------------------------------------


def test_credentials_must_match_both() -> None:
    expected = ("admin", PASSWORD)
    assert credentials_match("admin", PASSWORD, expected)
    assert not credentials_match("admin", PASSWORD + "x", expected)
    assert not credentials_match("root", PASSWORD, expected)
    assert not credentials_match("", "", expected)


def test_a_token_names_one_action_on_one_flow_at_one_generation_and_expires() -> None:
    tokens = Tokens(b"k" * 32, ttl_seconds=60)
    flow = str(uuid.uuid4())
    token = tokens.issue("retry", flow, 3, now=1000)
    assert tokens.check(token, "retry", flow, 3, now=1030)
    assert not tokens.check(token, "discard", flow, 3, now=1030)
    assert not tokens.check(token, "retry", str(uuid.uuid4()), 3, now=1030)
    assert not tokens.check(token, "retry", flow, 4, now=1030)
    assert not tokens.check(token, "retry", flow, 3, now=1061)  # expired
    assert not Tokens(b"o" * 32).check(token, "retry", flow, 3, now=1030)  # another process
    assert not tokens.check("", "retry", flow, 3, now=1030)
    assert not tokens.check("1000.", "retry", flow, 3, now=1030)


def test_same_origin() -> None:
    assert same_origin("http://h:1", "http://h:1/")
    assert same_origin("http://h:1/rq/0/view/jobs", "http://h:1/")
    assert not same_origin("http://h:1.evil", "http://h:1/")
    assert not same_origin("http://evil", "http://h:1/")
    assert not same_origin("null", "http://h:1/")
    assert not same_origin(None, "http://h:1/")


# --- the events rate ----------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_counts_what_each_sweep_stored_in_the_window() -> None:
    clock = Clock()
    rate = StoredRate(window_seconds=10, clock=clock)
    assert rate.rate() is None
    rate.observe({"a": 100})
    clock.now += 2
    rate.observe({"a": 140, "b": 10})  # b started in the window: from 0
    assert rate.rate() is not None and rate.rate().events == 50  # type: ignore[union-attr]
    clock.now += 2
    rate.observe({"b": 30})  # a ended: it keeps its last value
    measured = rate.rate()
    assert measured is not None
    assert (measured.events, measured.seconds, measured.events_per_second) == (70, 4.0, 17.5)
    clock.now += 20  # the window moves on: only the last sample before it stays (reference)
    rate.observe({"c": 5})
    clock.now += 1
    rate.observe({"c": 25})
    later = rate.rate()
    assert later is not None and (later.events, later.seconds) == (25, 21.0)
    clock.now += 10
    rate.observe({"c": 45})  # the sample at 125 is now the window's start: the reference
    latest = rate.rate()
    assert latest is not None and (latest.events, latest.seconds) == (20, 10.0)


# --- the app on fakeredis -----------------------------------------------------------------


class Rig:
    def __init__(self) -> None:
        self.server = fakeredis.FakeServer()
        self.redis = fakeredis.FakeRedis(server=self.server)
        self.keys = Keys("dash")
        self.queue = Queue("dash-q", connection=self.redis, serializer=JSONSerializer)
        self.started: list[tuple[str, int]] = []
        self.dlq = DeadLetters(self.redis, self.keys, Scripts.register(self.redis), self._start)
        ctx = Context(
            self.redis, self.keys, self.queue, self.dlq, Sampler(self.queue, StoredRate())
        )
        settings = DashboardSettings(password=PASSWORD)
        self.app = create_app(ctx, settings, "redis://fake/0")
        self.app.testing = True

    def _start(self, job_id: str, shard: int) -> None:
        self.started.append((job_id, shard))

    def park(self, flow: str, dead: int = 1, queued: int = 1) -> None:
        shard = self.keys.for_flow(flow)
        for i in range(dead):
            error = ValueError(f"SeqGap at position {3 + i} of {flow}")
            self.redis.rpush(
                shard.dead(flow), make_record(f"entry-{i}".encode(), error, 3 + i, None)
            )
        for i in range(queued):
            self.redis.rpush(shard.queue(flow), f"queued-{i}".encode())
        self.redis.set(shard.dead_generation(flow), 1)
        self.redis.set(shard.reason(flow), f"SeqGap at position 3 of {flow}")
        self.redis.zadd(shard.parked, {flow: 1_700_000_000_000})

    def client(self, auth: bool = True) -> FlaskClient:
        client = self.app.test_client()
        if auth:
            token = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
            client.environ_base["HTTP_AUTHORIZATION"] = f"Basic {token}"
        return client


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.redis.close()


def form_of(html: str) -> dict[str, str]:
    return dict(re.findall(r'name="(token|generation)" value="([^"]*)"', html))


@pytest.mark.parametrize("path", ["/", "/api/overview.json", "/rq/", "/rq/0/data/workers.json"])
def test_every_page_but_healthz_needs_the_credentials(rig: Rig, path: str) -> None:
    assert rig.client(auth=False).get(path).status_code == 401
    wrong = rig.client(auth=False)
    token = base64.b64encode(b"admin:wrong").decode()
    assert wrong.get(path, headers={"Authorization": f"Basic {token}"}).status_code == 401
    assert rig.client().get(path).status_code == 200
    healthz = rig.client(auth=False).get("/healthz")
    assert (healthz.status_code, healthz.text) == (200, "ok\n")


def test_healthz_is_503_when_redis_does_not_answer(rig: Rig) -> None:
    rig.server.connected = False  # fakeredis: every command raises ConnectionError
    reply = rig.client(auth=False).get("/healthz")
    assert reply.status_code == 503
    assert rig.client().get("/").status_code == 503  # a page says Redis does not answer


def test_the_overview_shows_the_parked_flow_and_its_numbers(rig: Rig) -> None:
    flow = str(uuid.uuid4())
    rig.park(flow, dead=2, queued=3)
    page = rig.client().get("/").text
    assert flow in page and "SeqGap at position 3" in page
    data: dict[str, Any] = rig.client().get("/api/overview.json").json  # type: ignore[assignment]
    assert (data["backlog_total"], data["dead_letters_total"]) == (3, 2)
    [parked] = data["parked_flows"]
    assert (parked["flow_id"], parked["dead_letters"], parked["queued"]) == (flow, 2, 3)
    records = rig.client().get(f"/flows/{flow}/dead-letters").text
    assert "entry-0" in records and "entry-1" in records


def test_retry_needs_the_confirmation_token_and_same_origin(rig: Rig) -> None:
    flow = str(uuid.uuid4())
    rig.park(flow)
    client = rig.client()
    confirm = client.get(f"/flows/{flow}/retry")
    assert confirm.status_code == 200 and "Yes, retry 1 dead letter(s)" in confirm.text
    form = form_of(confirm.text)
    assert form["generation"] == "1"
    # without the token, with another action's, or from another site: nothing done
    no_token = client.post(f"/flows/{flow}/retry", data={"generation": "1"}, headers=ORIGIN)
    assert no_token.status_code == 400
    discard = client.post(f"/flows/{flow}/discard", data=form, headers=ORIGIN)
    assert discard.status_code == 400
    cross = client.post(f"/flows/{flow}/retry", data=form, headers={"Origin": "http://evil"})
    assert cross.status_code == 403
    assert client.post(f"/flows/{flow}/retry", data=form).status_code == 403  # no Origin
    assert rig.redis.llen(rig.keys.for_flow(flow).dead(flow)) == 1
    # with it: retried, and the result is flashed on the overview
    done = client.post(f"/flows/{flow}/retry", data=form, headers=ORIGIN)
    assert done.status_code == 303
    shard = rig.keys.for_flow(flow)
    assert rig.redis.zscore(shard.parked, flow) is None
    assert rig.redis.llen(shard.dead(flow)) == 0
    assert rig.redis.lrange(shard.queue(flow), 0, -1)[0] == b"entry-0"  # the dead letter first
    assert "1 dead letter(s) put back in position order; resumed" in client.get("/").text


def test_a_stale_confirmation_changes_nothing(rig: Rig) -> None:
    flow = str(uuid.uuid4())
    rig.park(flow, dead=1, queued=0)
    client = rig.client()
    form = form_of(client.get(f"/flows/{flow}/discard").text)
    shard = rig.keys.for_flow(flow)
    rig.redis.incr(shard.dead_generation(flow))  # another operator acted meanwhile
    reply = client.post(f"/flows/{flow}/discard", data=form, headers=ORIGIN)
    assert reply.status_code == 303
    assert rig.redis.llen(shard.dead(flow)) == 1  # nothing discarded
    assert rig.redis.zscore(shard.parked, flow) is not None
    assert "changed since you looked" in client.get("/").text
    # a fresh confirmation works
    form = form_of(client.get(f"/flows/{flow}/discard").text)
    assert form["generation"] == "2"
    client.post(f"/flows/{flow}/discard", data=form, headers=ORIGIN)
    assert rig.redis.llen(shard.dead(flow)) == 0
    assert "discarded (logged); flow resumed" in client.get("/").text


def test_a_flow_that_is_not_a_uuid_is_not_found(rig: Rig) -> None:
    assert rig.client().get("/flows/not-a-flow/retry").status_code == 404
    assert rig.client().get(f"/flows/{uuid.uuid4()}/explode").status_code == 404
