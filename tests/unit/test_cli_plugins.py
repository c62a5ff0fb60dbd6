"""The production command finds the lab's commands by entry point, and outlives a broken lab."""

from __future__ import annotations

from typing import Any

import pytest

from chem_persistence.worker import cli


class BrokenEntryPoint:
    def load(self) -> Any:
        raise ImportError("cannot import name 'gone' from 'lab.bench'")


def test_a_broken_lab_leaves_the_production_commands_working(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "entry_points", lambda group: [BrokenEntryPoint()])
    args = cli.build_parser().parse_args(["status", "--json"])
    assert args.command == "status"
    assert "lab commands unavailable" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["demo"])  # the lab's command is simply not there


def test_the_installed_lab_adds_its_commands() -> None:
    parser = cli.build_parser()
    for command in ("demo", "bench", "chaos"):
        assert parser.parse_args([command]).command == command
