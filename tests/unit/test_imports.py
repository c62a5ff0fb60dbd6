"""Imports point one way: ``domain ← eventlog ← worker``, ``domain ← producer ← worker``,
and the lab (demo, bench, chaos) on top of everything, imported by no production module.
Every import of the project's packages goes through their one installed name,
``chem_persistence.<package>``, never the repository's top-level folder of the same name
(which an installed wheel does not have).

Checked statically with ``ast`` (nothing is imported): ``domain`` uses only the standard
library (no I/O library), ``blake3``, ``msgspec`` and itself; nothing but the lab imports
``worker``; ``producer`` and ``eventlog`` never import each other; no production package
imports ``lab``;
and no module imports itself through a chain of others (a circle), function-local imports
included, so a circle cannot hide behind an import moved into a function. Imports under
``if TYPE_CHECKING:`` and literal ``importlib.import_module("...")`` calls count too.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ("domain", "eventlog", "producer", "worker", "migrations")
CHECKED = (*PRODUCTION, "lab")

DOMAIN_ALLOWED_THIRD_PARTY = frozenset({"blake3", "msgspec", "domain"})
# Never in the domain, even those that are in the standard library (network, processes, DBs).
DOMAIN_FORBIDDEN = frozenset(
    {
        "redis",
        "rq",
        "psycopg",
        "psycopg_pool",
        "alembic",
        "tenacity",
        "sqlalchemy",
        "prometheus_client",
        "socket",
        "ssl",
        "http",
        "urllib",
        "subprocess",
        "sqlite3",
        "asyncio",
        "selectors",
        "eventlog",
        "producer",
        "worker",
        "migrations",
        "lab",
    }
)
STDLIB = frozenset(sys.stdlib_module_names)


NAMESPACE = "chem_persistence"


def layer_of(module: str) -> str:
    """``chem_persistence.worker.cli`` → ``worker``; ``lab.demo`` → ``lab``; ``redis`` → itself."""
    parts = module.split(".")
    return parts[1] if parts[0] == NAMESPACE and len(parts) > 1 else parts[0]


@dataclass(frozen=True)
class Import:
    module: str  # the full dotted name imported
    line: int

    @property
    def top(self) -> str:
        return layer_of(self.module)


def module_name(path: Path, root: Path = ROOT) -> str:
    """The name a module is imported by: production folders sit under the namespace."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    if parts[0] in PRODUCTION:
        parts.insert(0, NAMESPACE)
    return ".".join(parts)


def imports_of(source: str, module: str, *, is_package: bool = False) -> list[Import]:
    """Every module ``source`` imports, relative imports resolved against ``module``."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                prefix = ".".join(base)
                target = ".".join(p for p in (prefix, node.module or "") if p)
                if node.module is None:  # from . import a, b: each name may be a module
                    found += [
                        Import(f"{target}.{alias.name}" if target else alias.name, node.lineno)
                        for alias in node.names
                    ]
                    continue
                found.append(Import(target, node.lineno))
            else:
                found.append(Import(node.module or "", node.lineno))
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func):
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.append(Import(arg.value, node.lineno))
    return found


def _is_dynamic_import(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in {"__import__", "import_module"}
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def violations(module: str, source: str, *, is_package: bool = False) -> list[str]:
    """The layering rules broken by ``module`` (whose text is ``source``)."""
    layer = layer_of(module)
    found: list[str] = []
    for imp in imports_of(source, module, is_package=is_package):
        where = f"{module}:{imp.line} imports {imp.module}"
        if imp.module.split(".")[0] in PRODUCTION:
            found.append(f"{where}: import it as {NAMESPACE}.{imp.module}")
        if layer == "domain":
            if imp.top in DOMAIN_FORBIDDEN:
                found.append(f"{where}: the domain does no I/O and depends on no other layer")
            elif imp.top not in STDLIB and imp.top not in DOMAIN_ALLOWED_THIRD_PARTY:
                found.append(f"{where}: the domain uses only the stdlib, blake3 and msgspec")
        if imp.top == "worker" and layer not in ("worker", "lab"):
            found.append(f"{where}: only the lab imports worker (the composition root)")
        if imp.top == "lab" and layer in PRODUCTION:
            found.append(f"{where}: production code never imports the lab")
        if layer == "producer" and imp.top == "eventlog":
            found.append(f"{where}: producer never imports eventlog")
        if layer == "eventlog" and imp.top == "producer":
            found.append(f"{where}: eventlog never imports producer")
    return found


def python_files(package: str, root: Path = ROOT) -> Iterator[Path]:
    directory = root / package
    if not directory.is_dir():
        return
    for path in sorted(directory.rglob("*.py")):
        if "__pycache__" not in path.parts:
            yield path


def all_violations(root: Path = ROOT) -> list[str]:
    found: list[str] = []
    for package in CHECKED:
        for path in python_files(package, root):
            found += violations(
                module_name(path, root),
                path.read_text(encoding="utf-8"),
                is_package=path.name == "__init__.py",
            )
    return found


def module_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module → the project modules it imports. ``from pkg import name`` points at
    ``pkg.name`` when that is a module of the tree, else at ``pkg`` itself."""
    files = {
        module_name(path, root): path for package in CHECKED for path in python_files(package, root)
    }
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        targets: set[str] = set()
        source = path.read_text(encoding="utf-8")
        for imp in imports_of(source, module, is_package=path.name == "__init__.py"):
            for name in _with_imported_names(source, imp):
                target = _longest_known(name, files)
                if target is not None and target != module:
                    targets.add(target)
        graph[module] = targets
    return graph


def _with_imported_names(source: str, imp: Import) -> list[str]:
    """``imp.module`` and, for ``from X import a, b``, ``X.a`` and ``X.b`` (maybe modules)."""
    names = [imp.module]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.lineno == imp.line and node.module:
            names += [f"{imp.module}.{alias.name}" for alias in node.names]
    return names


def _longest_known(name: str, modules: dict[str, Path]) -> str | None:
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


# --- the real tree ----------------------------------------------------------------------------


def test_the_domain_is_there_to_check() -> None:
    names = {p.name for p in python_files("domain")}
    assert {"events.py", "codec.py", "canonical.py", "store.py", "engine.py"} <= names


def test_every_module_parses() -> None:
    for package in CHECKED:
        for path in python_files(package):
            ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_imports_point_one_way() -> None:
    assert all_violations() == []


def test_the_tests_import_the_packages_by_their_installed_name() -> None:
    """A test importing ``domain`` would load a second copy of every module it touches."""
    found = [
        f"{path.relative_to(ROOT)}:{imp.line} imports {imp.module}"
        for path in sorted((ROOT / "tests").rglob("*.py"))
        for imp in imports_of(path.read_text(encoding="utf-8"), "tests.x")
        if imp.module.split(".")[0] in PRODUCTION
    ]
    assert found == []


def test_no_import_circles() -> None:
    graph = module_graph()
    assert (
        "chem_persistence.worker.cli" in graph and "lab.commands" in graph
    )  # the checker sees both rooms
    assert import_cycles(graph) == []


def test_the_cycle_check_finds_a_circle_through_a_function_local_import(tmp_path: Path) -> None:
    (tmp_path / "worker").mkdir()
    (tmp_path / "worker" / "__init__.py").write_text("")
    (tmp_path / "worker" / "a.py").write_text("from chem_persistence.worker.b import f\n")
    (tmp_path / "worker" / "b.py").write_text(
        "def f():\n    from chem_persistence.worker import a\n"
    )
    (tmp_path / "worker" / "c.py").write_text(
        "from chem_persistence.worker import a, b\n"
    )  # no circle
    assert import_cycles(module_graph(tmp_path)) == [
        ["chem_persistence.worker.a", "chem_persistence.worker.b"]
    ]


def test_the_domain_imports_blake3_msgspec_and_the_stdlib_only() -> None:
    tops: set[str] = set()
    for path in python_files("domain"):
        source = path.read_text(encoding="utf-8")
        tops |= {i.top for i in imports_of(source, module_name(path))}
    assert "blake3" in tops  # the checker does see the domain's imports
    assert tops - STDLIB <= DOMAIN_ALLOWED_THIRD_PARTY
    assert not tops & DOMAIN_FORBIDDEN


# --- the checker itself -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "source", "culprit"),
    [
        ("chem_persistence.domain.fake", "import redis\n", "redis"),
        ("chem_persistence.domain.fake", "import redis.asyncio as r\n", "redis.asyncio"),
        (
            "chem_persistence.domain.fake",
            "from psycopg_pool import ConnectionPool\n",
            "psycopg_pool",
        ),
        ("chem_persistence.domain.fake", "import os, socket\n", "socket"),
        ("chem_persistence.domain.fake", "from rq import Queue\n", "rq"),
        ("chem_persistence.domain.fake", "import numpy\n", "numpy"),
        (
            "chem_persistence.domain.fake",
            "from chem_persistence.eventlog.store import PgEventStore\n",
            "chem_persistence.eventlog.store",
        ),
        (
            "chem_persistence.domain.fake",
            "from chem_persistence.producer import Producer\n",
            "chem_persistence.producer",
        ),
        (
            "chem_persistence.domain.fake",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import sqlalchemy\n",
            "sqlalchemy",
        ),
        ("chem_persistence.domain.fake", "def f():\n    import tenacity\n", "tenacity"),
        (
            "chem_persistence.domain.fake",
            "import importlib\nimportlib.import_module('redis')\n",
            "redis",
        ),
        ("chem_persistence.domain.fake", "__import__('prometheus_client')\n", "prometheus_client"),
        (
            "chem_persistence.eventlog.store",
            "from chem_persistence.worker.cli import main\n",
            "chem_persistence.worker.cli",
        ),
        (
            "chem_persistence.eventlog.store",
            "from chem_persistence.producer.keys import queue_key\n",
            "chem_persistence.producer.keys",
        ),
        (
            "chem_persistence.eventlog.store",
            "from ..producer import keys\n",
            "chem_persistence.producer",
        ),
        (
            "chem_persistence.producer.emit",
            "import chem_persistence.eventlog\n",
            "chem_persistence.eventlog",
        ),
        (
            "chem_persistence.producer.emit",
            "from chem_persistence.eventlog import PgEventStore\n",
            "chem_persistence.eventlog",
        ),
        (
            "chem_persistence.producer.emit",
            "import chem_persistence.worker.drain\n",
            "chem_persistence.worker.drain",
        ),
        (
            "chem_persistence.migrations.env",
            "from chem_persistence.worker import settings\n",
            "chem_persistence.worker",
        ),
        (
            "chem_persistence.migrations.versions.0001_event_log",
            "import chem_persistence.worker\n",
            "chem_persistence.worker",
        ),
        ("chem_persistence.worker.cli", "from lab.demo import run_demo\n", "lab.demo"),
        ("chem_persistence.worker.drain", "def f():\n    import lab.faults\n", "lab.faults"),
        (
            "chem_persistence.eventlog.pool",
            "import importlib\nimportlib.import_module('lab')\n",
            "lab",
        ),
        ("chem_persistence.domain.fake", "import lab\n", "lab"),
        ("chem_persistence.worker.cli", "from eventlog import PgEventStore\n", "eventlog"),
        ("chem_persistence.domain.codec", "import domain.events\n", "domain.events"),
        ("lab.demo", "from worker.cli import main\n", "worker.cli"),
    ],
)
def test_the_checker_reports_a_violation(module: str, source: str, culprit: str) -> None:
    found = violations(module, source)
    assert found, f"{module} importing {culprit} was not reported"
    assert any(f"imports {culprit}" in v for v in found)


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("chem_persistence.domain.fake", "import os.path\nimport json\nfrom uuid import UUID\n"),
        (
            "chem_persistence.domain.fake",
            "from blake3 import blake3\nfrom chem_persistence.domain.events import FlowEvent\n",
        ),
        ("chem_persistence.domain.fake", "from . import codec\nfrom .events import FlowEvent\n"),
        ("chem_persistence.domain.fake", "from __future__ import annotations\n"),
        (
            "chem_persistence.eventlog.store",
            "import psycopg\nfrom chem_persistence.domain import FlowEvent\n",
        ),
        (
            "chem_persistence.producer.emit",
            "import redis\nfrom chem_persistence.domain import encode_kind\n",
        ),
        (
            "chem_persistence.worker.cli",
            "from chem_persistence.eventlog import PgEventStore\n"
            "from chem_persistence.producer import Producer\n",
        ),
        (
            "chem_persistence.worker.cli",
            "from chem_persistence.worker.drain import drain_flow\nfrom . import metrics\n",
        ),
        (
            "chem_persistence.migrations.env",
            "from alembic import context\nfrom chem_persistence.eventlog import config\n",
        ),
        (
            "lab.demo",
            "from chem_persistence.worker.cli import main\n"
            "from chem_persistence.producer import Producer\n",
        ),
        (
            "lab.bench.run",
            "from chem_persistence.eventlog.store import PgEventStore\nimport lab.ports\n",
        ),
    ],
)
def test_the_checker_accepts_allowed_imports(module: str, source: str) -> None:
    assert violations(module, source) == []


def test_relative_imports_are_resolved() -> None:
    assert [
        i.module for i in imports_of("from .events import X\n", "chem_persistence.domain.codec")
    ] == ["chem_persistence.domain.events"]
    assert [
        i.module
        for i in imports_of("from . import codec\n", "chem_persistence.domain", is_package=True)
    ] == ["chem_persistence.domain.codec"]
    assert [
        i.module
        for i in imports_of("from ..worker import x\n", "chem_persistence.producer.lua.load")
    ] == ["chem_persistence.producer.worker"]
    assert [
        i.module for i in imports_of("from ..worker import x\n", "chem_persistence.producer.emit")
    ] == ["chem_persistence.worker"]


def test_module_names_of_files() -> None:
    assert module_name(ROOT / "domain" / "__init__.py") == "chem_persistence.domain"
    assert module_name(ROOT / "domain" / "codec.py") == "chem_persistence.domain.codec"
    assert module_name(ROOT / "migrations" / "versions" / "x.py") == (
        "chem_persistence.migrations.versions.x"
    )
    assert module_name(ROOT / "lab" / "demo.py") == "lab.demo"


def test_the_tree_check_sees_a_synthetic_violation(tmp_path: Path) -> None:
    (tmp_path / "domain").mkdir()
    (tmp_path / "domain" / "__init__.py").write_text("from chem_persistence.domain.bad import x\n")
    (tmp_path / "domain" / "bad.py").write_text("import redis\nx = 1\n")
    (tmp_path / "producer").mkdir()
    (tmp_path / "producer" / "__init__.py").write_text("")  # an empty package is fine
    found = all_violations(tmp_path)
    assert found == [
        "chem_persistence.domain.bad:1 imports redis: the domain does no I/O and depends on no"
        " other layer"
    ]
