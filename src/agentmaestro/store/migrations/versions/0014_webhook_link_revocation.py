"""webhooks.links_valid_from: disabling a webhook or changing its target revokes the approval links it carried

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL: nothing revoked yet. A disabled webhook's links are refused whatever this holds.
    with op.batch_alter_table("webhooks") as batch:
        batch.add_column(sa.Column("links_valid_from", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhooks") as batch:
        batch.drop_column("links_valid_from")
