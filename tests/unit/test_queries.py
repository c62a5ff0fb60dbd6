"""queries.sql and its loader: every statement named once, non-empty, and every name in use
by the code defined."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from psycopg import sql

from chem_persistence.eventlog.queries import names, parse, query

PROJECT = Path(__file__).resolve().parents[2]
QUERIES_FILE = PROJECT / "eventlog" / "queries.sql"
PACKAGES = ("domain", "eventlog", "producer", "worker")
# query("name") and the store's counting helper, self._count("name", ...)
_USES = re.compile(r"""(?:\bquery|\b_count)\(\s*["'](\w+)["']""")


def used_names() -> dict[str, list[str]]:
    uses: dict[str, list[str]] = {}
    for package in PACKAGES:
        for path in sorted((PROJECT / package).rglob("*.py")):
            for name in _USES.findall(path.read_text(encoding="utf-8")):
                uses.setdefault(name, []).append(str(path.relative_to(PROJECT)))
    return uses


def test_every_header_in_the_file_is_a_loaded_query() -> None:
    text = QUERIES_FILE.read_text(encoding="utf-8")
    headers = re.findall(r"^-- name: (\w+)\s*$", text, re.MULTILINE)
    assert headers, "no -- name: headers found"
    assert len(headers) == len(set(headers))
    assert names() == sorted(headers)


@pytest.mark.parametrize("name", names())
def test_every_query_has_a_statement_without_comment_lines(name: str) -> None:
    statement = parse(QUERIES_FILE.read_text(encoding="utf-8"))[name]
    assert statement.strip() == statement and statement
    assert not any(line.lstrip().startswith("--") for line in statement.splitlines())
    assert re.match(r"(SELECT|INSERT|UPDATE|DELETE|WITH)\b", statement), statement
    assert isinstance(query(name), sql.SQL)
    assert query(name).as_string() == statement


def test_every_query_used_by_the_code_exists() -> None:
    uses = used_names()
    # the scan must see the store's statements, or it proves nothing
    assert {"lock_flow", "next_position", "insert_events", "list_flow"} <= uses.keys()
    assert "count_flows_events" in uses
    missing = {name: where for name, where in uses.items() if name not in names()}
    assert not missing, f"queries used but not defined in queries.sql: {missing}"


def test_an_unknown_name_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        query("no_such_query")


def test_parse_reads_names_and_drops_comment_lines() -> None:
    text = """-- a file comment
-- name: first
-- what it does
SELECT 1

-- name: second
SELECT a,
       b -- trailing comments stay
FROM t
"""
    assert parse(text) == {
        "first": "SELECT 1",
        "second": "SELECT a,\n       b -- trailing comments stay\nFROM t",
    }


def test_parse_rejects_a_name_defined_twice() -> None:
    with pytest.raises(ValueError, match="'twice' is defined twice"):
        parse("-- name: twice\nSELECT 1\n-- name: other\nSELECT 2\n-- name: twice\nSELECT 3\n")


@pytest.mark.parametrize(
    "text",
    [
        "-- name: empty\n",
        "-- name: empty\n\n   \n-- name: next\nSELECT 1\n",
        "-- name: empty\n-- only a comment\n-- name: next\nSELECT 1\n",
    ],
)
def test_parse_rejects_an_empty_statement(text: str) -> None:
    with pytest.raises(ValueError, match="'empty' is empty"):
        parse(text)


def test_parse_of_a_file_without_headers_is_empty() -> None:
    assert parse("SELECT 1\n") == {}
