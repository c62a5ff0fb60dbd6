"""Mutation check: each one-line change of tests/mutations.toml must make its tests fail.

    python -m tests.mutate                 # every mutation (``make mutate``)
    python -m tests.mutate ID [ID ...]     # only these
    python -m tests.mutate --list          # the list, nothing run

The working tree is never modified: the repository's files (tracked and untracked, not
ignored) are copied once into a scratch directory, and each mutation is applied there, its
tests run there (``PYTHONPATH`` and the working directory point at the copy, so every Python
process the tests start imports the mutated code), and the line put back before the next one.
The copy is deleted at the end, on Ctrl-C and on SIGTERM too.

First the tests of every mutation run once unmutated: a mutation counts as killed only when
the same tests passed without it. A mutation is killed when pytest reports failing tests
(exit status 1); a usage error, a collection error or a timeout is not a kill. The command
prints a table and exits non-zero unless every mutation was killed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

REPO_ROOT = Path(__file__).resolve().parent.parent
MUTATIONS_FILE = Path(__file__).resolve().with_name("mutations.toml")
#: Sources a mutation may change (the queue protocol files are not listed here yet).
ALLOWED_PREFIXES = ("domain/", "eventlog/", "migrations/", "producer/", "worker/")
TIMEOUT_S = 900
STOP_GRACE_S = 30
PYTEST_ARGS = ("-x", "-q", "-p", "no:cacheprovider", "--no-header")
#: pytest's exit status for "tests ran and some failed".
TESTS_FAILED = 1


class MutationError(ValueError):
    """The mutation list is wrong (a line not found, found twice, a file out of bounds)."""


@dataclass(frozen=True)
class Mutation:
    id: str
    file: str
    original: str
    mutated: str
    tests: tuple[str, ...]
    why: str

    def apply(self, text: str) -> str:
        """``text`` with the one line equal to ``original`` (ignoring indentation) replaced
        by ``mutated``, indented the same; MutationError unless exactly one line matches."""
        lines = text.splitlines(keepends=True)
        hits = [i for i, line in enumerate(lines) if line.strip() == self.original.strip()]
        if len(hits) != 1:
            raise MutationError(
                f"{self.id}: {self.file} has {len(hits)} line(s) equal to {self.original!r}"
                " (need exactly one)"
            )
        i = hits[0]
        line = lines[i]
        indent = line[: len(line) - len(line.lstrip())]
        ending = line[len(line.rstrip("\r\n")) :]
        lines[i] = f"{indent}{self.mutated.strip()}{ending}" if self.mutated.strip() else ending
        mutated = "".join(lines)
        if mutated == text:
            raise MutationError(f"{self.id}: the mutated line is the original")
        return mutated


def load(path: Path = MUTATIONS_FILE) -> list[Mutation]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    mutations = []
    for raw in data.get("mutation", []):
        mutation = Mutation(
            id=str(raw["id"]),
            file=str(raw["file"]),
            original=str(raw["original"]),
            mutated=str(raw["mutated"]),
            tests=tuple(str(t) for t in raw["tests"]),
            why=str(raw.get("why", "")),
        )
        if not mutation.file.startswith(ALLOWED_PREFIXES):
            raise MutationError(
                f"{mutation.id}: {mutation.file} is not a file mutations may change"
            )
        if not mutation.tests:
            raise MutationError(f"{mutation.id}: no tests to run")
        mutations.append(mutation)
    ids = [m.id for m in mutations]
    if len(set(ids)) != len(ids):
        raise MutationError("mutation ids must be unique")
    return mutations


def repository_files(root: Path) -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout
    names = out.decode().split("\0")
    # A symlink (chem_persistence/ links to the package folders) counts as a file: it is copied
    # as a link, so that a mutation of domain/x.py is what chem_persistence.domain.x imports.
    return sorted({n for n in names if n and ((root / n).is_symlink() or (root / n).is_file())})


@contextmanager
def scratch_copy(root: Path) -> Iterator[Path]:
    """A copy of the repository's files, deleted on exit (Ctrl-C and SIGTERM included)."""
    directory = Path(tempfile.mkdtemp(prefix="chem-mutate-"))

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        for name in repository_files(root):
            target = directory / name
            target.parent.mkdir(parents=True, exist_ok=True)
            source = root / name
            if source.is_symlink():
                target.symlink_to(source.readlink())
            else:
                shutil.copy2(source, target)
        yield directory
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(directory, ignore_errors=True)


def run_tests(copy: Path, tests: Sequence[str]) -> tuple[int | None, str]:
    """pytest on ``tests`` in ``copy``: (exit status or None on timeout, last output lines)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(copy), env.get("PYTHONPATH", "")) if p)
    env.pop("PYTEST_ADDOPTS", None)
    child = subprocess.Popen(
        [sys.executable, "-m", "pytest", *PYTEST_ARGS, *tests],
        cwd=copy,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        stdout, _ = child.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        stop(child)
        return None, f"timed out after {TIMEOUT_S}s"
    except BaseException:
        stop(child)  # interrupted: let pytest tear down (it gives its Redis DB back) first
        raise
    lines = [line for line in stdout.splitlines() if line.strip()]
    # pytest's summary line, not what a conftest prints after it (kept temporary files)
    summary = [line for line in lines if re.search(r"\d+ (failed|passed|error)", line)]
    return child.returncode, (summary or lines or [""])[-1].strip("= ")


def stop(child: subprocess.Popen[str]) -> None:
    """Interrupt ``child`` as Ctrl-C would, so that its fixtures clean up; kill it if it
    has not ended within STOP_GRACE_S."""
    if child.poll() is None:
        child.send_signal(signal.SIGINT)
        try:
            child.communicate(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()


def check_imports_from(copy: Path) -> None:
    """The copy's packages, not the working tree's, are what a child process imports."""
    env = dict(os.environ, PYTHONPATH=str(copy))
    shown = subprocess.run(
        [sys.executable, "-c", "import chem_persistence.eventlog as e; print(e.__file__)"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(shown).resolve().is_relative_to(copy.resolve()):
        raise SystemExit(f"mutate: the scratch copy's code is not what gets imported ({shown})")


def table(rows: Sequence[tuple[str, str, str, str]]) -> str:
    header = ("mutation", "file", "result", "detail")
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(4)]

    def fmt(r: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    lines = [fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += [fmt(r) for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.mutate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("ids", nargs="*", help="only these mutations")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    args = parser.parse_args(argv)

    mutations = load()
    if args.ids:
        unknown = set(args.ids) - {m.id for m in mutations}
        if unknown:
            parser.error(f"unknown mutation(s): {', '.join(sorted(unknown))}")
        mutations = [m for m in mutations if m.id in args.ids]
    for mutation in mutations:  # every line must be found before anything runs
        mutation.apply((REPO_ROOT / mutation.file).read_text(encoding="utf-8"))
    if args.list:
        for m in mutations:
            print(f"{m.id}: {m.file}: {m.original.strip()!r} -> {m.mutated.strip()!r}\n  {m.why}")
        return 0

    rows: list[tuple[str, str, str, str]] = []
    started = time.monotonic()
    try:
        with scratch_copy(REPO_ROOT) as copy:
            check_imports_from(copy)
            baseline = sorted({t for m in mutations for t in m.tests})
            print(f"mutate: baseline, {len(baseline)} test file(s) unmutated ...", flush=True)
            status, detail = run_tests(copy, baseline)
            if status != 0:
                print(f"mutate: the tests fail without any mutation ({detail}); fix them first")
                return 2
            for n, mutation in enumerate(mutations, 1):
                path = copy / mutation.file
                original = path.read_text(encoding="utf-8")
                path.write_text(mutation.apply(original), encoding="utf-8")
                try:
                    print(f"mutate: [{n}/{len(mutations)}] {mutation.id} ...", flush=True)
                    status, detail = run_tests(copy, mutation.tests)
                finally:
                    path.write_text(original, encoding="utf-8")
                result = "killed" if status == TESTS_FAILED else "SURVIVED"
                if status not in (0, TESTS_FAILED):
                    result = "ERROR"
                rows.append((mutation.id, mutation.file, result, detail))
    except KeyboardInterrupt:
        print("\nmutate: interrupted; the scratch copy is gone, the working tree untouched")
        if rows:
            print(table(rows))
        return 130
    print(table(rows))
    killed = sum(r[2] == "killed" for r in rows)
    elapsed = time.monotonic() - started
    print(f"\n{killed} of {len(rows)} mutations killed ({elapsed:.0f} s)")
    return 0 if killed == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
