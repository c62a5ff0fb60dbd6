"""A short `chem-persistence chaos` run: every fault kind, then zero lost/duplicated/reordered."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from lab.chaos import FAULT_KINDS, expected_event, flow_id_of

ROOT = Path(__file__).resolve().parents[2]


def test_expected_stream_is_deterministic_and_valid() -> None:
    first = [expected_event(7, 3, seq) for seq in range(12)]
    again = [expected_event(7, 3, seq) for seq in range(12)]
    assert first == again
    assert {e.flow_id for e, _ in first} == {flow_id_of(7, 3)}
    assert [e.seq for e, _ in first] == list(range(12))
    assert flow_id_of(7, 3) != flow_id_of(7, 4) != flow_id_of(8, 3)
    with_bodies = [(e, a) for e, a in first if a]
    assert with_bodies, "the stream carries artifact bodies"
    for event, artifacts in with_bodies:
        assert tuple(a.hash for a in artifacts) == event.kind.outputs  # type: ignore[union-attr]


def test_short_chaos_run_loses_duplicates_and_reorders_nothing() -> None:
    """~30 s of faults, every kind at least once (lost replies all along), then: nothing lost,
    duplicated, reordered, parked or left queued, and no process exited on its own."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("CHEM_", "DATABASE_", "REDIS_"))
    }
    # Not under pytest's tmp_path: the embedded PostgreSQL runs as another user, and any pytest
    # session starting meanwhile resets pytest's temporary root to mode 0700 (pg_ctl restart
    # then fails with "Permission denied").
    workdir = ROOT / ".chem" / f"test-chaos-{os.getpid()}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    try:
        _run_and_check(env, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run_and_check(env: dict[str, str], workdir: Path) -> None:
    result = subprocess.run(
        [
            sys.executable, "-m", "chem_persistence.worker.cli", "chaos", "--json",
            "--duration", "30", "--flows", "20", "--events", "40", "--workers", "2",
            "--reply-loss", "0.03",
        ],
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,  # a deadline, not a pace: the run ends when it has drained
        check=False,
    )  # fmt: skip
    assert result.stdout.startswith("{"), result.stderr[-3000:]
    report = json.loads(result.stdout.split("\nPROBLEM", 1)[0])
    assert result.returncode == 0, (report, result.stderr[-3000:])
    assert report["ok"] is True
    assert set(report["faults"]) == set(FAULT_KINDS)  # every kind of fault happened
    assert all(report["faults"][kind] >= 1 for kind in FAULT_KINDS), report["faults"]
    assert report["events_expected"] == report["events_stored"] == 20 * 40
    assert report["events_emitted"] == 20 * 40
    assert (report["lost"], report["duplicated"], report["reordered"]) == (0, 0, 0)
    assert report["parked_flows"] == 0
    assert report["left_in_redis"] == 0
    # Every worker and producer exit was one the rig caused (SIGKILL or an armed point).
    assert report["unexpected_exits"] == 0, report["problems"]
    assert report["drain_seconds_after_last_fault"] is not None
    running = subprocess.run(
        ["ps", "-ww", "-eo", "args"], capture_output=True, text=True, check=True
    )
    assert str(workdir) not in running.stdout  # private servers and workers all stopped
