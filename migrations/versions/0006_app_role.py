"""Least privilege: the NOLOGIN role chem_app may read and append the log, nothing else.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26

chem_app gets, in this database only: USAGE on schema public; SELECT and INSERT on event_log
and workflow_step_artifacts; USAGE and SELECT on event_log's sequence; SELECT on
alembic_version (so that a process running as chem_app can see that the schema is at head and
skip migrating). No UPDATE, DELETE, TRUNCATE, REFERENCES or TRIGGER: a worker logging in as a
member of chem_app cannot change or remove a stored event, even without the 0005 triggers.
Give a login role these rights with ``CREATE ROLE chem_worker LOGIN PASSWORD '...' IN ROLE
chem_app``; migrations then run as the owner of the tables.

Roles are cluster-wide, databases are not: the role is created only when missing (creating it
needs CREATEROLE; a migrator without it finds the role made once by a superuser), and another
database creating it at the same moment is not an error. Every run first revokes whatever else
chem_app held on these objects, so a re-run restores exactly this set of rights.

The downgrade revokes the rights in this database only and leaves the role itself: other
databases of the cluster may still grant to it, and a role without rights here is harmless.
Drop it by hand (``DROP ROLE chem_app``) once no database uses it.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The application role (NOLOGIN): login roles become members of it (``IN ROLE chem_app``).
APP_ROLE = "chem_app"

UPGRADE = [
    f"""
    DO $$
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
            BEGIN
                CREATE ROLE {APP_ROLE} NOLOGIN;
            EXCEPTION
                -- created meanwhile by a migration of another database of the cluster
                WHEN duplicate_object OR unique_violation THEN NULL;
                WHEN insufficient_privilege THEN
                    RAISE EXCEPTION USING
                        ERRCODE = 'insufficient_privilege',
                        MESSAGE = 'role {APP_ROLE} is missing and '
                            || current_user || ' may not create it',
                        HINT = 'Create it once as a superuser: CREATE ROLE {APP_ROLE} NOLOGIN;';
            END;
        END IF;
    END
    $$
    """,
    # Exactly the rights below, whatever chem_app held before (a re-run restores them).
    f"REVOKE ALL ON TABLE event_log, workflow_step_artifacts, alembic_version FROM {APP_ROLE}",
    f"""
    DO $$
    BEGIN
        EXECUTE format(
            'REVOKE ALL ON SEQUENCE %s FROM {APP_ROLE}',
            pg_get_serial_sequence('event_log', 'seq')
        );
        EXECUTE format(
            'GRANT USAGE, SELECT ON SEQUENCE %s TO {APP_ROLE}',
            pg_get_serial_sequence('event_log', 'seq')
        );
    END
    $$
    """,
    f"GRANT USAGE ON SCHEMA public TO {APP_ROLE}",
    f"GRANT SELECT, INSERT ON TABLE event_log, workflow_step_artifacts TO {APP_ROLE}",
    f"GRANT SELECT ON TABLE alembic_version TO {APP_ROLE}",
]

DOWNGRADE = [
    # This database only; the role stays (see above). Nothing to do if it was dropped by hand.
    f"""
    DO $$
    BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
            REVOKE ALL ON TABLE event_log, workflow_step_artifacts, alembic_version
                FROM {APP_ROLE};
            EXECUTE format(
                'REVOKE ALL ON SEQUENCE %s FROM {APP_ROLE}',
                pg_get_serial_sequence('event_log', 'seq')
            );
            REVOKE ALL ON SCHEMA public FROM {APP_ROLE};
        END IF;
    END
    $$
    """,
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
