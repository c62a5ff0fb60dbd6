"""Database settings, read once from the environment, validated, and safe to log.

Variables (an empty variable counts as unset):

- ``DATABASE_URL``: a libpq URL, ``postgresql://[user[:password]@]host[:port]/dbname[?k=v]``.
  ``postgres://`` (Heroku style) and ``postgresql+psycopg://`` (SQLAlchemy style) are accepted
  and normalized to ``postgresql://``; any other scheme is an error. Default
  ``postgresql://127.0.0.1:5432/chem`` (the local server of ``make services``, database
  ``chem``, the operating-system user).
- ``DATABASE_PASSWORD_FILE``: a file whose content (one trailing newline dropped) is the
  password of ``DATABASE_URL``'s user (a docker secret, say), so that neither the URL nor the
  environment carries it. The URL must then have no password of its own. Unlike libpq's
  ``PGPASSFILE`` it is one bare password and needs no 0600 mode (a bind-mounted secret keeps
  its host owner, who is rarely the container's user).
- ``DATABASE_MIN_CONNECTIONS``: connections the pool keeps open, an integer >= 0 (default 2).
- ``DATABASE_MAX_CONNECTIONS``: the most the pool opens, an integer >= 1 (default 16). A minimum
  above the maximum is clamped to the maximum, with a warning.
- ``CHEM_NO_ARTIFACT_INSERT``: ``1``/``true``/``yes``/``on`` skip the artifact rows of
  ``StepFinished`` events; ``0``/``false``/``no``/``off`` (default) insert them.
- ``DATABASE_LOCK_TIMEOUT_MS`` (default 5000), ``DATABASE_STATEMENT_TIMEOUT_MS`` (default
  10000), ``DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS`` (default 15000): the server-side limits
  of every pool connection (``lock_timeout``, ``statement_timeout``,
  ``idle_in_transaction_session_timeout``), integers >= 0, ``0`` meaning no limit. All three
  stay below a sweep's lease (``CHEM_LEASE_TTL_MS``, 30 s by default): a backend
  stuck on, or holding, a flow's advisory lock is cut off before the flow's lease runs out.
- ``DATABASE_KEEPALIVES_IDLE_S`` (default 10), ``DATABASE_KEEPALIVES_INTERVAL_S`` (default 5),
  ``DATABASE_KEEPALIVES_COUNT`` (default 3): TCP keepalives of every pool connection (idle
  seconds before the first probe, seconds between probes, lost probes before the connection
  is dropped): a vanished server host is noticed in about 25 s, not after the kernel's 2 h;
  ``0`` leaves that one to the operating system.

A parameter the URL sets itself (``?keepalives_idle=...``, or ``-c lock_timeout=...`` in
``options``) wins over these settings.

Passwords never leave this module in clear: errors and log lines show ``redact_url(url)``,
and ``DatabaseSettings``' repr does too.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

from chem_persistence.domain.settings import InvalidSetting, raw, read_bool, read_int

logger = logging.getLogger(__name__)

ENV_DATABASE_URL = "DATABASE_URL"
ENV_DATABASE_PASSWORD_FILE = "DATABASE_PASSWORD_FILE"
ENV_MIN_CONNECTIONS = "DATABASE_MIN_CONNECTIONS"
ENV_MAX_CONNECTIONS = "DATABASE_MAX_CONNECTIONS"
ENV_NO_ARTIFACT_INSERT = "CHEM_NO_ARTIFACT_INSERT"
ENV_LOCK_TIMEOUT_MS = "DATABASE_LOCK_TIMEOUT_MS"
ENV_STATEMENT_TIMEOUT_MS = "DATABASE_STATEMENT_TIMEOUT_MS"
ENV_IDLE_IN_TRANSACTION_TIMEOUT_MS = "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS"
ENV_KEEPALIVES_IDLE_S = "DATABASE_KEEPALIVES_IDLE_S"
ENV_KEEPALIVES_INTERVAL_S = "DATABASE_KEEPALIVES_INTERVAL_S"
ENV_KEEPALIVES_COUNT = "DATABASE_KEEPALIVES_COUNT"

#: The local server of ``make services``, database ``chem``, connecting as the OS user.
DEFAULT_DATABASE_URL = "postgresql://127.0.0.1:5432/chem"
#: Connections the pool keeps open even when idle.
DEFAULT_MIN_CONNECTIONS = 2
#: Connections the pool may open at most (PostgreSQL's own default max_connections is 100).
DEFAULT_MAX_CONNECTIONS = 16
DEFAULT_NO_ARTIFACT_INSERT = False
#: Longest wait for a lock (the flow's advisory lock above all) before 55P03, retried.
DEFAULT_LOCK_TIMEOUT_MS = 5_000
#: Longest a single statement may run before 57014.
DEFAULT_STATEMENT_TIMEOUT_MS = 10_000
#: A session idle inside a transaction this long is ended by the server (its locks go with it).
DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_MS = 15_000
DEFAULT_KEEPALIVES_IDLE_S = 10
DEFAULT_KEEPALIVES_INTERVAL_S = 5
DEFAULT_KEEPALIVES_COUNT = 3

#: The scheme every accepted URL is normalized to (the one libpq and psycopg understand).
CANONICAL_SCHEME = "postgresql"
_ACCEPTED_SCHEMES = frozenset({"postgresql", "postgres", "postgresql+psycopg"})

REDACTED = "***"
# ``password=...`` in a URL query string or in a key=value conninfo string (quoted or not).
_PASSWORD_PARAM = re.compile(r"(?P<key>\bpassword\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'|[^&\s]*)")


class ConfigError(ValueError):
    """A setting has an invalid value; the message names the variable (never a password)."""


def redact_url(url: str) -> str:
    """``url`` with its password (in the user info or as a ``password=`` parameter) as ``***``.

    Errs on the side of hiding: everything between the first ``:`` of the user info and the
    last ``@`` before the path is replaced, even when the password holds raw ``@`` or ``:``.
    """
    scheme, sep, rest = url.partition("://")
    if sep:
        slash = rest.find("/")
        authority, tail = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
        userinfo, at, hosts = authority.rpartition("@")
        if at and ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            authority = f"{user}:{REDACTED}@{hosts}"
        url = f"{scheme}{sep}{authority}{tail}"
    return _PASSWORD_PARAM.sub(lambda m: m.group("key") + REDACTED, url)


def url_with_database(url: str, name: str) -> str:
    """The same server, user and options, another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _passwords(url: str) -> Iterator[str]:
    """Every spelling of the password(s) ``url`` carries: raw and percent-decoded."""
    _, sep, rest = url.partition("://")
    if sep:
        authority = rest.split("/", 1)[0]
        userinfo, at, _ = authority.rpartition("@")
        if at and ":" in userinfo:
            yield userinfo.split(":", 1)[1]
        query = rest.partition("?")[2]
        for key, value in parse_qsl(query, keep_blank_values=False):
            if key == "password":
                yield value
    for match in _PASSWORD_PARAM.finditer(url):
        yield match.group("value").strip("'")


def redact_text(text: str, url: str) -> str:
    """``text`` (say, a driver's error message about ``url``) without ``url``'s password.

    libpq quotes pieces of a malformed URL in its messages (``invalid percent-encoded token:
    "..."``), so a message about a URL is scrubbed of every spelling of its password.
    """
    text = text.replace(url, redact_url(url))
    for secret in sorted(set(_passwords(url)), key=len, reverse=True):
        for spelling in {secret, unquote(secret)}:
            if spelling:
                text = text.replace(spelling, REDACTED)
    return text


class InvalidDatabaseSetting(ConfigError, InvalidSetting):
    """A database variable with a value that cannot be used (the one dialect of
    ``domain.settings``: empty means unset)."""


def normalize_url(url: str, variable: str = ENV_DATABASE_URL) -> str:
    """``url`` with the scheme ``postgresql://``; ConfigError if it is not a PostgreSQL URL."""
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _ACCEPTED_SCHEMES:
        raise InvalidDatabaseSetting(
            variable,
            redact_url(url),
            "not a PostgreSQL URL (expected postgresql://user@host:port/dbname;"
            " postgres:// is accepted too)",
        )
    normalized = f"{CANONICAL_SCHEME}://{rest}"
    try:
        params = conninfo_to_dict(normalized)  # libpq's own parser: bad escapes, bad options
    except psycopg.Error as exc:
        raise InvalidDatabaseSetting(
            variable,
            redact_url(url),
            f"not a valid PostgreSQL URL: {redact_text(str(exc).strip(), url)}",
        ) from None
    ports = str(params.get("port", "")).split(",")  # one per host; libpq checks them only later
    if not all(port.isdigit() or not port for port in ports):
        raise InvalidDatabaseSetting(variable, redact_url(url), "the port is not a number")
    return normalized


def _parse_int(env: Mapping[str, str], variable: str, default: int, minimum: int) -> int:
    return read_int(env, variable, default, minimum=minimum, error=InvalidDatabaseSetting)


def _parse_bool(env: Mapping[str, str], variable: str, default: bool) -> bool:
    return read_bool(env, variable, default, error=InvalidDatabaseSetting)


def _check_sizes(min_size: int, max_size: int, min_name: str, max_name: str) -> int:
    """Validate both sizes; return the minimum, clamped to the maximum (with a warning)."""
    if min_size < 0:
        raise ConfigError(f"{min_name}={min_size!r}: must be >= 0")
    if max_size < 1:
        raise ConfigError(f"{max_name}={max_size!r}: must be >= 1")
    if min_size > max_size:
        logger.warning(
            "action=config_clamp_min_connections %s=%d is greater than %s=%d: using %d",
            min_name,
            min_size,
            max_name,
            max_size,
            max_size,
        )
        return max_size
    return min_size


def database_url_from_env(environ: Mapping[str, str] | None = None) -> str:
    """``DATABASE_URL`` (default DEFAULT_DATABASE_URL), normalized, with the password of
    ``DATABASE_PASSWORD_FILE`` when that is set; ConfigError if invalid."""
    env = os.environ if environ is None else environ
    url = normalize_url(env.get(ENV_DATABASE_URL, "").strip() or DEFAULT_DATABASE_URL)
    password_file = raw(env, ENV_DATABASE_PASSWORD_FILE)
    if password_file is None:
        return url
    if any(_passwords(url)):
        raise InvalidDatabaseSetting(
            ENV_DATABASE_PASSWORD_FILE,
            password_file,
            f"{ENV_DATABASE_URL} carries a password of its own: give it in one place only",
        )
    return with_password(url, read_password_file(password_file, ENV_DATABASE_PASSWORD_FILE))


#: A password file larger than this is not a password file (and is not read whole).
MAX_PASSWORD_FILE_BYTES = 4096


def read_password_file(
    path: str, variable: str, error: type[InvalidSetting] = InvalidDatabaseSetting
) -> str:
    """The password in the file at ``path`` (one trailing line break dropped, as ``echo`` and
    secret stores write it): the one reader of every ``*_PASSWORD_FILE`` setting. An error
    names the variable and the path, never the content."""
    try:
        with Path(path).open("rb") as f:
            data = f.read(MAX_PASSWORD_FILE_BYTES + 1)
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise error(variable, path, f"cannot read it ({reason})") from None
    if len(data) > MAX_PASSWORD_FILE_BYTES:
        raise error(variable, path, f"is larger than {MAX_PASSWORD_FILE_BYTES} bytes")
    password = text.removesuffix("\n").removesuffix("\r")
    if not password.strip():
        raise error(variable, path, "the file is empty: it holds no password")
    if "\n" in password or "\x00" in password:
        raise error(variable, path, "the file holds more than one line")
    return password


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` as its libpq ``password`` parameter (percent-encoded)."""
    parts = urlsplit(url)
    query = "&".join(part for part in (parts.query, "password=" + quote(password, safe="")) if part)
    return urlunsplit(parts._replace(query=query))


@dataclass(frozen=True)
class DatabaseSettings:
    """Where the event log lives and how many connections it may use."""

    url: str = DEFAULT_DATABASE_URL
    min_connections: int = DEFAULT_MIN_CONNECTIONS
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    no_artifact_insert: bool = DEFAULT_NO_ARTIFACT_INSERT
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS
    statement_timeout_ms: int = DEFAULT_STATEMENT_TIMEOUT_MS
    idle_in_transaction_timeout_ms: int = DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_MS
    keepalives_idle_s: int = DEFAULT_KEEPALIVES_IDLE_S
    keepalives_interval_s: int = DEFAULT_KEEPALIVES_INTERVAL_S
    keepalives_count: int = DEFAULT_KEEPALIVES_COUNT

    def __post_init__(self) -> None:
        # Direct construction gets the same checks as from_env, naming the fields instead.
        object.__setattr__(self, "url", normalize_url(self.url, variable="url"))
        for field in _LIMIT_VARIABLES:
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{field}={value!r}: must be an integer >= 0")
        clamped = _check_sizes(
            self.min_connections, self.max_connections, "min_connections", "max_connections"
        )
        object.__setattr__(self, "min_connections", clamped)

    def __repr__(self) -> str:
        return (
            f"DatabaseSettings(url={self.redacted_url!r}, "
            f"min_connections={self.min_connections}, max_connections={self.max_connections}, "
            f"no_artifact_insert={self.no_artifact_insert}, "
            f"lock_timeout_ms={self.lock_timeout_ms}, "
            f"statement_timeout_ms={self.statement_timeout_ms}, "
            f"idle_in_transaction_timeout_ms={self.idle_in_transaction_timeout_ms}, "
            f"keepalives_idle_s={self.keepalives_idle_s}, "
            f"keepalives_interval_s={self.keepalives_interval_s}, "
            f"keepalives_count={self.keepalives_count})"
        )

    def connection_kwargs(self) -> dict[str, str]:
        """libpq parameters every pool connection opens with: the session limits (as
        ``options``) and the TCP keepalives. A parameter the URL sets itself is left to it."""
        in_url = conninfo_to_dict(self.url)
        kwargs: dict[str, str] = {}
        keepalives = {
            "keepalives": 1,
            "keepalives_idle": self.keepalives_idle_s,
            "keepalives_interval": self.keepalives_interval_s,
            "keepalives_count": self.keepalives_count,
        }
        # 0: the operating system's default for that one.
        kwargs.update({k: str(v) for k, v in keepalives.items() if k not in in_url and v})
        limits = {
            "lock_timeout": self.lock_timeout_ms,
            "statement_timeout": self.statement_timeout_ms,
            "idle_in_transaction_session_timeout": self.idle_in_transaction_timeout_ms,
        }
        url_options = str(in_url.get("options", ""))
        ours = " ".join(
            f"-c {name}={value}" for name, value in limits.items() if name not in url_options
        )
        # Startup options apply before the first statement; the URL's own come last (they win).
        options = " ".join(part for part in (ours, url_options) if part)
        if options:
            kwargs["options"] = options
        return kwargs

    @property
    def redacted_url(self) -> str:
        """The URL as it may appear in logs and error messages."""
        return redact_url(self.url)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DatabaseSettings:
        """Read the settings from ``environ`` (default ``os.environ``); ConfigError if invalid."""
        env = os.environ if environ is None else environ
        url = database_url_from_env(env)
        min_size = _parse_int(env, ENV_MIN_CONNECTIONS, DEFAULT_MIN_CONNECTIONS, 0)
        max_size = _parse_int(env, ENV_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS, 1)
        limits = {
            field: _parse_int(env, variable, default, 0)
            for field, (variable, default) in _LIMIT_VARIABLES.items()
        }
        return cls(
            url=url,
            min_connections=_check_sizes(
                min_size, max_size, ENV_MIN_CONNECTIONS, ENV_MAX_CONNECTIONS
            ),
            max_connections=max_size,
            no_artifact_insert=_parse_bool(env, ENV_NO_ARTIFACT_INSERT, DEFAULT_NO_ARTIFACT_INSERT),
            **limits,
        )


#: The limit fields of DatabaseSettings: their variable and default.
_LIMIT_VARIABLES: dict[str, tuple[str, int]] = {
    "lock_timeout_ms": (ENV_LOCK_TIMEOUT_MS, DEFAULT_LOCK_TIMEOUT_MS),
    "statement_timeout_ms": (ENV_STATEMENT_TIMEOUT_MS, DEFAULT_STATEMENT_TIMEOUT_MS),
    "idle_in_transaction_timeout_ms": (
        ENV_IDLE_IN_TRANSACTION_TIMEOUT_MS,
        DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_MS,
    ),
    "keepalives_idle_s": (ENV_KEEPALIVES_IDLE_S, DEFAULT_KEEPALIVES_IDLE_S),
    "keepalives_interval_s": (ENV_KEEPALIVES_INTERVAL_S, DEFAULT_KEEPALIVES_INTERVAL_S),
    "keepalives_count": (ENV_KEEPALIVES_COUNT, DEFAULT_KEEPALIVES_COUNT),
}
