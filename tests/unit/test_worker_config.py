"""The worker's settings from the environment: documented defaults, and errors that name the
variable and the value (never a traceback from deep inside a drain)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from producer.config import (
    DEFAULT_KEY_PREFIX,
    DEFAULT_MAX_ENVELOPE_BYTES,
    DEFAULT_QUEUE,
    DEFAULT_REDIS_URL,
    QueueConfigError,
    QueueSettings,
)
from worker import cli, faults
from worker.config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_DRAIN_SLICE_SECONDS,
    DEFAULT_LOCK_TTL_MS,
    DEFAULT_RECONCILE_GRACE_SECONDS,
    DEFAULT_RECONCILE_INTERVAL_SECONDS,
    WorkerConfigError,
    WorkerSettings,
)

WORKER_VARIABLES = (
    "CHEM_BATCH_SIZE",
    "CHEM_LOCK_TTL_MS",
    "CHEM_DRAIN_SLICE_SECONDS",
    "CHEM_RECONCILE_INTERVAL_SECONDS",
    "CHEM_RECONCILE_GRACE_SECONDS",
    "CHEM_METRICS_PORT",
)


def test_defaults() -> None:
    assert WorkerSettings.from_env({}) == WorkerSettings(
        batch_size=500,
        lock_ttl_ms=30_000,
        drain_slice_seconds=30.0,
        reconcile_interval_seconds=15.0,
        reconcile_grace_seconds=60.0,
        metrics_port=None,
    )
    assert (DEFAULT_BATCH_SIZE, DEFAULT_LOCK_TTL_MS) == (500, 30_000)
    assert (DEFAULT_DRAIN_SLICE_SECONDS, DEFAULT_RECONCILE_INTERVAL_SECONDS) == (30.0, 15.0)
    assert DEFAULT_RECONCILE_GRACE_SECONDS == 60.0
    assert WorkerSettings() == WorkerSettings.from_env({})


def test_empty_variables_mean_the_default() -> None:
    assert WorkerSettings.from_env(dict.fromkeys(WORKER_VARIABLES, "")) == WorkerSettings()


def test_every_variable_is_read() -> None:
    settings = WorkerSettings.from_env(
        {
            "CHEM_BATCH_SIZE": "7",
            "CHEM_LOCK_TTL_MS": "2000",
            "CHEM_DRAIN_SLICE_SECONDS": "0.5",
            "CHEM_RECONCILE_INTERVAL_SECONDS": "0.25",
            "CHEM_RECONCILE_GRACE_SECONDS": "0",
            "CHEM_METRICS_PORT": "9105",
        }
    )
    assert settings == WorkerSettings(7, 2000, 0.5, 0.25, 0.0, 9105)
    assert isinstance(settings.batch_size, int) and isinstance(settings.lock_ttl_ms, int)


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHEM_BATCH_SIZE", "11")
    monkeypatch.setenv("CHEM_LOCK_TTL_MS", "1e3")  # a whole number, however it is written
    settings = WorkerSettings.from_env()
    assert (settings.batch_size, settings.lock_ttl_ms) == (11, 1000)


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("CHEM_BATCH_SIZE", "many"),
        ("CHEM_BATCH_SIZE", "0"),
        ("CHEM_BATCH_SIZE", "-5"),
        ("CHEM_BATCH_SIZE", "2.5"),
        ("CHEM_BATCH_SIZE", "nan"),
        ("CHEM_BATCH_SIZE", "inf"),
        ("CHEM_LOCK_TTL_MS", "99"),
        ("CHEM_LOCK_TTL_MS", "30s"),
        ("CHEM_LOCK_TTL_MS", "1500.5"),
        ("CHEM_DRAIN_SLICE_SECONDS", "0"),
        ("CHEM_DRAIN_SLICE_SECONDS", "nan"),
        ("CHEM_DRAIN_SLICE_SECONDS", "soon"),
        ("CHEM_RECONCILE_INTERVAL_SECONDS", "0.01"),
        ("CHEM_RECONCILE_INTERVAL_SECONDS", "inf"),
        ("CHEM_RECONCILE_INTERVAL_SECONDS", "-inf"),
        ("CHEM_RECONCILE_GRACE_SECONDS", "-1"),
        ("CHEM_RECONCILE_GRACE_SECONDS", "NaN"),
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


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"REDIS_URL": "http://localhost:6379/0"}, "REDIS_URL"),
        ({"CHEM_KEY_PREFIX": "has space"}, "CHEM_KEY_PREFIX"),
        ({"CHEM_KEY_PREFIX": "x" * 65}, "CHEM_KEY_PREFIX"),
        ({"CHEM_KEY_PREFIX": "{tag}"}, "CHEM_KEY_PREFIX"),
        ({"CHEM_QUEUE": ""}, "CHEM_QUEUE"),
        ({"CHEM_MAX_ENVELOPE_BYTES": "1MB"}, "CHEM_MAX_ENVELOPE_BYTES"),
        ({"CHEM_MAX_ENVELOPE_BYTES": "100"}, "CHEM_MAX_ENVELOPE_BYTES"),
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
        DEFAULT_REDIS_URL, DEFAULT_QUEUE, DEFAULT_KEY_PREFIX, DEFAULT_MAX_ENVELOPE_BYTES
    )
    assert (DEFAULT_REDIS_URL, DEFAULT_QUEUE, DEFAULT_KEY_PREFIX) == (
        "redis://localhost:6379/0",
        "chem-ingest",
        "chem",
    )
    settings = QueueSettings.from_env(
        {
            "REDIS_URL": "rediss://cache:6380/3",
            "CHEM_QUEUE": "q2",
            "CHEM_KEY_PREFIX": "chem.test-1",
            "CHEM_MAX_ENVELOPE_BYTES": "4096",
        }
    )
    assert settings == QueueSettings("rediss://cache:6380/3", "q2", "chem.test-1", 4096)


@pytest.mark.parametrize("raw", ["often", "1.5", "-0.1", "nan"])
def test_fault_injection_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv(faults.ENV_KILL_AFTER_COMMIT, raw)
    with pytest.raises(ValueError, match=rf"^{faults.ENV_KILL_AFTER_COMMIT}: "):
        faults.kill_after_commit_probability()


def test_fault_injection_is_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(faults.ENV_KILL_AFTER_COMMIT, raising=False)
    assert faults.kill_after_commit_probability() == 0.0
    monkeypatch.setenv(faults.ENV_KILL_AFTER_COMMIT, "0.25")
    assert faults.kill_after_commit_probability() == 0.25


@pytest.mark.parametrize(
    ("variable", "raw"),
    [("CHEM_BATCH_SIZE", "lots"), ("CHEM_LOCK_TTL_MS", "nan"), ("CHEM_KEY_PREFIX", "a b")],
)
def test_the_worker_command_exits_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, raw: str
) -> None:
    """Settings are checked before any connection is made: no server is needed here."""
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # never reached
    monkeypatch.setenv(variable, raw)
    assert cli.main(["worker", "--burst"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"chem-persistence: {variable}: ")
    assert repr(raw) in err
