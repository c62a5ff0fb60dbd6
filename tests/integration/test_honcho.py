"""`honcho start` on the repository's Procfile: the stack stays up, works, and stops cleanly.

The reported defect: the Procfile's one-shot `release: chem-persistence migrate` line exited,
and honcho stops every process as soon as one exits: the stack was gone within a second.

Here honcho runs the Procfile's `worker` line (the `dashboard` line's command is built in
another branch; tests/deploy checks that line as given) on this session's own Redis DB and a
fresh, EMPTY database: with no release step, the worker migrates it itself. Events emitted
through the producer must land in PostgreSQL while honcho and the worker stay alive; compose's
worker healthcheck, run as compose would run it, must pass against the live worker; a SIGTERM
to honcho must stop everything cleanly (the worker exits 0, nothing is SIGKILLed) within the
grace honcho gives (its KILL_WAIT).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from honcho.manager import KILL_WAIT, SIGNALS
from rq import Worker

from chem_persistence.eventlog import migrate
from chem_persistence.producer.jobs import ingest_queue
from lab.ports import free_port
from tests.deploy.deploy_files import PROCFILE, ROOT, argv, environment, load_compose
from tests.integration.queue_helpers import wait_until
from tests.integration.security_helpers import Env, emit_example_flows, emitted_flows

BIN = Path(sys.executable).parent
START_DEADLINE_S = 90.0
STORED_DEADLINE_S = 90.0
#: honcho SIGKILLs what is still running KILL_WAIT seconds after its SIGTERM; it may itself
#: take a moment more to notice and exit.
STOP_DEADLINE_S = KILL_WAIT + 15.0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def compose_worker_healthcheck(metrics_port: int) -> subprocess.CompletedProcess[str]:
    """compose.yaml's worker healthcheck, as the container would run it (python is ours)."""
    test = argv(load_compose()["services"]["worker"]["healthcheck"]["test"])
    assert test[:2] == ["CMD", "python"], test
    env = {"PATH": os.environ.get("PATH", ""), "CHEM_METRICS_PORT": str(metrics_port)}
    return subprocess.run(
        [sys.executable, *test[2:]], env=env, capture_output=True, text=True, timeout=30
    )


@pytest.fixture
def honcho_log(tmp_path: Path) -> Path:
    return tmp_path / "honcho.log"


@pytest.fixture
def stack(
    empty_database_url: str, redis_url: str, tmp_path: Path, honcho_log: Path
) -> Iterator[tuple[subprocess.Popen[bytes], Env, int]]:
    """``honcho start worker`` on the Procfile; on the way out, whatever is left is stopped by
    its own pid (honcho's, and the worker's as honcho reported it)."""
    env = Env.new(empty_database_url, redis_url, "honcho")
    metrics_port = free_port()
    compose_worker_env = environment(load_compose()["services"]["worker"])
    variables = env.variables(
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        CHEM_METRICS_PORT=str(metrics_port),
        CHEM_BATCH_SIZE=compose_worker_env["CHEM_BATCH_SIZE"],
        CHEM_SWEEP_LINGER_SECONDS="1",
        CHEM_CHECK_INTERVAL_SECONDS="1",
    )
    variables.pop("PYTHONPATH")  # the installed console script, as on a host
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    command = [
        str(BIN / "honcho"),
        "start",
        "--procfile",
        str(PROCFILE),
        "--app-root",
        str(ROOT),
        "--env",
        str(empty_env_file),
        "worker",
    ]
    with honcho_log.open("wb") as out:
        proc = subprocess.Popen(
            command, cwd=tmp_path, env=variables, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield proc, env, metrics_port
    finally:
        pids = [int(p) for p in re.findall(r"worker\.1 started \(pid=(\d+)\)", _read(honcho_log))]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in pids:  # honcho started it in a session of its own
            if pid_alive(pid):
                os.killpg(pid, signal.SIGKILL)


def _read(log: Path) -> str:
    return log.read_text(errors="replace") if log.exists() else ""


def test_honcho_start_keeps_the_stack_up_stores_events_and_stops_cleanly(
    stack: tuple[subprocess.Popen[bytes], Env, int],
    honcho_log: Path,
    empty_database_url: str,
    redis_conn: redis.Redis,
) -> None:
    proc, env, metrics_port = stack

    def details() -> str:
        return f"honcho exit {proc.poll()}; its output:\n{_read(honcho_log)[-6000:]}"

    queue = ingest_queue(redis_conn, env.queue)

    def worker_up() -> bool:
        assert proc.poll() is None, f"honcho exited\n{details()}"
        registered = Worker.all(connection=redis_conn, queue=queue)
        return len(registered) == 1 and compose_worker_healthcheck(metrics_port).returncode == 0

    wait_until(worker_up, START_DEADLINE_S, "the worker under honcho", details=details)
    pid_match = re.search(r"worker\.1 started \(pid=(\d+)\)", _read(honcho_log))
    assert pid_match, details()
    worker_pid = int(pid_match[1])
    assert migrate.current(empty_database_url) == migrate.head_revision()  # it migrated itself

    queued = emit_example_flows(env.settings, 3)
    flows = emitted_flows(queued)
    expected = sum(len(queued.list(f)) for f in flows)

    def stored() -> bool:
        assert proc.poll() is None, f"honcho exited\n{details()}"
        with psycopg.connect(empty_database_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM event_log WHERE flow_id = ANY(%s)", [flows]
            ).fetchone()
        return row is not None and row[0] == expected

    wait_until(stored, STORED_DEADLINE_S, f"{expected} events in PostgreSQL", details=details)

    # still up after the work: honcho, the worker, its healthcheck
    assert proc.poll() is None, details()
    assert pid_alive(worker_pid), details()
    assert "stopped" not in _read(honcho_log), details()
    assert compose_worker_healthcheck(metrics_port).returncode == 0

    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=STOP_DEADLINE_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"honcho still running after SIGTERM\n{details()}") from None
    took = time.monotonic() - started
    output = _read(honcho_log)
    assert code == SIGNALS[signal.SIGTERM]["rc"], details()
    assert "worker.1 stopped (rc=0)" in output, details()
    assert "SIGKILL" not in output, details()
    assert took < KILL_WAIT, (took, details())
    wait_until(lambda: not pid_alive(worker_pid), 10, "the worker process to be gone")
    assert Worker.all(connection=redis_conn, queue=queue) == []  # it deregistered
    assert compose_worker_healthcheck(metrics_port).returncode != 0  # the check is real
