"""The wheel, installed as the engine's project installs it: into a fresh virtualenv outside
the repository, from a copy of the source, then migrate + emit + a worker + a read against
the real servers, with the working directory far from any checkout.

It also pins what the wheel holds: one import name (``chem_persistence``), the migrations,
the SQL and the Lua scripts; no top-level ``domain``/``eventlog``/``producer``/``worker``
that could collide with the engine's own modules, and nothing of the lab or the tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
import zipfile
from pathlib import Path

import pytest

from tests.integration.security_helpers import PROJECT_VARIABLES

ROOT = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT_S = 600.0
RUN_TIMEOUT_S = 120.0
#: What the copy of the source leaves out (built or local things, and the heavy folders).
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", ".chem", "build", "dist", "*.egg-info", "__pycache__", "*_cache", "docs"
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def run(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> str:
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the working tree (the build writes beside its source)."""
    source = tmp_path_factory.mktemp("source") / "chem-persistence"
    shutil.copytree(ROOT, source, symlinks=True, ignore=NOT_SOURCE)
    out = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), "."],
        cwd=source,
        env=env,
        timeout=INSTALL_TIMEOUT_S,
    )
    (built,) = out.glob("chem_persistence-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv, outside the repository, with the wheel and its dependencies."""
    home = tmp_path_factory.mktemp("engine-project")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run([sys.executable, "-m", "venv", str(home / "venv")], cwd=home, env=env, timeout=120)
    pip = str(home / "venv" / "bin" / "pip")
    run([pip, "install", "--quiet", str(wheel)], cwd=home, env=env, timeout=INSTALL_TIMEOUT_S)
    return home / "venv"


def test_the_wheel_holds_one_package_with_its_migrations(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"chem_persistence"}
    for required in (
        "chem_persistence/migrations/env.py",
        "chem_persistence/migrations/script.py.mako",
        "chem_persistence/migrations/versions/0001_event_log.py",
        "chem_persistence/eventlog/queries.sql",
        "chem_persistence/producer/lua/emit.lua",
        "chem_persistence/worker/cli.py",
        "chem_persistence/worker/dashboard/templates/index.html",
        "chem_persistence/worker/dashboard/static/dashboard.css",
    ):
        assert required in names, required
    revisions = {p.name for p in (ROOT / "migrations" / "versions").glob("*.py")}
    shipped = {n.rsplit("/", 1)[1] for n in names if "/migrations/versions/" in n}
    assert revisions == shipped
    assert not [n for n in names if n.startswith(("lab/", "tests/", "chem_persistence/lab"))]


def test_installed_outside_the_repository_it_migrates_stores_and_reads(
    venv: Path,
    empty_database_url: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    bin_dir = venv / "bin"
    unique = f"chemwheel-{uuid.uuid4().hex[:10]}"
    env = {k: v for k, v in os.environ.items() if k not in (*PROJECT_VARIABLES, "PYTHONPATH")}
    env.update(
        {
            "DATABASE_URL": empty_database_url,
            "REDIS_URL": redis_url,
            "CHEM_QUEUE": unique,
            "CHEM_KEY_PREFIX": unique,
            "DATABASE_MAX_CONNECTIONS": "2",
        }
    )
    cli = str(bin_dir / "chem-persistence")
    python = str(bin_dir / "python")

    # The installed code is what runs, and the repository's folder names are not importable.
    where = run([python, "-c", "import chem_persistence.worker.cli as m; print(m.__file__)"],
                cwd=tmp_path, env=env, timeout=RUN_TIMEOUT_S)  # fmt: skip
    assert Path(where.strip()).is_relative_to(venv)
    for name in ("domain", "eventlog", "producer", "worker"):
        probe = subprocess.run([python, "-c", f"import {name}"], cwd=tmp_path, env=env,
                               capture_output=True, timeout=RUN_TIMEOUT_S, check=False)  # fmt: skip
        assert probe.returncode != 0, f"the wheel installed a top-level {name!r}"

    migrated = run([cli, "migrate"], cwd=tmp_path, env=env, timeout=RUN_TIMEOUT_S)
    assert "0007" in migrated, migrated

    # The engine's side, as the README shows it: the producer behind a QueuedEventStore.
    engine = textwrap.dedent(
        """
        import json, uuid
        from chem_persistence.domain import FlowEngine
        from chem_persistence.domain.examples import example_flow
        from chem_persistence.producer import Producer, QueuedEventStore

        store = QueuedEventStore(Producer.from_env())
        flow = uuid.uuid4()
        events = FlowEngine(store).run(flow, example_flow(1))
        print(json.dumps({"flow": str(flow), "events": len(store.list(flow))}))
        """
    )
    emitted = json.loads(run([python, "-c", engine], cwd=tmp_path, env=env, timeout=RUN_TIMEOUT_S))
    assert emitted["events"] > 3

    run([cli, "worker", "--burst"], cwd=tmp_path, env=env, timeout=RUN_TIMEOUT_S)
    replayed = json.loads(
        run(
            [cli, "replay", emitted["flow"], "--json"], cwd=tmp_path, env=env, timeout=RUN_TIMEOUT_S
        )
    )
    assert len(replayed["events"]) == emitted["events"], replayed
