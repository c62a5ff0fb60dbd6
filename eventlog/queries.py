"""Loads queries.sql once: every statement the application runs, by name."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from psycopg import sql

_QUERIES_FILE = Path(__file__).with_name("queries.sql")
_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    """``-- name: key`` headers → statement text, comment lines dropped."""
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [line for line in body.splitlines() if not line.lstrip().startswith("--")]
        statement = "\n".join(lines).strip()
        if not statement:
            raise ValueError(f"queries.sql: query {name!r} is empty")
        if name in queries:
            raise ValueError(f"queries.sql: query {name!r} is defined twice")
        queries[name] = statement
    return queries


@cache
def _all() -> dict[str, str]:
    return parse(_QUERIES_FILE.read_text(encoding="utf-8"))


def query(name: str) -> sql.SQL:
    """The named statement, ready for ``cursor.execute``."""
    return sql.SQL(_all()[name])


def names() -> list[str]:
    return sorted(_all())
