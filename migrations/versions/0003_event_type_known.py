"""event_log.event_type is one of the seven kinds the engine emits.

Revision ID: 0003
Revises: 0002
Create Date: 2025-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = [
    """
    DO $$
    BEGIN
        IF NOT EXISTS (
            SELECT 1 FROM pg_constraint
            WHERE conrelid = 'event_log'::regclass AND conname = 'event_log_event_type_known'
        ) THEN
            ALTER TABLE event_log ADD CONSTRAINT event_log_event_type_known CHECK (
                event_type IN (
                    'flowinitialized',
                    'stepstarted',
                    'stepfinished',
                    'stepfailed',
                    'stepsignal',
                    'propertypreferenceassigned',
                    'flowcompleted'
                )
            );
        END IF;
    END
    $$
    """,
]

DOWNGRADE = [
    "ALTER TABLE event_log DROP CONSTRAINT IF EXISTS event_log_event_type_known",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
