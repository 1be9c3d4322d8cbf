"""audit_log: keyed entries (HMAC under a key from the keyring); earlier entries stay scheme 1

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Adding columns rewrites no row (PostgreSQL's append-only trigger is not involved): existing
    # entries become scheme 1 (plain SHA-256). Each chain that has any is then sealed with a keyed
    # audit.seal entry (under this process's keyring), which vouches for them from now on.
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("scheme", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("key_id", sa.String(length=16), nullable=True))
    from agentmaestro.store import _audit

    _audit.seal(op.get_bind(), "migration:0013", time.time())


def downgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("key_id")
        batch.drop_column("scheme")
