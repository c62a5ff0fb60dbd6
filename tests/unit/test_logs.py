"""CHEM_LOG_FORMAT: text lines for people, one JSON object per line for a log shipper."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from chem_persistence.domain.settings import InvalidSetting
from chem_persistence.worker import cli, logs


def record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            exc_info = sys.exc_info()
    name = "chem_persistence.worker.sweep"
    return logging.LogRecord(name, logging.INFO, __file__, 1, message, args, exc_info)


def test_a_json_line_lifts_the_action_and_keeps_the_message() -> None:
    line = logs.JsonLines().format(record("action=sweep_slice flows=%d events=%d", 3, 40))
    parsed = json.loads(line)
    assert parsed["action"] == "sweep_slice"
    assert parsed["message"] == "flows=3 events=40"
    assert parsed["level"] == "INFO"
    assert parsed["logger"] == "chem_persistence.worker.sweep"
    assert parsed["time"].endswith("+00:00")
    assert "\n" not in line


def test_a_json_line_without_action_or_with_an_exception() -> None:
    parsed = json.loads(logs.JsonLines().format(record("plain words", exc=True)))
    assert "action" not in parsed
    assert parsed["message"] == "plain words"
    assert "RuntimeError: boom" in parsed["error"]


@pytest.mark.parametrize(
    ("configured", "chosen"), [(None, "text"), ("", "text"), (" JSON ", "json"), ("text", "text")]
)
def test_the_format_setting(configured: str | None, chosen: str) -> None:
    assert logs.log_format(configured) == chosen


def test_a_bad_format_names_the_variable_and_the_value() -> None:
    with pytest.raises(InvalidSetting, match=r"CHEM_LOG_FORMAT.*'xml'"):
        logs.log_format("xml")


def test_the_command_refuses_a_bad_format_before_doing_anything(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHEM_LOG_FORMAT", "xml")
    assert cli.main(["migrate", "--sql"]) == 2
    err = capsys.readouterr().err
    assert "CHEM_LOG_FORMAT" in err and "'xml'" in err
