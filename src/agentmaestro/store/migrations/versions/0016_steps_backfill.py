"""steps: the rows of steps finished outside a worker (a person's answer, a rejection, a sub-run's result)

Before this revision such steps had their events but no ``steps`` row, so usage and ``runs show --steps`` missed
them and ``runs replay`` reports the difference. The rows are rebuilt from the events; nothing else changes.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from agentmaestro.store._ops import backfill_step_rows

    backfill_step_rows(op.get_bind())


def downgrade() -> None:
    """The rebuilt rows are true to the events: they stay."""
