"""event_log.flow_seq: the event's 0-based position in its flow; (flow_id, flow_seq) is unique.

Revision ID: 0004
Revises: 0003
Create Date: 2025-11-26

(flow_id, flow_seq) is the idempotency key: a redelivered event lands on its own position.
Rows written before this revision (by the older synchronous store, which had no flow_seq) are
numbered in the order they were stored: row_number() over the flow, by seq, minus one.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = [
    # Held until this revision commits: no row can arrive without a position in between.
    "LOCK TABLE event_log IN ACCESS EXCLUSIVE MODE",
    "ALTER TABLE event_log ADD COLUMN IF NOT EXISTS flow_seq INT",
    # Backfill only the flows that have unnumbered rows (none, when run again).
    """
    UPDATE event_log AS e
    SET flow_seq = numbered.position
    FROM (
        SELECT seq, row_number() OVER (PARTITION BY flow_id ORDER BY seq) - 1 AS position
        FROM event_log
        WHERE flow_id IN (SELECT flow_id FROM event_log WHERE flow_seq IS NULL)
    ) AS numbered
    WHERE e.seq = numbered.seq AND e.flow_seq IS NULL
    """,
    "ALTER TABLE event_log ALTER COLUMN flow_seq SET NOT NULL",
    """
    DO $$
    BEGIN
        IF NOT EXISTS (
            SELECT 1 FROM pg_constraint
            WHERE conrelid = 'event_log'::regclass AND conname = 'event_log_flow_seq_check'
        ) THEN
            ALTER TABLE event_log ADD CONSTRAINT event_log_flow_seq_check CHECK (flow_seq >= 0);
        END IF;
        IF NOT EXISTS (
            SELECT 1 FROM pg_constraint
            WHERE conrelid = 'event_log'::regclass AND conname = 'event_log_flow_id_flow_seq_key'
        ) THEN
            ALTER TABLE event_log
                ADD CONSTRAINT event_log_flow_id_flow_seq_key UNIQUE (flow_id, flow_seq);
        END IF;
    END
    $$
    """,
]

DOWNGRADE = [
    "ALTER TABLE event_log DROP CONSTRAINT IF EXISTS event_log_flow_id_flow_seq_key",
    "ALTER TABLE event_log DROP CONSTRAINT IF EXISTS event_log_flow_seq_check",
    "ALTER TABLE event_log DROP COLUMN IF EXISTS flow_seq",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
