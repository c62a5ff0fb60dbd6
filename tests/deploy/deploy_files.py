"""Reading the deployment files (compose.yaml, Dockerfile, Procfile) and judging them.

No Docker engine and no ``docker compose`` here: the files are parsed and checked against
the code they start. Every number a check compares with is computed from the code's own
settings and constants (``worst_case_stop_seconds``), never copied.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import inspect
import io
import itertools
import json
import re
import shlex
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from psycopg_pool import ConnectionPool
from ruamel.yaml import YAML

from chem_persistence.eventlog.config import ENV_DATABASE_PASSWORD_FILE, DatabaseSettings
from chem_persistence.eventlog.retry import RetryPolicy
from chem_persistence.producer.config import REDIS_SOCKET_TIMEOUT_SECONDS
from chem_persistence.worker.cli import build_parser
from chem_persistence.worker.config import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PROCFILE = ROOT / "Procfile"
PYPROJECT = ROOT / "pyproject.toml"
SECRETS_MOUNT = PurePosixPath("/run/secrets")
#: The dashboard's interface, built in another branch: checked as given until it is merged.
DASHBOARD_ARGS = ("dashboard", "--bind", "0.0.0.0")
#: Words that make a variable a secret.
SECRET_WORDS = re.compile(r"PASSW(OR)?D|SECRET|TOKEN|CREDENTIAL|PRIVATE_KEY", re.IGNORECASE)
#: ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:=default}``: interpolation with a default.
DEFAULTED = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-=])")
#: A password on a command line: an option, a parameter, or a URL's user info.
PASSWORD_ARG = re.compile(
    r"--?[\w-]*passw(or)?d(?!-?file)[\w-]*(=|\s|$)|\bpassword=|://[^/@\s:]*:[^/@\s]+@",
    re.IGNORECASE,
)


# --- compose ----------------------------------------------------------------------------------


def load_compose(text: str | None = None) -> dict[str, Any]:
    loaded = YAML(typ="safe").load(COMPOSE.read_text() if text is None else text)
    assert isinstance(loaded, dict)
    return loaded


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment as a dict (compose allows a mapping or a KEY=VALUE list)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def argv(value: str | Sequence[str] | None) -> list[str]:
    """A compose ``command``/``entrypoint`` as argv (a string is split like a shell does)."""
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def duration_seconds(text: str | int | float) -> float:
    """A compose duration (``1m30s``, ``135s``, ``500ms``, ``1h``) in seconds."""
    if isinstance(text, int | float):
        return float(text)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise ValueError(f"not a compose duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def one_shot(doc: Mapping[str, Any], name: str) -> bool:
    """A service that is meant to exit: not restarted, and awaited by another service's
    ``service_completed_successfully``."""
    if str(doc["services"][name].get("restart", "no")) != "no":
        return False
    return any(
        isinstance(s.get("depends_on"), dict)
        and (s["depends_on"].get(name) or {}).get("condition") == "service_completed_successfully"
        for s in doc["services"].values()
    )


def pool_checkout_timeout_seconds() -> float:
    """psycopg_pool's default wait for a connection (``open_pool`` passes none of its own)."""
    default = inspect.signature(ConnectionPool.__init__).parameters["timeout"].default
    return float(default)


@dataclass(frozen=True)
class StopBound:
    """The longest a worker takes to stop after SIGTERM, term by term (seconds)."""

    slice: float  # a sweep that does not see the stop (a --fork work horse) runs its slice out
    claim: float  # one Redis reply
    append_retries: float  # RetryPolicy's budget for transient errors
    append_checkout: float  # the attempt under way: waiting for a pool connection
    append_statement: float  # and its statement
    ack: float  # one Redis reply
    sweep_end: float  # the handover: one Redis reply
    rq_teardown: float  # rq's bookkeeping of the job and of the worker: one Redis reply

    @property
    def total(self) -> float:
        return sum(vars(self).values())


def worst_case_stop(env: Mapping[str, str]) -> StopBound:
    """The stop bound for a worker with this environment (compose's), from the code's settings.

    Each Redis call is taken to answer or fail once within the client's socket timeout, and a
    statement within ``statement_timeout``; redis-py's own retries after a connection error
    and a black-holed host can take longer, but by then the sweep's leases have lapsed and a
    SIGKILL costs nothing more.
    """
    worker = WorkerSettings.from_env(env)
    db_env = {k: v for k, v in env.items() if k != ENV_DATABASE_PASSWORD_FILE}
    db = DatabaseSettings.from_env(db_env)
    statement = db.statement_timeout_ms / 1000 if db.statement_timeout_ms else float("inf")
    reply = REDIS_SOCKET_TIMEOUT_SECONDS
    return StopBound(
        slice=worker.sweep_slice_seconds,
        claim=reply,
        append_retries=RetryPolicy().max_seconds,
        append_checkout=pool_checkout_timeout_seconds(),
        append_statement=statement,
        ack=reply,
        sweep_end=reply,
        rq_teardown=reply,
    )


def _database_user(url: str) -> str | None:
    return urlsplit(url).username


def _command_lines(doc: Mapping[str, Any]) -> dict[str, list[str]]:
    """Every argv compose passes to a process: command, entrypoint, healthcheck."""
    lines: dict[str, list[str]] = {}
    for name, service in doc["services"].items():
        for key in ("command", "entrypoint"):
            if service.get(key) is not None:
                lines[f"{name}.{key}"] = argv(service[key])
        test = (service.get("healthcheck") or {}).get("test")
        if test is not None:
            lines[f"{name}.healthcheck"] = argv(test)
    return lines


def secret_problems(text: str, where: str) -> list[str]:
    """``${SECRET:-default}`` interpolations (a secret must never fall back to a value)."""
    return [
        f"{where}: ${{{m['name']}{m['op']}...}} gives a secret a default"
        for m in DEFAULTED.finditer(text)
        if SECRET_WORDS.search(m["name"])
    ]


def password_on_command_line(args: Sequence[str]) -> bool:
    return bool(PASSWORD_ARG.search(" ".join(args)))


def compose_problems(doc: Mapping[str, Any], text: str) -> list[str]:
    """What is wrong with a compose file for this project (empty: nothing)."""
    problems: list[str] = []
    services: Mapping[str, Any] = doc["services"]
    declared_secrets: Mapping[str, Any] = doc.get("secrets") or {}
    owner = environment(services["postgres"]).get("POSTGRES_USER", "postgres")

    problems += secret_problems(text, "compose.yaml")
    for where, args in _command_lines(doc).items():
        if password_on_command_line(args):
            problems.append(f"{where}: a password on the command line: {args}")

    for name, service in services.items():
        env = environment(service)
        mounted = {s if isinstance(s, str) else s["source"] for s in service.get("secrets", [])}
        for key, value in env.items():
            if SECRET_WORDS.search(key) and not key.endswith("_FILE"):
                problems.append(f"{name}: {key} holds a secret in the environment; use {key}_FILE")
            if key.endswith("_FILE") and SECRET_WORDS.search(key):
                path = PurePosixPath(value)
                if path.parent != SECRETS_MOUNT or path.name not in mounted:
                    problems.append(f"{name}: {key}={value} is not one of its mounted secrets")
                elif "file" not in (declared_secrets.get(path.name) or {}):
                    problems.append(f"{name}: secret {path.name} is not read from a file")
        url = env.get("DATABASE_URL")
        if url is not None:
            if urlsplit(url).password or "password=" in url:
                problems.append(f"{name}: DATABASE_URL carries a password")
            if name != "migrate" and _database_user(url) in (owner, None, "postgres"):
                problems.append(f"{name}: connects as the owner {owner!r}, not the worker role")
        if name == "migrate" and url is not None and _database_user(url) != owner:
            problems.append(f"migrate: must migrate as the owner {owner!r}")

        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else None
            if isinstance(port, str | int):
                parts = str(port).split(":")
                host_ip = parts[0] if len(parts) == 3 else None
            if host_ip != "127.0.0.1":
                problems.append(f"{name}: port {port} is published on every interface")

        check = service.get("healthcheck") or {}
        test = argv(check.get("test"))
        if not one_shot(doc, name) and (not test or test[0] == "NONE" or check.get("disable")):
            problems.append(f"{name}: no healthcheck")

    worker = services.get("worker", {})
    worker_env = environment(worker)
    worker_user = _database_user(worker_env.get("DATABASE_URL", ""))
    migrate_args = argv(services.get("migrate", {}).get("command"))
    if f"--worker-role={worker_user}" not in migrate_args and not any(
        a == "--worker-role" and b == worker_user for a, b in itertools.pairwise(migrate_args)
    ):
        problems.append(f"migrate: does not create the workers' role {worker_user!r}")
    grace = duration_seconds(worker.get("stop_grace_period", "10s"))
    bound = worst_case_stop(worker_env).total
    if grace < bound:
        problems.append(f"worker: stop_grace_period {grace:g} s < the worst-case stop {bound:g} s")
    if worker.get("init") is not True:
        problems.append("worker: no init (a SIGTERM before rq's handlers would be ignored)")
    if "--appendonly" not in argv(services.get("redis", {}).get("command")):
        problems.append("redis: AOF is off")
    return problems


# --- Dockerfile -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def dockerfile_instructions(text: str | None = None) -> list[Instruction]:
    """The instructions, continuation lines joined, comments dropped."""
    lines = (DOCKERFILE.read_text() if text is None else text).splitlines()
    out: list[Instruction] = []
    pending = ""
    for line in lines:
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip()))
    return out


def exec_form(instruction: Instruction) -> list[str]:
    """ENTRYPOINT/CMD in exec (JSON) form; AssertionError for the shell form (a shell as PID 1
    would not pass SIGTERM on)."""
    try:
        value = json.loads(instruction.args)
    except json.JSONDecodeError:
        raise AssertionError(
            f"{instruction.keyword} is not in exec form: {instruction.args}"
        ) from None
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), instruction
    return value


def last(instructions: Sequence[Instruction], keyword: str) -> Instruction | None:
    found = [i for i in instructions if i.keyword == keyword]
    return found[-1] if found else None


@dataclass(frozen=True)
class Copy:
    sources: list[str]
    dest: str
    workdir: str


def copies(instructions: Sequence[Instruction]) -> list[Copy]:
    """The COPY/ADD instructions from the build context (``--from`` stages excluded)."""
    found: list[Copy] = []
    workdir = "/"
    for ins in instructions:
        if ins.keyword == "WORKDIR":
            workdir = str(PurePosixPath(workdir) / ins.args)
        if ins.keyword not in ("COPY", "ADD"):
            continue
        tokens = shlex.split(ins.args)
        if any(t.startswith("--from") for t in tokens):
            continue
        tokens = [t for t in tokens if not t.startswith("--")]
        if tokens and tokens[0].startswith("["):
            tokens = json.loads(" ".join(tokens))
        found.append(Copy(tokens[:-1], tokens[-1], workdir))
    return found


def dockerignore_patterns() -> list[str]:
    if not DOCKERIGNORE.exists():
        return []
    return [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.strip().startswith(("#", "!"))
    ]


def ignored(path: str, patterns: Sequence[str]) -> bool:
    """Whether ``path`` (relative to the context) or a folder above it is excluded."""
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        bare = pattern.strip("/")
        if bare.startswith("**/"):
            if any(fnmatch.fnmatch(part, bare[3:]) for part in parts):
                return True
        elif any(fnmatch.fnmatch(prefix, bare) for prefix in prefixes):
            return True
    return False


def pyproject() -> dict[str, Any]:
    return tomllib.loads(PYPROJECT.read_text())


def project_packages() -> list[str]:
    """The top-level packages the production distribution installs, as pyproject says."""
    setuptools_cfg = pyproject().get("tool", {}).get("setuptools", {})
    packages = setuptools_cfg.get("packages", [])
    if isinstance(packages, list):
        return sorted({p.split(".")[0] for p in packages})
    from setuptools import find_packages

    find = packages.get("find", {})
    found: set[str] = set()
    for where in find.get("where", ["."]):
        names = find_packages(
            where=str(ROOT / where),
            include=find.get("include", ["*"]),
            exclude=find.get("exclude", []),
        )
        found |= {str(PurePosixPath(where) / n.split(".")[0]) for n in names}
    return sorted(found)


# --- the command ------------------------------------------------------------------------------


def subcommands(parser: argparse.ArgumentParser | None = None) -> set[str]:
    parser = parser or build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


def parse_command(args: Sequence[str]) -> argparse.Namespace:
    """Parse ``chem-persistence ARGS`` as the real command would; AssertionError if refused."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return build_parser().parse_args(list(args))
    except SystemExit as exc:
        shown = " ".join(args)
        message = f"chem-persistence {shown}: refused ({exc}): {err.getvalue()}"
        raise AssertionError(message) from None


def check_command(args: Sequence[str]) -> None:
    """``chem-persistence ARGS`` names a real subcommand with valid options; the dashboard's,
    built elsewhere, is checked against its agreed interface until this branch has it."""
    if args and args[0] == "dashboard" and "dashboard" not in subcommands():
        assert tuple(args[: len(DASHBOARD_ARGS)]) == DASHBOARD_ARGS, args
        assert len(args) == len(DASHBOARD_ARGS) + 2, args
        assert args[len(DASHBOARD_ARGS)] == "--port" and args[-1], args
        return
    parse_command(args)
    # Exact option names only: argparse would take an abbreviation, which a later option
    # sharing its prefix turns into an error.
    sub = subparser(args[0])
    known = {o for action in sub._actions for o in action.option_strings}
    for token in args[1:]:
        if token.startswith("--"):
            assert token.split("=", 1)[0] in known, f"{token}: not an option of {args[0]}"


def subparser(name: str) -> argparse.ArgumentParser:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[name]
            return found
    raise AssertionError("the command has no subcommands")


# --- Procfile ---------------------------------------------------------------------------------

#: honcho's own rule for a process line (``name: command``).
PROCFILE_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")


def procfile_processes(text: str | None = None) -> dict[str, str]:
    lines = (PROCFILE.read_text() if text is None else text).splitlines()
    return {m[1]: m[2] for line in lines if (m := PROCFILE_LINE.match(line))}


def shell_defaults(command: str) -> str:
    """``${VAR:-default}`` replaced by its default, as a shell without VAR would do."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", command)


def procfile_argv(command: str) -> list[str]:
    """The argv a Procfile line runs: its ``exec`` dropped, defaults applied."""
    args = argv(shell_defaults(command))
    return args[1:] if args[:1] == ["exec"] else args
