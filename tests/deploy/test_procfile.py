"""The Procfile: only long-running processes (honcho stops every process as soon as one exits,
so a one-shot `release: chem-persistence migrate` line ended the whole stack within a second),
no password on a command line, the agreed dashboard command. `honcho start` itself is run in
tests/integration/test_honcho.py."""

from __future__ import annotations

from honcho.environ import parse_procfile

from tests.deploy.deploy_files import (
    DASHBOARD_ARGS,
    PROCFILE,
    argv,
    password_on_command_line,
    procfile_argv,
    procfile_processes,
    secret_problems,
)

#: Subcommands that end by themselves: none may be a Procfile process.
ONE_SHOT = {"migrate", "status", "dlq", "replay", "demo", "bench", "chaos"}


def test_our_reading_of_the_procfile_is_honchos() -> None:
    assert procfile_processes() == parse_procfile(PROCFILE.read_text()).processes


def test_every_process_is_long_running() -> None:
    processes = procfile_processes()
    assert "release" not in processes
    for name, command in processes.items():
        args = procfile_argv(command)
        assert args[1] not in ONE_SHOT, (name, command)
        assert "--burst" not in args, (name, command)


def test_every_process_replaces_its_shell() -> None:
    """honcho runs a line as ``sh -c LINE`` and signals the whole group; a shell that stays
    dies of the SIGTERM before its process has stopped, and honcho reports it killed."""
    for name, command in procfile_processes().items():
        assert argv(command)[0] == "exec", (name, command)


def test_the_one_shot_release_line_of_the_report_is_caught() -> None:
    reported = "release: chem-persistence migrate\nworker: chem-persistence worker\n"
    one_shots = [
        name
        for name, command in procfile_processes(reported).items()
        if argv(command)[1] in ONE_SHOT
    ]
    assert one_shots == ["release"]


def test_the_dashboard_line_reads_its_password_from_the_environment() -> None:
    command = procfile_processes()["dashboard"]
    assert argv(command) == [
        "exec",
        "chem-persistence",
        *DASHBOARD_ARGS,
        "--port",
        "${PORT:-9181}",
    ]
    assert procfile_argv(command)[-1] == "9181"
    assert not password_on_command_line(argv(command))
    reported = (
        "rq-dashboard --json --bind 0.0.0.0 --port ${PORT:-9181} --username admin"
        " --password ${RQ_DASHBOARD_PASSWORD:?set RQ_DASHBOARD_PASSWORD}"
    )
    assert password_on_command_line(argv(reported))


def test_no_secret_has_a_default() -> None:
    assert secret_problems(PROCFILE.read_text(), "Procfile") == []
    assert secret_problems("web: x --token ${API_TOKEN:-abc}", "Procfile")
