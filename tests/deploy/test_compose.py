"""compose.yaml: valid by the compose specification's schema, and without any of the defects
reported against it (issue #13): workers as the superuser, a defaulted password, a password
on a command line, a port on every interface, no stop grace period, no healthchecks.

No Docker engine runs here: the file is validated and checked against the code, not run.
Each check is shown to fail on the defect it is for (``DEFECTS``).
"""

from __future__ import annotations

import copy
import io
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.deploy.deploy_files import (
    COMPOSE,
    DASHBOARD_ARGS,
    argv,
    compose_problems,
    duration_seconds,
    environment,
    load_compose,
    worst_case_stop,
)

CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"
SCHEMA = "vendor.compose-spec"


def schema_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", SCHEMA, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def dump(doc: dict[str, Any]) -> str:
    out = io.StringIO()
    YAML(typ="safe").dump(doc, out)
    return out.getvalue()


@pytest.fixture
def doc() -> dict[str, Any]:
    return load_compose()


# --- the schema -------------------------------------------------------------------------------


def test_compose_yaml_is_valid_by_the_compose_spec_schema() -> None:
    result = schema_check(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_refuses_what_compose_would(tmp_path: Path) -> None:
    for broken in (
        COMPOSE.read_text().replace("stop_grace_period:", "stop_grace_periode:"),
        COMPOSE.read_text().replace("file: ./secrets/", "path: ./secrets/"),
    ):
        path = tmp_path / "compose.yaml"
        path.write_text(broken)
        result = schema_check(path)
        assert result.returncode == 1, result.stdout + result.stderr


# --- the defects ------------------------------------------------------------------------------


def test_compose_yaml_has_none_of_the_reported_defects(doc: dict[str, Any]) -> None:
    assert compose_problems(doc, COMPOSE.read_text()) == []


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node = doc
        for key in parents:
            node = node[key]
        if value is None:
            node.pop(leaf)
        else:
            node[leaf] = value

    return mutate


S = "services"
#: Each reported defect (and its near relatives), put back into the file: (change, expected).
DEFECTS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "workers as the superuser": (
        _set(f"{S}.worker.environment.DATABASE_URL", "postgresql://chem@postgres:5432/chem"),
        "worker: connects as the owner",
    ),
    "workers as postgres": (
        _set(f"{S}.worker.environment.DATABASE_URL", "postgresql://postgres@postgres/chem"),
        "worker: connects as the owner",
    ),
    "a password in the workers' URL": (
        _set(f"{S}.worker.environment.DATABASE_URL", "postgresql://chem_worker:pw@postgres/chem"),
        "DATABASE_URL carries a password",
    ),
    "the role is never made": (
        _set(f"{S}.migrate.command", ["migrate"]),
        "migrate: does not create the workers' role",
    ),
    "no stop_grace_period": (_set(f"{S}.worker.stop_grace_period", None), "stop_grace_period"),
    "a grace period under the bound": (
        _set(f"{S}.worker.stop_grace_period", "1m"),
        "stop_grace_period 60 s <",
    ),
    "a slice longer than the grace period allows": (
        _set(f"{S}.worker.environment.CHEM_SWEEP_SLICE_SECONDS", "100"),
        "stop_grace_period 135 s <",
    ),
    "the dashboard password on the command line": (
        _set(
            f"{S}.dashboard.command",
            [*DASHBOARD_ARGS, "--port", "9181", "--password=${RQ_DASHBOARD_PASSWORD:?set it}"],
        ),
        "dashboard.command: a password on the command line",
    ),
    "port 9181 on every interface": (
        _set(f"{S}.dashboard.ports", ["9181:9181"]),
        "published on every interface",
    ),
    "a password in the environment": (
        _set(f"{S}.postgres.environment.POSTGRES_PASSWORD", "chem"),
        "POSTGRES_PASSWORD holds a secret in the environment",
    ),
    "a secret file outside the mounted secrets": (
        _set(f"{S}.worker.environment.DATABASE_PASSWORD_FILE", "/tmp/password"),
        "is not one of its mounted secrets",
    ),
    "no worker healthcheck": (_set(f"{S}.worker.healthcheck", None), "worker: no healthcheck"),
    "no dashboard healthcheck": (
        _set(f"{S}.dashboard.healthcheck", None),
        "dashboard: no healthcheck",
    ),
    "a disabled healthcheck": (
        _set(f"{S}.redis.healthcheck", {"test": ["NONE"]}),
        "redis: no healthcheck",
    ),
    "no init for the workers": (_set(f"{S}.worker.init", None), "worker: no init"),
    "Redis without AOF": (_set(f"{S}.redis.command", ["redis-server"]), "redis: AOF is off"),
}


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_each_reported_defect_put_back_is_caught(doc: dict[str, Any], defect: str) -> None:
    mutate, expected = DEFECTS[defect]
    broken = copy.deepcopy(doc)
    mutate(broken)
    problems = compose_problems(broken, dump(broken))
    assert any(expected in p for p in problems), problems


def test_a_defaulted_password_is_caught(doc: dict[str, Any]) -> None:
    """The reported ``${POSTGRES_PASSWORD:-chem}``, in any of its spellings."""
    for spelling in ("${POSTGRES_PASSWORD:-chem}", "${POSTGRES_PASSWORD-chem}", "${DB_SECRET:=x}"):
        text = COMPOSE.read_text() + f"\nx-old:\n  password: {spelling}\n"
        problems = compose_problems(doc, text)
        assert any("gives a secret a default" in p for p in problems), (spelling, problems)
    required = COMPOSE.read_text() + "\nx-ok:\n  password: ${POSTGRES_PASSWORD:?set it}\n"
    assert compose_problems(doc, required) == []


# --- the grace period -------------------------------------------------------------------------


def test_the_grace_period_covers_the_worst_case_stop_computed_from_the_code(
    doc: dict[str, Any],
) -> None:
    worker = doc["services"]["worker"]
    bound = worst_case_stop(environment(worker))
    grace = duration_seconds(worker["stop_grace_period"])
    assert grace >= bound.total, (grace, bound)
    assert grace > 10, "Docker's default"
    # The comment above stop_grace_period states the same arithmetic: keep it true.
    text = COMPOSE.read_text()
    stated = re.search(r"=\s*(\d+) s, so (\d+) s", text)
    assert stated is not None
    assert float(stated[1]) == pytest.approx(bound.total), (stated[0], bound)
    assert float(stated[2]) == grace
    for term in ("CHEM_SWEEP_SLICE_SECONDS", "RetryPolicy.max_seconds", "REDIS_SOCKET_TIMEOUT"):
        assert term in text


def test_the_bound_follows_the_settings() -> None:
    base = worst_case_stop({}).total
    assert worst_case_stop({"CHEM_SWEEP_SLICE_SECONDS": "40"}).total == base + 20
    assert worst_case_stop({"DATABASE_STATEMENT_TIMEOUT_MS": "20000"}).total == base + 10
    assert worst_case_stop({"DATABASE_STATEMENT_TIMEOUT_MS": "0"}).total == float("inf")


@pytest.mark.parametrize(
    ("text", "seconds"), [("135s", 135), ("2m15s", 135), ("1h", 3600), ("500ms", 0.5), (90, 90)]
)
def test_durations_read_as_compose_does(text: str | int, seconds: float) -> None:
    assert duration_seconds(text) == seconds


def test_a_bad_duration_is_refused() -> None:
    with pytest.raises(ValueError):
        duration_seconds("2 minutes")


# --- the services -----------------------------------------------------------------------------


def test_the_dashboard_runs_the_agreed_command_on_localhost(doc: dict[str, Any]) -> None:
    dashboard = doc["services"]["dashboard"]
    assert argv(dashboard["command"]) == [*DASHBOARD_ARGS, "--port", "9181"]
    assert "entrypoint" not in dashboard  # the image's: chem-persistence
    assert dashboard["ports"] == ["127.0.0.1:9181:9181"]
    env = environment(dashboard)
    assert env["CHEM_DASHBOARD_USERNAME"]
    assert env["CHEM_DASHBOARD_PASSWORD_FILE"] == "/run/secrets/dashboard_password"
    assert "file" in doc["secrets"]["dashboard_password"]
    test = argv(dashboard["healthcheck"]["test"])
    assert "http://127.0.0.1:9181/healthz" in " ".join(test)


def test_each_python_healthcheck_compiles_and_reads_what_its_service_sets(
    doc: dict[str, Any],
) -> None:
    for name, service in doc["services"].items():
        test = argv((service.get("healthcheck") or {}).get("test"))
        if test[:2] != ["CMD", "python"]:
            continue
        assert test[2] == "-c", test
        compile(test[3], f"{name}.healthcheck", "exec")
        for variable in re.findall(r"os\.environ\['(\w+)'\]", test[3]):
            assert variable in environment(service), (name, variable)


def test_migrate_runs_as_the_owner_and_makes_the_workers_role(doc: dict[str, Any]) -> None:
    services = doc["services"]
    owner = environment(services["postgres"])["POSTGRES_USER"]
    migrate = environment(services["migrate"])
    assert migrate["DATABASE_URL"].startswith(f"postgresql://{owner}@")
    args = argv(services["migrate"]["command"])
    assert "--worker-role=chem_worker" in args
    assert "--worker-password-file=/run/secrets/chem_worker_password" in args
    assert environment(services["worker"])["DATABASE_URL"].startswith("postgresql://chem_worker@")
    assert set(services["migrate"]["secrets"]) == {"postgres_password", "chem_worker_password"}
    assert set(services["worker"]["secrets"]) == {"chem_worker_password"}
    assert environment(services["postgres"])["POSTGRES_PASSWORD_FILE"] == (
        "/run/secrets/postgres_password"
    )
