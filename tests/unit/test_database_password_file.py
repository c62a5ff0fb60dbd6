"""DATABASE_PASSWORD_FILE: the password of DATABASE_URL's user read from a file (a docker
secret), so that neither the URL nor the environment carries it."""

from __future__ import annotations

from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from chem_persistence.eventlog.config import (
    DatabaseSettings,
    InvalidDatabaseSetting,
    database_url_from_env,
    redact_url,
)

URL = "postgresql://chem_worker@postgres:5432/chem"


def secret(tmp_path: Path, content: str) -> str:
    path = tmp_path / "password"
    path.write_text(content)
    path.chmod(0o644)  # as a bind-mounted docker secret often is: libpq's 0600 rule is not ours
    return str(path)


@pytest.mark.parametrize("content", ["s3cr:t@/%?&= x", "s3cr:t@/%?&= x\n", "s3cr:t@/%?&= x\r\n"])
def test_the_file_gives_the_password_one_trailing_newline_dropped(
    tmp_path: Path, content: str
) -> None:
    env = {"DATABASE_URL": URL, "DATABASE_PASSWORD_FILE": secret(tmp_path, content)}
    url = database_url_from_env(env)
    params = conninfo_to_dict(url)
    assert params["password"] == "s3cr:t@/%?&= x"
    assert params["user"] == "chem_worker" and params["host"] == "postgres"
    settings = DatabaseSettings.from_env(env)
    assert settings.url == url
    for shown in (repr(settings), settings.redacted_url, redact_url(url)):
        assert "s3cr" not in shown


def test_the_url_keeps_its_own_parameters(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": URL + "?sslmode=require&application_name=w",
        "DATABASE_PASSWORD_FILE": secret(tmp_path, "pw"),
    }
    params = conninfo_to_dict(database_url_from_env(env))
    assert (params["sslmode"], params["application_name"], params["password"]) == (
        "require",
        "w",
        "pw",
    )


def test_without_the_variable_nothing_changes() -> None:
    assert database_url_from_env({"DATABASE_URL": URL}) == URL
    assert database_url_from_env({"DATABASE_URL": URL, "DATABASE_PASSWORD_FILE": " "}) == URL


@pytest.mark.parametrize(
    "url", ["postgresql://chem_worker:other@postgres/chem", URL + "?password=other"]
)
def test_a_password_in_two_places_is_refused(tmp_path: Path, url: str) -> None:
    env = {"DATABASE_URL": url, "DATABASE_PASSWORD_FILE": secret(tmp_path, "pw")}
    with pytest.raises(InvalidDatabaseSetting) as caught:
        database_url_from_env(env)
    assert "DATABASE_PASSWORD_FILE" in str(caught.value) and "other" not in str(caught.value)


@pytest.mark.parametrize(
    ("content", "why"),
    [("", "empty"), ("\n", "empty"), ("one\ntwo\n", "more than one line")],
)
def test_a_file_that_is_not_one_password_is_refused_without_showing_it(
    tmp_path: Path, content: str, why: str
) -> None:
    env = {"DATABASE_URL": URL, "DATABASE_PASSWORD_FILE": secret(tmp_path, content)}
    with pytest.raises(InvalidDatabaseSetting) as caught:
        database_url_from_env(env)
    assert why in str(caught.value)
    assert "two" not in str(caught.value)


def test_a_missing_file_names_the_variable_and_the_path(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    with pytest.raises(InvalidDatabaseSetting) as caught:
        database_url_from_env({"DATABASE_URL": URL, "DATABASE_PASSWORD_FILE": missing})
    assert "DATABASE_PASSWORD_FILE" in str(caught.value) and missing in str(caught.value)
