"""The commands and settings the README documents, read from the README itself, so that the
tests run what an operator reads (and fail when the two drift apart)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"

_FENCED = re.compile(r"^```[^\n]*\n(?P<body>.*?)^```", re.M | re.S)
_BLOCK_LINE = re.compile(r"^chem-persistence (?P<command>[^#\n]+?)\s*(?:#.*)?$", re.M)
_INLINE = re.compile(r"`chem-persistence (?P<command>[^`@]+?)`", re.S)
_TABLE_ROW = re.compile(r"^\| `(?P<name>[A-Z][A-Z0-9_]+)` \|", re.M)


def text() -> str:
    return README.read_text(encoding="utf-8")


def documented_commands() -> list[str]:
    """Every ``chem-persistence ...`` command line of the README, as written there."""
    blocks = [m["body"] for m in _FENCED.finditer(text())]
    found = [m["command"] for block in blocks for m in _BLOCK_LINE.finditer(block)]
    found += [" ".join(m["command"].split()) for m in _INLINE.finditer(text())]
    return found


def argv(command: str, **values: str) -> list[str]:
    """``command`` as arguments: optional parts (``[--json]``) included, placeholders (``FLOW``,
    ``S``, ``N``...) replaced by ``values`` or by ``1``."""
    words = shlex.split(command.replace("[", " ").replace("]", " "))
    return [values.get(w, "1") if w.isupper() and w.isalpha() else w for w in words]


def dlq_command(verb: str, flow: str) -> list[str]:
    """The README's ``chem-persistence dlq VERB ...`` line, for ``flow``, without optional parts."""
    for command in documented_commands():
        if command.split()[:2] == ["dlq", verb]:
            required = re.sub(r"\[[^\]]*\]", "", command)
            return argv(required, FLOW=flow)
    raise AssertionError(f"the README documents no `chem-persistence dlq {verb}`")


def documented_settings() -> set[str]:
    """The environment variables of the README's configuration tables."""
    return {m["name"] for m in _TABLE_ROW.finditer(text())}
