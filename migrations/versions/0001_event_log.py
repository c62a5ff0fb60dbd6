"""event_log: the append-only log of every flow's events.

Revision ID: 0001
Revises:
Create Date: 2025-11-26

Constraint names are PostgreSQL's own defaults, so a table created earlier without explicit
names (by the older synchronous store) already has them and is left as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = [
    """
    CREATE TABLE IF NOT EXISTS event_log (
        seq        BIGSERIAL   NOT NULL,
        flow_id    UUID        NOT NULL,
        ts         TIMESTAMPTZ NOT NULL DEFAULT now(),
        event_type TEXT        NOT NULL,
        payload    JSONB       NOT NULL,
        CONSTRAINT event_log_pkey PRIMARY KEY (seq),
        CONSTRAINT event_log_event_type_check CHECK (event_type = lower(event_type))
    )
    """,
    # The table may predate this revision without the check: add it when missing.
    """
    DO $$
    BEGIN
        IF NOT EXISTS (
            SELECT 1 FROM pg_constraint
            WHERE conrelid = 'event_log'::regclass AND conname = 'event_log_event_type_check'
        ) THEN
            ALTER TABLE event_log
                ADD CONSTRAINT event_log_event_type_check CHECK (event_type = lower(event_type));
        END IF;
    END
    $$
    """,
    "CREATE INDEX IF NOT EXISTS event_log_flow_id_seq_idx ON event_log (flow_id, seq)",
]

DOWNGRADE = [
    # No CASCADE: whatever still depends on event_log belongs to a later revision.
    "DROP TABLE IF EXISTS event_log",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
