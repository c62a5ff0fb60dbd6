"""`chem-persistence demo`: the whole pipeline end to end, with its parity check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from rq import Queue

from lab.demo import Summary, run_demo
from tests.redis_claim import CLAIM_KEY

ROOT = Path(__file__).resolve().parents[2]
FLOWS = 30
DEMO_TIMEOUT_S = 120


def test_demo_stores_every_flow_at_parity_and_cleans_up(
    database_url: str, redis_url: str, redis_conn: redis.Redis
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CHEM_", "DATABASE_"))},
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "chem_persistence.worker.cli",
            "demo",
            "--flows",
            str(FLOWS),
            "--workers",
            "2",
            "--batch-size",
            "50",
            "--json",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # stdout is the summary alone: workers print nothing there

    assert summary["flows"] == FLOWS
    assert summary["flows_at_parity"] == FLOWS
    assert summary["mismatches"] == []
    assert summary["events"] > FLOWS  # at least FlowInitialized and more per flow
    assert summary["artifacts"] > 0
    assert summary["dead_letters"] == 0
    assert summary["workers"] == 2
    assert summary["batch_size"] == 50
    assert summary["throughput_events_per_s"] > 0
    assert 0 < summary["failed_flows"] < FLOWS  # example flows: every 7th fails at a step
    assert 0 < summary["policy_flows"] < FLOWS
    assert summary["latency_p50_ms"] is not None  # scraped from the workers' /metrics
    assert summary["latency_p50_ms"] <= summary["latency_p99_ms"]
    assert set(summary) == set(Summary.__dataclass_fields__)

    # The demo leaves nothing of its own behind in a shared Redis: no keys of its prefix or
    # its queue, and no queue left registered for rq-dashboard to list.
    # (rq keeps a dead worker's hash for 60 s by design; it names neither.)
    leftovers = [
        key.decode()
        for key in redis_conn.scan_iter(count=1000)
        if b"chemdemo-" in key or b"chem-demo-" in key
    ]
    assert leftovers == []
    assert [q.name for q in Queue.all(connection=redis_conn)] == []
    others = [
        key
        for key in redis_conn.scan_iter(count=1000)
        if key != CLAIM_KEY.encode() and not key.startswith(b"rq:worker:demo-")
    ]
    assert others == []


def test_demo_on_embedded_servers_reaches_parity_and_stops_them(tmp_path: Path) -> None:
    """--embedded: real PostgreSQL and Valkey from wheels under ./.chem/, even though local
    servers answer; every flow at parity, and no server process left running afterwards."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("CHEM_", "DATABASE_", "REDIS_"))
    }
    workdir = tmp_path / "demo"
    workdir.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "chem_persistence.worker.cli",
            "demo",
            "--embedded",
            "--flows",
            "20",
            "--json",
        ],
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["flows_at_parity"] == summary["flows"] == 20
    assert summary["mismatches"] == []
    assert (workdir / ".chem" / "pgdata" / "PG_VERSION").exists()  # it really ran embedded
    running = subprocess.run(
        ["ps", "-ww", "-eo", "args"], capture_output=True, text=True, check=True
    )
    assert str(workdir) not in running.stdout  # both servers stopped on exit


def _summary(**overrides: object) -> Summary:
    values: dict[str, object] = {
        "flows": 30,
        "events": 279,
        "artifacts": 93,
        "failed_flows": 5,
        "policy_flows": 10,
        "dead_letters": 0,
        "workers": 2,
        "batch_size": 50,
        "seconds": 0.5,
        "throughput_events_per_s": 558.0,
        "latency_p50_ms": 100.0,
        "latency_p99_ms": 250.0,
        "flows_at_parity": 30,
        "mismatches": [],
    }
    values.update(overrides)
    return Summary(**values)  # type: ignore[arg-type]


def test_summary_table_renders_every_row() -> None:
    lines = _summary().table().splitlines()
    border = lines[0]
    assert border.startswith("+-") and border.endswith("-+")
    assert lines[-1] == border
    assert len({len(line) for line in lines}) == 1  # a rectangle
    rows = {
        cells[0].strip(): cells[1].strip()
        for cells in (line.strip("|").split("|") for line in lines[1:-1])
    }
    assert rows == {
        "flows": "30 (5 failed at a step, 10 with a policy step)",
        "events": "279",
        "artifacts": "93",
        "dead letters": "0",
        "workers x batch size": "2 x 50",
        "throughput": "558 events/s (0.50 s)",
        "emit→durable p50": "≤ 100.0 ms",
        "emit→durable p99": "≤ 250.0 ms",
        "flows at parity": "30 / 30",
    }


def test_summary_table_without_latencies_says_na() -> None:
    table = _summary(latency_p50_ms=None, latency_p99_ms=None, flows_at_parity=29).table()
    assert "| emit→durable p50" in table and "n/a" in table
    assert "29 / 30" in table


@pytest.mark.parametrize(("flows", "workers", "batch_size"), [(0, 2, 50), (30, 0, 50), (30, 2, 0)])
def test_run_demo_refuses_nonpositive_sizes_with_exit_2(
    flows: int,
    workers: int,
    batch_size: int,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_services(force_embedded: bool = False) -> None:
        raise AssertionError("a refused demo must not look for services")

    monkeypatch.setattr("lab.demo.resolve_services", no_services)
    assert run_demo(flows=flows, workers=workers, batch_size=batch_size, as_json=True) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "--flows, --workers and --batch-size must be at least 1" in captured.err
