"""The image, without a Docker engine: the Dockerfile's entry point is an installed console
script of this project, every command compose.yaml and the Procfile give it is a real
subcommand with valid options, and every file the Dockerfile copies exists, is not excluded
from the build context, and is all that the install and the migrations need.

What is needed is derived (pyproject.toml, the paths eventlog.migrate reads), not listed here,
so a change of layout (a wheel with the migrations inside) keeps these checks meaningful.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path, PurePosixPath

import pytest

from chem_persistence.eventlog import migrate
from tests.deploy.deploy_files import (
    ROOT,
    argv,
    check_command,
    copies,
    dockerfile_instructions,
    dockerignore_patterns,
    exec_form,
    ignored,
    last,
    load_compose,
    parse_command,
    procfile_argv,
    procfile_processes,
    project_packages,
    pyproject,
    subcommands,
)

BIN = Path(sys.executable).parent


def image_argv() -> tuple[list[str], list[str]]:
    """(ENTRYPOINT, CMD) of the final stage, both in exec form."""
    instructions = dockerfile_instructions()
    entrypoint, cmd = last(instructions, "ENTRYPOINT"), last(instructions, "CMD")
    assert entrypoint is not None, "no ENTRYPOINT"
    return exec_form(entrypoint), exec_form(cmd) if cmd is not None else []


def project_scripts() -> dict[str, str]:
    scripts: dict[str, str] = pyproject()["project"]["scripts"]
    return scripts


def test_the_entry_point_is_an_installed_console_script_of_this_project() -> None:
    entrypoint, _ = image_argv()
    script = entrypoint[0]
    assert script in project_scripts(), (script, project_scripts())
    installed = {
        ep.name: ep.value
        for ep in distribution(pyproject()["project"]["name"]).entry_points
        if ep.group == "console_scripts"
    }
    assert installed.get(script) == project_scripts()[script]
    assert shutil.which(script, path=str(BIN)), f"{script} is not installed in {BIN}"


def test_the_default_command_and_every_compose_command_are_real_subcommands() -> None:
    entrypoint, cmd = image_argv()
    assert entrypoint == ["chem-persistence"] or len(entrypoint) >= 1
    commands = {"Dockerfile CMD": entrypoint[1:] + cmd}
    for name, service in load_compose()["services"].items():
        if "build" not in service:
            continue  # an image of its own (postgres, redis)
        start = argv(service.get("entrypoint")) or entrypoint
        assert start[0] in project_scripts(), (name, start)
        commands[f"compose {name}"] = start[1:] + (argv(service.get("command")) or cmd)
    assert {"compose migrate", "compose worker", "compose dashboard"} <= set(commands)
    for where, args in commands.items():
        try:
            check_command(args)
        except AssertionError as exc:
            raise AssertionError(f"{where}: {exc}") from None


def test_every_procfile_line_runs_a_real_subcommand() -> None:
    processes = procfile_processes()
    assert set(processes) == {"worker", "dashboard"}
    for name, command in processes.items():
        args = procfile_argv(command)
        assert args[0] in project_scripts(), (name, args)
        check_command(args[1:])


def test_the_subcommands_used_run_their_help_through_the_installed_script() -> None:
    """The console script itself starts (imports, parser) for each subcommand it is given."""
    used = {"migrate", "worker"} & subcommands()
    assert used == {"migrate", "worker"}
    for sub in sorted(used):
        result = subprocess.run(
            [str(BIN / "chem-persistence"), sub, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert f"chem-persistence {sub}" in result.stdout


def test_a_wrong_command_is_caught() -> None:
    with pytest.raises(AssertionError, match="refused"):
        check_command(["wroker"])
    with pytest.raises(AssertionError, match="refused"):
        check_command(["migrate", "--workers-role=chem_worker"])
    with pytest.raises(AssertionError, match="not an option of migrate"):
        check_command(["migrate", "--worker-rol=chem_worker"])  # argparse takes it; we do not
    with pytest.raises(AssertionError):
        check_command(["dashboard", "--bnd", "0.0.0.0"])  # no such option
    assert parse_command(["migrate", "--worker-role=w"]).worker_role == "w"


def test_every_copied_file_exists_and_is_in_the_build_context() -> None:
    patterns = dockerignore_patterns()
    assert "secrets" in patterns and ".venv" in patterns and ".git" in patterns
    found = copies(dockerfile_instructions())
    assert found, "the Dockerfile copies nothing"
    for copy in found:
        for source in copy.sources:
            matches = list(ROOT.glob(source)) if any(c in source for c in "*?[") else []
            assert matches or (ROOT / source).exists(), f"COPY {source}: no such file"
            assert not ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"


def test_the_copies_hold_what_the_wheel_build_needs() -> None:
    """pyproject.toml and its readme, every package it installs and the folders its links
    point at (the migrations among them), each at its place relative to the others: the
    layout of a checkout, which the links of chem_persistence/ rely on."""
    project = pyproject()["project"]
    needed = {"pyproject.toml", *project_packages()}
    if isinstance(project.get("readme"), str):
        needed.add(project["readme"])
    links = [p for p in (ROOT / "chem_persistence").iterdir() if p.is_symlink()]
    assert {p.name for p in links} >= {"domain", "eventlog", "producer", "worker", "migrations"}
    needed |= {p.resolve().relative_to(ROOT).as_posix() for p in links}
    assert migrate.MIGRATIONS_DIR.resolve().relative_to(ROOT).as_posix() in needed

    placed: dict[str, PurePosixPath] = {}  # context path -> where it lands in the image
    for copy in copies(dockerfile_instructions()):
        dest = PurePosixPath(copy.workdir) / copy.dest
        for source in copy.sources:
            is_dir_dest = copy.dest.endswith("/") or len(copy.sources) > 1
            placed[source.rstrip("/") or "."] = dest / Path(source).name if is_dir_dest else dest

    roots = set()
    for path in sorted(needed):
        covering = [s for s in placed if s == "." or path == s or path.startswith(s + "/")]
        assert covering, f"{path} is not copied into the image"
        source = max(covering, key=len)
        landed = placed[source]
        # the root of the checkout in the image: where `path` lands, less `path` itself
        depth = 0 if source == "." else len(PurePosixPath(source).parts)
        roots.add(landed.parents[depth - 1] if depth else landed)
    assert len(roots) == 1, f"the copies do not keep the checkout's layout: {roots}"


def test_the_image_installs_the_wheel_it_built_not_the_checkout() -> None:
    instructions = dockerfile_instructions()
    runs = [i.args for i in instructions if i.keyword == "RUN"]
    assert any("pip wheel" in args for args in runs), runs
    installs = [args for args in runs if "pip install" in args]
    assert installs and all(".whl" in args and " -e " not in args for args in installs), installs


def test_the_image_installs_the_dashboard_extra_and_runs_unprivileged() -> None:
    instructions = dockerfile_instructions()
    installs = [i.args for i in instructions if i.keyword == "RUN" and "pip install" in i.args]
    assert any("[dashboard]" in args for args in installs), installs
    user = last(instructions, "USER")
    assert user is not None and user.args.split(":")[0] not in ("root", "0"), user
    assert "dashboard" in pyproject()["project"]["optional-dependencies"]
