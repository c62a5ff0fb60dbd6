"""event_log is append-only: UPDATE, DELETE and TRUNCATE are rejected by triggers.

Revision ID: 0005
Revises: 0004
Create Date: 2025-11-26

The error is SQLSTATE P0001 (raise_exception) with the message
"event_log is append-only: <UPDATE|DELETE|TRUNCATE> rejected". ALTER and DROP are not
affected (migrations and their downgrades still work).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = [
    """
    CREATE OR REPLACE FUNCTION event_log_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION USING
            ERRCODE = 'P0001',
            MESSAGE = 'event_log is append-only: ' || TG_OP || ' rejected',
            HINT = 'Stored events are never changed or removed; append new events instead.';
    END
    $$
    """,
    """
    DO $$
    BEGIN
        IF NOT EXISTS (
            SELECT 1 FROM pg_trigger
            WHERE tgrelid = 'event_log'::regclass AND tgname = 'event_log_append_only_row'
        ) THEN
            CREATE TRIGGER event_log_append_only_row
                BEFORE UPDATE OR DELETE ON event_log
                FOR EACH ROW EXECUTE FUNCTION event_log_append_only();
        END IF;
        IF NOT EXISTS (
            SELECT 1 FROM pg_trigger
            WHERE tgrelid = 'event_log'::regclass AND tgname = 'event_log_append_only_truncate'
        ) THEN
            CREATE TRIGGER event_log_append_only_truncate
                BEFORE TRUNCATE ON event_log
                FOR EACH STATEMENT EXECUTE FUNCTION event_log_append_only();
        END IF;
    END
    $$
    """,
]

DOWNGRADE = [
    "DROP TRIGGER IF EXISTS event_log_append_only_truncate ON event_log",
    "DROP TRIGGER IF EXISTS event_log_append_only_row ON event_log",
    "DROP FUNCTION IF EXISTS event_log_append_only()",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
