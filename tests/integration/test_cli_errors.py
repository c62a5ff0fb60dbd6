"""An operational error, from every command, is at most two lines on stderr that name the
setting and say what to do, with the documented exit code: never a traceback (that is what
``--debug`` is for)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.ports import free_port
from tests.integration.security_helpers import Env, run_cli, with_port

EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
FLOW = "00000000-0000-4000-8000-000000000001"
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


@pytest.fixture
def env(database_url: str, redis_url: str) -> Env:
    return Env.new(database_url, redis_url, "errors")


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def assert_short_error(result: subprocess.CompletedProcess[str], code: int, names: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, (result.returncode, result.stderr)
    assert 1 <= len(lines) <= 2, result.stderr
    assert lines[0].startswith("chem-persistence: "), result.stderr
    assert names in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("status",),
        ("status", "--json"),
        ("dlq", "list"),
        ("dlq", "retry", FLOW),
        ("-q", "worker", "--burst"),
    ],
)
def test_redis_unreachable(env: Env, args: tuple[str, ...]) -> None:
    dead = with_port(env.redis_url, free_port())
    result = run_cli(env.variables(REDIS_URL=dead), *args)
    assert_short_error(result, EXIT_UNREACHABLE, "REDIS_URL")
    assert "is Redis running" in result.stderr


@pytest.mark.parametrize("args", [("migrate",), ("replay", FLOW), ("-q", "worker", "--burst")])
def test_postgresql_unreachable(env: Env, args: tuple[str, ...]) -> None:
    dead = with_port(env.database_url, free_port())
    result = run_cli(env.variables(DATABASE_URL=dead), *args)
    assert_short_error(result, EXIT_UNREACHABLE, "DATABASE_URL")


@pytest.mark.parametrize("args", [("migrate",), ("replay", FLOW)])
def test_a_missing_database_says_to_create_it(env: Env, args: tuple[str, ...]) -> None:
    missing = env.database_url.rsplit("/", 1)[0] + "/chem_no_such_database_here"
    result = run_cli(env.variables(DATABASE_URL=missing), *args)
    assert_short_error(result, EXIT_UNREACHABLE, "DATABASE_URL")
    assert "createdb" in result.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REDIS_URL", "http://127.0.0.1:6379/0"),
        ("DATABASE_URL", "mysql://x@127.0.0.1/db"),
        ("CHEM_BATCH_SIZE", "lots"),
        ("CHEM_LOG_LEVEL", "chatty"),
    ],
)
def test_a_bad_setting_is_named_with_its_value(env: Env, variable: str, value: str) -> None:
    result = run_cli(env.variables(**{variable: value}), "-q", "worker", "--burst")
    assert_short_error(result, EXIT_USAGE, variable)


def test_a_busy_metrics_port(env: Env, busy_port: int) -> None:
    result = run_cli(env.variables(CHEM_METRICS_PORT=str(busy_port)), "-q", "worker", "--burst")
    assert_short_error(result, EXIT_USAGE, "CHEM_METRICS_PORT")
    assert str(busy_port) in result.stderr


def test_a_reader_that_stops_early_is_not_an_error(env: Env) -> None:
    """``status | true``: the pipe is closed before the command writes, which ends quietly."""
    status = subprocess.Popen(
        [sys.executable, "-m", "chem_persistence.worker.cli", "status"],
        env=env.variables(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert status.stdout is not None and status.stderr is not None
    status.stdout.close()  # the reader is gone before the first line is written
    stderr = status.stderr.read().decode()
    assert status.wait(timeout=60) in (0, 1), stderr  # 1: an unhealthy status is still a status
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr
