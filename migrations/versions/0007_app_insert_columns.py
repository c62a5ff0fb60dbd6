"""chem_app may INSERT event_log rows only through their data columns, never an explicit seq.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

0006 granted INSERT on the whole of event_log: a member of chem_app could write a row with an
explicit ``seq`` ahead of the sequence, and every later append would then collide on
``event_log_pkey`` when the sequence reaches it. Here the table-level INSERT is replaced by
INSERT on the columns an append writes (flow_id, flow_seq, ts, event_type, payload): ``seq``
always comes from its sequence (a column default needs no INSERT right on the column, only
USAGE on the sequence, which 0006 grants). SELECT stays table-wide (``RETURNING seq`` reads it).

A column added by a later revision needs its own ``GRANT INSERT (column)`` there.

Re-runnable: the table-level REVOKE also removes any column-level INSERT, so a re-run restores
exactly this set. The downgrade gives back the table-level INSERT of 0006. Both do nothing when
the role was dropped by hand.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APP_ROLE = "chem_app"
#: The columns an append writes; ``seq`` is deliberately not among them.
INSERT_COLUMNS = ("flow_id", "flow_seq", "ts", "event_type", "payload")


def _if_role_exists(*statements: str) -> str:
    body = "\n".join(f"        {statement};" for statement in statements)
    return f"""
    DO $$
    BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
{body}
        END IF;
    END
    $$
    """


UPGRADE = [
    _if_role_exists(
        f"REVOKE INSERT ON TABLE event_log FROM {APP_ROLE}",
        f"GRANT INSERT ({', '.join(INSERT_COLUMNS)}) ON TABLE event_log TO {APP_ROLE}",
    ),
]

DOWNGRADE = [
    _if_role_exists(
        f"REVOKE INSERT ON TABLE event_log FROM {APP_ROLE}",
        f"GRANT INSERT ON TABLE event_log TO {APP_ROLE}",
    ),
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
