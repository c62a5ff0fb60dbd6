"""A test run cannot pass by skipping: a missing server fails the tests that need it unless
CHEM_TEST_ALLOW_SKIP=1 says otherwise (never under CI), and under CI any skipped integration
test fails the run, except a skip marked ``ci_skip_allowed``, which is printed.

Each case runs pytest in a child process on one real test of this suite; a tiny plugin (written
to the test's tmp_path) forces the skip where a case needs one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
#: A real integration test that needs only PostgreSQL.
TARGET = "tests/integration/test_isolation.py::test_a_database_this_session_created_is_dropped_once"
CLOSED_PORT_ADMIN_URL = "postgresql://postgres@127.0.0.1:1/postgres"
CHILD_TIMEOUT_S = 120

FORCE_SKIP_PLUGIN = """
import pytest

def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.skip(reason="forced by the skip-policy test"))
        if {allowed}:
            item.add_marker(pytest.mark.ci_skip_allowed)
"""


def run_pytest(
    tmp_path: Path,
    *,
    force_skip: bool = False,
    allowed: bool = False,
    workers: int = 0,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", TARGET]
    if workers:  # as `make test` runs them: in parallel worker processes (pytest-xdist)
        args += ["-n", str(workers)]
    child_env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CI", "CHEM_TEST_ALLOW_SKIP", "TEST_REDIS_DB", "PYTEST_ADDOPTS")
    }
    if force_skip:
        (tmp_path / "force_skip_plugin.py").write_text(FORCE_SKIP_PLUGIN.format(allowed=allowed))
        args[3:3] = ["-p", "force_skip_plugin"]
        child_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(tmp_path), child_env.get("PYTHONPATH", "")) if p
        )
    child_env.update(env)
    return subprocess.run(
        args,
        cwd=REPO_ROOT,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )


@pytest.mark.parametrize("workers", [0, 2], ids=["one-process", "parallel-workers"])
def test_under_ci_a_skipped_integration_test_fails_the_run(tmp_path: Path, workers: int) -> None:
    result = run_pytest(tmp_path, force_skip=True, workers=workers, CI="true")
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout
    assert "1 skipped" in result.stdout
    assert "CI: 1 integration test(s) skipped" in result.stdout
    assert "NOT allowed under CI" in result.stdout


def test_outside_ci_a_skip_passes_but_is_listed(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, force_skip=True)
    assert result.returncode == pytest.ExitCode.OK, result.stdout
    assert "integration tests skipped" in result.stdout
    assert "forced by the skip-policy test" in result.stdout


def test_under_ci_a_skip_marked_allowed_passes_and_is_printed(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, force_skip=True, allowed=True, CI="true")
    assert result.returncode == pytest.ExitCode.OK, result.stdout
    assert "[allowed under CI]" in result.stdout


@pytest.mark.parametrize(
    ("env", "outcome"),
    [
        ({}, "1 failed"),  # a plain run: a missing server is a failure
        ({"CHEM_TEST_ALLOW_SKIP": "1"}, "1 skipped"),  # told otherwise, explicitly
        ({"CHEM_TEST_ALLOW_SKIP": "1", "CI": "true"}, "1 failed"),  # never under CI
    ],
    ids=["plain", "opted-in", "opted-in-under-ci"],
)
def test_a_missing_server_fails_unless_skipping_was_asked_for(
    tmp_path: Path, env: dict[str, str], outcome: str
) -> None:
    result = run_pytest(tmp_path, TEST_ADMIN_DATABASE_URL=CLOSED_PORT_ADMIN_URL, **env)
    assert outcome in result.stdout, result.stdout
    assert "is not answering" in result.stdout
    expected = pytest.ExitCode.OK if outcome == "1 skipped" else pytest.ExitCode.TESTS_FAILED
    assert result.returncode == expected, result.stdout
