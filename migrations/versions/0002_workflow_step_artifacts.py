"""workflow_step_artifacts: artifact bodies, keyed by their BLAKE3 hash, and their first producer.

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = [
    """
    CREATE TABLE IF NOT EXISTS workflow_step_artifacts (
        artifact_hash   TEXT   NOT NULL,
        kind            TEXT   NOT NULL,
        payload         JSONB  NOT NULL,
        metadata        JSONB  NULL,
        produced_in_seq BIGINT NOT NULL,
        CONSTRAINT workflow_step_artifacts_pkey PRIMARY KEY (artifact_hash),
        CONSTRAINT workflow_step_artifacts_artifact_hash_check CHECK (length(artifact_hash) = 64),
        CONSTRAINT workflow_step_artifacts_produced_in_seq_fkey
            FOREIGN KEY (produced_in_seq) REFERENCES event_log (seq)
    )
    """,
    """
    CREATE INDEX IF NOT EXISTS workflow_step_artifacts_produced_in_seq_idx
        ON workflow_step_artifacts (produced_in_seq)
    """,
]

DOWNGRADE = [
    "DROP TABLE IF EXISTS workflow_step_artifacts",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
