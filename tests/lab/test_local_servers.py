"""lab.local_servers: which PostgreSQL and Redis the demo uses (the URLs, local, or embedded)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from chem_persistence.eventlog.config import url_with_database
from lab import embedded, ports
from lab import local_servers as services
from lab.local_servers import choose, resolve_services

BOTH_URLS = {"DATABASE_URL": "postgresql://db/chem", "REDIS_URL": "redis://cache:6379/0"}


@pytest.fixture
def probed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every port answers; the list records which ones were probed."""
    calls: list[tuple[str, int]] = []

    def answers(host: str, port: int, timeout: float = 0.5) -> bool:
        calls.append((host, port))
        return True

    monkeypatch.setattr(services, "port_answers", answers)
    return calls


def _only_port_down(monkeypatch: pytest.MonkeyPatch, down: int) -> None:
    monkeypatch.setattr(services, "port_answers", lambda host, port, timeout=0.5: port != down)


def test_both_urls_set_means_environment_without_probing(probed: list[tuple[str, int]]) -> None:
    assert choose(BOTH_URLS, force_embedded=False) == "environment"
    assert probed == []  # the URLs win: nothing local is even looked at


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"DATABASE_URL": "postgresql://db/chem"},
        {"REDIS_URL": "redis://cache:6379/0"},
        {"DATABASE_URL": "", "REDIS_URL": ""},
    ],
)
def test_without_both_urls_answering_local_ports_mean_local(
    probed: list[tuple[str, int]], environ: dict[str, str]
) -> None:
    assert choose(environ, force_embedded=False) == "local"
    assert set(probed) == {("127.0.0.1", 5432), ("127.0.0.1", 6379)}


@pytest.mark.parametrize("down", [5432, 6379])
def test_a_local_port_not_answering_means_embedded(
    monkeypatch: pytest.MonkeyPatch, down: int
) -> None:
    _only_port_down(monkeypatch, down)
    assert choose({}, force_embedded=False) == "embedded"


@pytest.mark.parametrize("environ", [{}, BOTH_URLS])
def test_force_embedded_wins(probed: list[tuple[str, int]], environ: dict[str, str]) -> None:
    assert choose(environ, force_embedded=True) == "embedded"
    assert probed == []


def test_resolve_services_yields_the_environment_urls(
    monkeypatch: pytest.MonkeyPatch, probed: list[tuple[str, int]]
) -> None:
    for name, value in BOTH_URLS.items():
        monkeypatch.setenv(name, value)
    with resolve_services() as found:
        assert (found.server_url, found.redis_url, found.origin) == (
            BOTH_URLS["DATABASE_URL"],
            BOTH_URLS["REDIS_URL"],
            "environment",
        )


def test_resolve_services_local_uses_the_given_urls_and_local_defaults(
    monkeypatch: pytest.MonkeyPatch, probed: list[tuple[str, int]]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://db/chem")
    monkeypatch.delenv("REDIS_URL", raising=False)
    with resolve_services() as found:
        assert found == services.Services(
            "postgresql://db/chem",
            services.LOCAL_REDIS_URL,
            "local",
            "DATABASE_URL",
            "the local Redis (set REDIS_URL to use another)",
        )


@pytest.mark.parametrize("force", [False, True])
def test_resolve_services_falls_back_to_the_embedded_servers(
    monkeypatch: pytest.MonkeyPatch, force: bool
) -> None:
    from contextlib import contextmanager

    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    _only_port_down(monkeypatch, 5432)
    started: list[str] = []
    admin = "postgresql://postgres@/postgres?host=%2Ftmp%2Fpg"

    @contextmanager
    def fake_servers() -> Iterator[embedded.EmbeddedServers]:
        started.append("up")
        yield embedded.EmbeddedServers(admin, "redis://127.0.0.1:7000/0")
        started.append("down")

    monkeypatch.setattr(services, "embedded_servers", fake_servers)
    with resolve_services(force_embedded=force) as found:
        assert started == ["up"]
        assert (found.server_url, found.redis_url, found.origin) == (
            admin,
            "redis://127.0.0.1:7000/0",
            "embedded",
        )
        assert "embedded PostgreSQL" in found.database_setting
    assert started == ["up", "down"]  # stopped on exit


def test_demo_database_names_are_fresh_and_say_what_they_are() -> None:
    names = {services.new_database_name() for _ in range(50)}
    assert len(names) == 50
    for name in names:
        assert re.fullmatch(r"chem_demo_\d{8}_\d{6}_[0-9a-f]{6}", name), name


def test_server_of_drops_the_database_and_the_password() -> None:
    assert (
        services.server_of("postgresql://u:secret@h:5433/chem?sslmode=require")
        == "postgresql://u:***@h:5433/?sslmode=require"
    )


def test_url_with_database_keeps_server_user_and_options() -> None:
    assert (
        url_with_database("postgresql://u:p@h:5433/postgres?sslmode=require", "x")
        == "postgresql://u:p@h:5433/x?sslmode=require"
    )


def test_port_answers_on_a_listening_and_a_closed_port() -> None:
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert ports.port_answers("127.0.0.1", port)
    assert not ports.port_answers("127.0.0.1", port, timeout=0.2)
