"""The workers' login role: a LOGIN member of ``chem_app`` (revision 0006), made idempotently.

``chem-persistence migrate --worker-role chem_worker [--worker-password-file PATH]`` runs
``ensure_login_role`` as the owner right after the migrations:

- the role is created when missing (``LOGIN``, member of ``chem_app``, nothing else);
  migrators of one database take turns (an advisory lock), and a migrator of another
  database of the cluster changing the same role at the same moment is retried, not an error;
- an existing role is kept, made ``LOGIN`` and a member of ``chem_app`` if it was not; one that
  holds more than a worker needs (superuser, CREATEROLE, CREATEDB, REPLICATION, BYPASSRLS, or
  the owner of the event log itself) is refused, never silently narrowed or widened;
- the password, when given, is hashed here with libpq's ``PQencryptPasswordConn`` (the
  server's ``password_encryption``, SCRAM-SHA-256 by default) and only the verifier is sent:
  the cleartext never reaches the server, its logs or ``pg_stat_activity``, and nothing here
  prints or logs it.

Re-running it changes nothing but the password's salt.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

import psycopg
from psycopg import errors, sql
from psycopg.rows import TupleRow

from chem_persistence.eventlog.config import redact_text, redact_url

log = logging.getLogger(__name__)

#: The NOLOGIN role of revision 0006 whose rights a worker's login role inherits.
APP_ROLE = "chem_app"
#: A role name this command accepts: a plain lower-case SQL identifier.
ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
#: Role attributes a worker never needs: pg_roles' column, and the attribute's SQL name.
EXCESS_ATTRIBUTES = {
    "rolsuper": "SUPERUSER",
    "rolcreaterole": "CREATEROLE",
    "rolcreatedb": "CREATEDB",
    "rolreplication": "REPLICATION",
    "rolbypassrls": "BYPASSRLS",
}
#: The advisory lock (session level) migrators of one database take while they set roles up:
#: the ASCII bytes of "chemrole". Migrators of other databases are not serialized by it (roles
#: are cluster-wide, advisory locks are not): their collisions are retried instead.
ROLE_LOCK_KEY = 0x63_68_65_6D_72_6F_6C_65
#: Attempts of the whole set-up when another database's migrator changes the role meanwhile.
ATTEMPTS = 5


class RoleRefused(ValueError):
    """The login role cannot be made safely (bad name, or an existing role with more rights)."""


@dataclass(frozen=True)
class RoleResult:
    role: str
    created: bool
    granted: bool  # membership of chem_app added now
    login_enabled: bool  # LOGIN added to an existing role
    password_set: bool


def ensure_login_role(url: str, role: str, password: str | None) -> RoleResult:
    """Make ``role`` a LOGIN member of ``chem_app`` in the cluster of ``url`` (idempotent)."""
    if not ROLE_NAME.fullmatch(role) or role == APP_ROLE or role.startswith("pg_"):
        raise RoleRefused(
            f"--worker-role {role!r}: give a plain lower-case role name other than {APP_ROLE}"
        )
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", [ROLE_LOCK_KEY])
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    return _ensure(conn, role, password)
                except (errors.InternalError_, errors.DuplicateObject) as exc:
                    # "tuple concurrently updated": another database's migrator, same role
                    if attempt == ATTEMPTS or not _concurrent(exc):
                        raise
                    time.sleep(0.05 * attempt)
            raise AssertionError("unreachable")
    except psycopg.Error as exc:
        # The verifier may appear in a failed ALTER ROLE's message; the cleartext never does.
        text = redact_text(str(exc).strip(), url)
        if password:
            text = text.replace(password, "***")
        log.error("action=worker_role_failed role=%s url=%s error=%s", role, redact_url(url), text)
        raise


def _ensure(conn: psycopg.Connection[TupleRow], role: str, password: str | None) -> RoleResult:
    ident = sql.Identifier(role)
    if not _exists(conn, APP_ROLE):
        raise RoleRefused(f"role {APP_ROLE} is missing: run the migrations (revision 0006) first")
    current = conn.execute("SELECT current_user").fetchone()
    if current is not None and current[0] == role:
        raise RoleRefused(f"--worker-role {role}: that is the role migrating (the owner)")
    created = False
    if not _exists(conn, role):
        try:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(ident, sql.Identifier(APP_ROLE))
            )
            created = True
        except (errors.DuplicateObject, errors.UniqueViolation):
            pass  # created meanwhile by another migrator: check it like any existing role
    _refuse_excess(conn, role)
    login_enabled = False
    row = conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", [role]).fetchone()
    if row is not None and not row[0]:
        conn.execute(sql.SQL("ALTER ROLE {} LOGIN").format(ident))
        login_enabled = True
    granted = False
    if not _member(conn, role):
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(APP_ROLE), ident))
        granted = True
    if password is not None:
        verifier = conn.pgconn.encrypt_password(password.encode(), role.encode())
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(ident, sql.Literal(verifier.decode()))
        )
    log.info(
        "action=worker_role role=%s created=%s granted=%s login_enabled=%s password_set=%s",
        role,
        created,
        granted,
        login_enabled,
        password is not None,
    )
    return RoleResult(role, created, granted, login_enabled, password is not None)


def _concurrent(exc: psycopg.Error) -> bool:
    return isinstance(exc, errors.DuplicateObject) or "concurrently" in str(exc)


def _exists(conn: psycopg.Connection[TupleRow], role: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone() is not None


def _member(conn: psycopg.Connection[TupleRow], role: str) -> bool:
    """Whether ``role`` is a direct member of chem_app and inherits its rights."""
    row = conn.execute(
        "SELECT pg_has_role(%s, %s, 'USAGE')"
        " AND EXISTS (SELECT 1 FROM pg_auth_members m"
        "   WHERE m.roleid = %s::regrole AND m.member = %s::regrole)",
        [role, APP_ROLE, APP_ROLE, role],
    ).fetchone()
    return bool(row and row[0])


def _refuse_excess(conn: psycopg.Connection[TupleRow], role: str) -> None:
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in EXCESS_ATTRIBUTES)
    row = conn.execute(
        sql.SQL("SELECT {} FROM pg_roles WHERE rolname = %s").format(columns), [role]
    ).fetchone()
    if row is None:
        raise RoleRefused(f"role {role} vanished while it was being set up")
    excess = [
        attribute for attribute, value in zip(EXCESS_ATTRIBUTES.values(), row, strict=True) if value
    ]
    owned = conn.execute(
        "SELECT count(*) FROM pg_class c"
        " WHERE c.relnamespace = 'public'::regnamespace AND c.relowner = %s::regrole",
        [role],
    ).fetchone()
    if owned is not None and owned[0]:
        excess.append("owner of tables in this database")
    if excess:
        raise RoleRefused(
            f"role {role} exists with more rights than a worker needs ({', '.join(excess)}):"
            " give the workers a role of their own"
        )
