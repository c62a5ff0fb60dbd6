"""The worker's settings from the environment: documented defaults, and errors that name the
variable and the value (never a traceback from deep inside a sweep)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chem_persistence.domain.batches import FlowOutcome
from chem_persistence.domain.events import FlowEvent, StepStarted
from chem_persistence.producer.config import (
    DEFAULT_EMIT_RETRY_SECONDS,
    DEFAULT_KEY_PREFIX,
    DEFAULT_MAX_ENVELOPE_BYTES,
    DEFAULT_QUEUE,
    DEFAULT_REDIS_URL,
    DEFAULT_SHARDS,
    QueueConfigError,
    QueueSettings,
)
from chem_persistence.worker import cli
from chem_persistence.worker.config import (
    DEFAULT_BATCH_BYTES,
    DEFAULT_BATCH_SIZE,
    DEFAULT_CHECK_INTERVAL_SECONDS,
    DEFAULT_CLAIM_FLOWS,
    DEFAULT_LEASE_TTL_MS,
    DEFAULT_ORPHAN_SCAN_KEYS,
    DEFAULT_SWEEP_LINGER_SECONDS,
    DEFAULT_SWEEP_SLICE_SECONDS,
    DEFAULT_WAKE_WAIT_SECONDS,
    WorkerConfigError,
    WorkerSettings,
)
from chem_persistence.worker.sweep import SweepHooks
from lab import faulty_worker

WORKER_VARIABLES = (
    "CHEM_BATCH_SIZE",
    "CHEM_BATCH_BYTES",
    "CHEM_CLAIM_FLOWS",
    "CHEM_LEASE_TTL_MS",
    "CHEM_SWEEP_SLICE_SECONDS",
    "CHEM_SWEEP_LINGER_SECONDS",
    "CHEM_WAKE_WAIT_SECONDS",
    "CHEM_CHECK_INTERVAL_SECONDS",
    "CHEM_ORPHAN_SCAN_KEYS",
    "CHEM_METRICS_PORT",
)
#: v1's settings: gone with the per-flow drain; setting one must change nothing.
REMOVED_VARIABLES = (
    "CHEM_LOCK_TTL_MS",
    "CHEM_DRAIN_SLICE_SECONDS",
    "CHEM_RECONCILE_INTERVAL_SECONDS",
    "CHEM_RECONCILE_GRACE_SECONDS",
    "CHEM_FAULT_KILL_AFTER_COMMIT",
)


def test_defaults() -> None:
    assert WorkerSettings.from_env({}) == WorkerSettings(
        batch_size=500,
        batch_bytes=8 * 1024 * 1024,
        claim_flows=200,
        lease_ttl_ms=30_000,
        sweep_slice_seconds=20.0,
        sweep_linger_seconds=5.0,
        wake_wait_seconds=0.5,
        check_interval_seconds=5.0,
        orphan_scan_keys=200,
        metrics_port=None,
    )
    assert (DEFAULT_BATCH_SIZE, DEFAULT_BATCH_BYTES, DEFAULT_CLAIM_FLOWS) == (
        500,
        8 * 1024 * 1024,
        200,
    )
    assert (DEFAULT_LEASE_TTL_MS, DEFAULT_SWEEP_SLICE_SECONDS) == (30_000, 20.0)
    assert (DEFAULT_SWEEP_LINGER_SECONDS, DEFAULT_WAKE_WAIT_SECONDS) == (5.0, 0.5)
    assert (DEFAULT_CHECK_INTERVAL_SECONDS, DEFAULT_ORPHAN_SCAN_KEYS) == (5.0, 200)
    assert WorkerSettings() == WorkerSettings.from_env({})


def test_empty_variables_mean_the_default() -> None:
    assert WorkerSettings.from_env(dict.fromkeys(WORKER_VARIABLES, "")) == WorkerSettings()


def test_removed_variables_are_not_read() -> None:
    """v1's lock, drain-slice, reconcile and fault-injection variables are gone: even values
    that v1 refused change nothing (fault injection is the lab's command-line flags now)."""
    assert WorkerSettings.from_env(dict.fromkeys(REMOVED_VARIABLES, "bogus")) == WorkerSettings()


def test_every_variable_is_read() -> None:
    settings = WorkerSettings.from_env(
        {
            "CHEM_BATCH_SIZE": "7",
            "CHEM_BATCH_BYTES": "4096",
            "CHEM_CLAIM_FLOWS": "3",
            "CHEM_LEASE_TTL_MS": "2000",
            "CHEM_SWEEP_SLICE_SECONDS": "0.5",
            "CHEM_SWEEP_LINGER_SECONDS": "0",
            "CHEM_WAKE_WAIT_SECONDS": "0.05",
            "CHEM_CHECK_INTERVAL_SECONDS": "0.25",
            "CHEM_ORPHAN_SCAN_KEYS": "0",
            "CHEM_METRICS_PORT": "9105",
        }
    )
    assert settings == WorkerSettings(7, 4096, 3, 2000, 0.5, 0.0, 0.05, 0.25, 0, 9105)
    for name in ("batch_size", "batch_bytes", "claim_flows", "lease_ttl_ms", "orphan_scan_keys"):
        assert isinstance(getattr(settings, name), int), name


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHEM_BATCH_SIZE", "11")
    monkeypatch.setenv("CHEM_LEASE_TTL_MS", "1e3")  # a whole number, however it is written
    settings = WorkerSettings.from_env()
    assert (settings.batch_size, settings.lease_ttl_ms) == (11, 1000)


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("CHEM_BATCH_SIZE", "many"),
        ("CHEM_BATCH_SIZE", "0"),
        ("CHEM_BATCH_SIZE", "-5"),
        ("CHEM_BATCH_SIZE", "2.5"),
        ("CHEM_BATCH_SIZE", "nan"),
        ("CHEM_BATCH_SIZE", "inf"),
        ("CHEM_BATCH_BYTES", "1023"),
        ("CHEM_BATCH_BYTES", "8MB"),
        ("CHEM_CLAIM_FLOWS", "0"),
        ("CHEM_CLAIM_FLOWS", "1.5"),
        ("CHEM_LEASE_TTL_MS", "99"),
        ("CHEM_LEASE_TTL_MS", "30s"),
        ("CHEM_LEASE_TTL_MS", "1500.5"),
        ("CHEM_SWEEP_SLICE_SECONDS", "0"),
        ("CHEM_SWEEP_SLICE_SECONDS", "nan"),
        ("CHEM_SWEEP_SLICE_SECONDS", "soon"),
        ("CHEM_SWEEP_LINGER_SECONDS", "-1"),
        ("CHEM_SWEEP_LINGER_SECONDS", "NaN"),
        ("CHEM_WAKE_WAIT_SECONDS", "0"),
        ("CHEM_WAKE_WAIT_SECONDS", "inf"),
        ("CHEM_WAKE_WAIT_SECONDS", "30"),  # past the Redis clients' socket timeout
        ("CHEM_CHECK_INTERVAL_SECONDS", "0.01"),
        ("CHEM_CHECK_INTERVAL_SECONDS", "inf"),
        ("CHEM_CHECK_INTERVAL_SECONDS", "-inf"),
        ("CHEM_ORPHAN_SCAN_KEYS", "-1"),
        ("CHEM_ORPHAN_SCAN_KEYS", "some"),
        ("CHEM_METRICS_PORT", "http"),
        ("CHEM_METRICS_PORT", "0"),
        ("CHEM_METRICS_PORT", "70000"),
        ("CHEM_METRICS_PORT", "9100.5"),
    ],
)
def test_invalid_values_name_the_variable_and_the_value(variable: str, raw: str) -> None:
    with pytest.raises(WorkerConfigError) as caught:
        WorkerSettings.from_env({variable: raw})
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert message.startswith(f"{variable}: ")
    assert repr(raw) in message


def test_a_sweep_must_end_well_within_the_rq_job_timeout() -> None:
    """Slice plus linger close to rq's job timeout would let rq kill a healthy sweep."""
    assert WorkerSettings.from_env(
        {"CHEM_SWEEP_SLICE_SECONDS": "100", "CHEM_SWEEP_LINGER_SECONDS": "50"}
    ) == WorkerSettings(sweep_slice_seconds=100.0, sweep_linger_seconds=50.0)
    with pytest.raises(WorkerConfigError) as caught:
        WorkerSettings.from_env(
            {"CHEM_SWEEP_SLICE_SECONDS": "140", "CHEM_SWEEP_LINGER_SECONDS": "11"}
        )
    assert str(caught.value).startswith("CHEM_SWEEP_SLICE_SECONDS + CHEM_SWEEP_LINGER_SECONDS: ")
    assert "timeout" in str(caught.value)


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"REDIS_URL": "http://localhost:6379/0"}, "REDIS_URL"),
        ({"CHEM_KEY_PREFIX": "has space"}, "CHEM_KEY_PREFIX"),
        ({"CHEM_KEY_PREFIX": "x" * 65}, "CHEM_KEY_PREFIX"),
        ({"CHEM_KEY_PREFIX": "{tag}"}, "CHEM_KEY_PREFIX"),
        ({"CHEM_MAX_ENVELOPE_BYTES": "1MB"}, "CHEM_MAX_ENVELOPE_BYTES"),
        ({"CHEM_MAX_ENVELOPE_BYTES": "100"}, "CHEM_MAX_ENVELOPE_BYTES"),
        ({"CHEM_SHARDS": "0"}, "CHEM_SHARDS"),
        ({"CHEM_SHARDS": "1025"}, "CHEM_SHARDS"),
        ({"CHEM_SHARDS": "two"}, "CHEM_SHARDS"),
        ({"CHEM_EMIT_RETRY_SECONDS": "-1"}, "CHEM_EMIT_RETRY_SECONDS"),
        ({"CHEM_EMIT_RETRY_SECONDS": "3601"}, "CHEM_EMIT_RETRY_SECONDS"),
        ({"CHEM_EMIT_RETRY_SECONDS": "30s"}, "CHEM_EMIT_RETRY_SECONDS"),
    ],
)
def test_queue_settings_the_worker_reads_name_the_variable(
    environ: Mapping[str, str], variable: str
) -> None:
    with pytest.raises(QueueConfigError) as caught:
        QueueSettings.from_env(environ)
    assert str(caught.value).startswith(f"{variable}: ")


def test_queue_settings_defaults_and_values() -> None:
    assert QueueSettings.from_env({}) == QueueSettings(
        DEFAULT_REDIS_URL,
        DEFAULT_QUEUE,
        DEFAULT_KEY_PREFIX,
        DEFAULT_MAX_ENVELOPE_BYTES,
        DEFAULT_SHARDS,
        DEFAULT_EMIT_RETRY_SECONDS,
    )
    assert (DEFAULT_REDIS_URL, DEFAULT_QUEUE, DEFAULT_KEY_PREFIX) == (
        "redis://localhost:6379/0",
        "chem-ingest",
        "chem",
    )
    assert (DEFAULT_SHARDS, DEFAULT_EMIT_RETRY_SECONDS) == (1, 30.0)
    assert QueueSettings() == QueueSettings.from_env({})
    settings = QueueSettings.from_env(
        {
            "REDIS_URL": "rediss://cache:6380/3",
            "CHEM_QUEUE": "q2",
            "CHEM_KEY_PREFIX": "chem.test-1",
            "CHEM_MAX_ENVELOPE_BYTES": "4096",
            "CHEM_SHARDS": "8",
            "CHEM_EMIT_RETRY_SECONDS": "0",
        }
    )
    assert settings == QueueSettings("rediss://cache:6380/3", "q2", "chem.test-1", 4096, 8, 0.0)
    assert isinstance(settings.shards, int)


# --- the lab's fault injection: command-line flags of lab.faulty_worker ------------------------


def test_faulty_worker_flags_default_to_no_fault_and_pass_the_rest_to_the_worker() -> None:
    args, rest = faulty_worker.parse(["--burst", "--name", "w1"])
    assert (args.kill_after_commit, args.kill_before_commit) == (0.0, 0.0)
    assert (args.pause_at, args.pause_file, args.commit_log) == (None, None, None)
    assert rest == ["--burst", "--name", "w1"]
    assert faulty_worker.build_hooks(args) == SweepHooks()  # no fault: no hook at all


def test_faulty_worker_flags_are_read(tmp_path: Path) -> None:
    args, rest = faulty_worker.parse(
        [
            "--kill-after-commit",
            "0.25",
            "--kill-before-commit",
            "1",
            "--pause-at",
            "after_commit",
            "--pause-file",
            str(tmp_path / "paused"),
            "--fork",
        ]
    )
    assert (args.kill_after_commit, args.kill_before_commit) == (0.25, 1.0)
    assert (args.pause_at, args.pause_file) == ("after_commit", tmp_path / "paused")
    assert rest == ["--fork"]
    hooks = faulty_worker.build_hooks(args)
    assert hooks.before_commit is not None and hooks.after_commit is not None


@pytest.mark.parametrize(
    "argv",
    [
        ["--kill-after-commit", "often"],
        ["--kill-before-commit", "nan-ish"],
        ["--pause-at", "mid_ack", "--pause-file", "x"],
        ["--pause-at", "before_commit"],  # a pause needs the file that says it is reached
    ],
)
def test_faulty_worker_refuses_bad_flags_naming_them(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        faulty_worker.parse(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m lab.faulty_worker")
    assert argv[0] in err


def test_faulty_worker_commit_log_records_each_flow_committed(tmp_path: Path) -> None:
    log = tmp_path / "commits.log"
    args, _ = faulty_worker.parse(["--commit-log", str(log)])
    hooks = faulty_worker.build_hooks(args)
    assert hooks.before_commit is None and hooks.after_commit is not None
    flow = uuid.UUID("00000000-0000-4000-8000-0000000000f1")
    ts = datetime(2024, 5, 1, tzinfo=UTC)
    stored = [FlowEvent(seq, flow, StepStarted(seq, "s"), ts) for seq in (4, 5, 6)]
    hooks.after_commit([FlowOutcome(flow, 3, stored, None)])
    [line] = log.read_text().splitlines()
    assert line.split()[:3] == [str(flow), "4", "6"]


@pytest.mark.parametrize(
    ("variable", "raw"),
    [("CHEM_BATCH_SIZE", "lots"), ("CHEM_LEASE_TTL_MS", "nan"), ("CHEM_KEY_PREFIX", "a b")],
)
def test_the_worker_command_exits_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, raw: str
) -> None:
    """Settings are checked before any connection is made: no server is needed here."""
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # never reached
    monkeypatch.setenv(variable, raw)
    assert cli.main(["worker", "--burst"]) == 2
    err = capsys.readouterr().err
    # one line names the variable and the value (the lab may add a line of its own)
    [line] = [x for x in err.splitlines() if x.startswith(f"chem-persistence: {variable}: ")]
    assert repr(raw) in line
    assert "Traceback" not in err


def test_empty_queue_variables_mean_the_defaults_as_everywhere() -> None:
    empty = {name: "" for name in ("REDIS_URL", "CHEM_QUEUE", "CHEM_KEY_PREFIX", "CHEM_SHARDS")}
    assert QueueSettings.from_env(empty) == QueueSettings()
