"""The dashboard's settings from the environment (``--bind``/``--port`` override two of them).

``CHEM_DASHBOARD_USERNAME`` (``admin``), ``CHEM_DASHBOARD_PASSWORD`` or
``CHEM_DASHBOARD_PASSWORD_FILE`` (a file holding it: docker secrets), ``CHEM_DASHBOARD_BIND``
(``127.0.0.1``), ``CHEM_DASHBOARD_PORT`` (9181). Redis, the queue, the key prefix and the
shards come from ``producer.config.QueueSettings``, as for the worker.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from chem_persistence.domain.settings import InvalidSetting, raw, read_int, read_text
from chem_persistence.eventlog.config import read_password_file

DEFAULT_USERNAME = "admin"
DEFAULT_BIND = "127.0.0.1"  # never on every interface unless asked
DEFAULT_PORT = 9181
ENV_USERNAME = "CHEM_DASHBOARD_USERNAME"
ENV_PASSWORD = "CHEM_DASHBOARD_PASSWORD"
ENV_PASSWORD_FILE = "CHEM_DASHBOARD_PASSWORD_FILE"
ENV_BIND = "CHEM_DASHBOARD_BIND"
ENV_PORT = "CHEM_DASHBOARD_PORT"
#: A password file larger than this is not a password file.


class DashboardConfigError(InvalidSetting):
    """An environment variable (or option) with a value the dashboard cannot use."""


class MissingPassword(ValueError):
    """Neither password variable is set and auth was not turned off."""


@dataclass(frozen=True)
class DashboardSettings:
    username: str = DEFAULT_USERNAME
    #: None only when auth is off (``--no-auth``).
    password: str | None = field(default=None, repr=False)
    bind: str = DEFAULT_BIND
    port: int = DEFAULT_PORT

    @property
    def auth(self) -> bool:
        return self.password is not None

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        no_auth: bool = False,
        bind: str | None = None,
        port: int | None = None,
    ) -> DashboardSettings:
        env = os.environ if environ is None else environ
        username = read_text(env, ENV_USERNAME, DEFAULT_USERNAME)
        if ":" in username:  # basic auth cannot carry it
            raise DashboardConfigError(ENV_USERNAME, username, "must not contain ':'")
        password = None if no_auth else _password(env)
        host = bind if bind is not None else read_text(env, ENV_BIND, DEFAULT_BIND)
        if not host.strip():
            raise DashboardConfigError(ENV_BIND if bind is None else "--bind", host, "is empty")
        if port is None:
            port = read_int(
                env, ENV_PORT, DEFAULT_PORT, minimum=1, maximum=65535, error=DashboardConfigError
            )
        elif not 1 <= port <= 65535:
            raise DashboardConfigError("--port", port, "is not a port (1-65535)")
        return cls(username, password, host.strip(), port)


def _password(env: Mapping[str, str]) -> str:
    given = raw(env, ENV_PASSWORD)
    path = raw(env, ENV_PASSWORD_FILE)
    if given is not None and path is not None:
        raise DashboardConfigError(
            f"{ENV_PASSWORD} and {ENV_PASSWORD_FILE}", "both set", "set only one of them"
        )
    if given is not None:
        return given
    if path is None:
        raise MissingPassword(
            f"set {ENV_PASSWORD} or {ENV_PASSWORD_FILE} (a file holding it), or run with"
            " --no-auth to serve without authentication"
        )
    return read_password_file(path, ENV_PASSWORD_FILE, DashboardConfigError)
