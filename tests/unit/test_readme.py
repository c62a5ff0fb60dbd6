"""The README stays true: every command it shows is one the command line accepts, and its
configuration table names exactly the variables the code reads."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from chem_persistence.worker.cli import build_parser
from tests import readme

ROOT = Path(__file__).resolve().parents[2]
#: Where a variable may be read: production, the lab, the test set-up and its scripts.
READERS = ("domain", "eventlog", "producer", "worker", "lab", "tests", "scripts")
PRODUCTION = ("domain", "eventlog", "producer", "worker", "lab")
VARIABLE = re.compile(r"\b((?:CHEM|DATABASE|REDIS|TEST)_[A-Z0-9_]+)\b")
#: Read by the tools, never by our code: documented because they change what the tests do.
READ_BY_TOOLS = {"CI"}


def variables_in(folders: tuple[str, ...], *, quoted: bool) -> set[str]:
    pattern = re.compile(r"[\"']" + VARIABLE.pattern + r"[\"']") if quoted else VARIABLE
    found: set[str] = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*"):
            if (
                path.is_file()
                and path.suffix in ("", ".py", ".sh")
                and "__pycache__" not in str(path)
            ):
                found |= set(pattern.findall(path.read_text(encoding="utf-8", errors="replace")))
    return found


def test_the_readme_shows_the_commands_an_operator_needs() -> None:
    shown = {" ".join(c.split()[:2]) if c.startswith("dlq") else c.split()[0]
             for c in readme.documented_commands()}  # fmt: skip
    assert {"migrate", "worker", "status", "replay", "dlq list", "dlq show", "dlq retry",
            "dlq discard"} <= shown  # fmt: skip


@pytest.mark.parametrize("command", readme.documented_commands())
def test_every_documented_command_is_accepted(command: str) -> None:
    args = readme.argv(command, FLOW=str(uuid.uuid4()))
    try:
        parsed = build_parser().parse_args(args)
    except SystemExit as exc:
        pytest.fail(f"`chem-persistence {command}` is refused by the parser ({exc.code})")
    assert parsed.command == args[0]


def test_every_variable_the_code_reads_is_documented() -> None:
    read = variables_in(PRODUCTION, quoted=True)
    assert "CHEM_BATCH_SIZE" in read  # the scan does see the settings modules
    assert read - readme.documented_settings() == set()


def test_every_documented_variable_is_read_somewhere() -> None:
    documented = readme.documented_settings()
    assert "REDIS_URL" in documented
    assert documented - variables_in(READERS, quoted=False) - READ_BY_TOOLS == set()


def test_the_dlq_commands_the_recovery_tests_run_come_from_the_readme() -> None:
    flow = str(uuid.uuid4())
    assert readme.dlq_command("retry", flow) == ["dlq", "retry", flow]
    assert readme.dlq_command("discard", flow) == ["dlq", "discard", flow, "--yes"]
    with pytest.raises(AssertionError, match="documents no"):
        readme.dlq_command("undo", flow)
