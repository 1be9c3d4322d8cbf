"""knowledge

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "knowledge_collections",
        sa.Column("collection_id", sa.String(length=40), nullable=False),
        sa.Column("workspace_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("embedder", sa.String(length=200), nullable=False),
        sa.Column("dimension", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=300), nullable=True),
        sa.Column("created_by_run", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.workspace_id"],
            name=op.f("fk_knowledge_collections_workspace_id_workspaces"),
        ),
        sa.PrimaryKeyConstraint("collection_id", name=op.f("pk_knowledge_collections")),
    )
    with op.batch_alter_table("knowledge_collections", schema=None) as batch_op:
        batch_op.create_index("ix_knowledge_collections_workspace_name", ["workspace_id", "name"], unique=True)

    op.create_table(
        "knowledge_documents",
        sa.Column("document_id", sa.String(length=40), nullable=False),
        sa.Column("workspace_id", sa.String(length=64), nullable=False),
        sa.Column("collection_id", sa.String(length=40), nullable=False),
        sa.Column("source", sa.String(length=1000), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("chars", sa.Integer(), nullable=False),
        sa.Column("chunk_count", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=300), nullable=True),
        sa.Column("created_by_run", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["collection_id"],
            ["knowledge_collections.collection_id"],
            name=op.f("fk_knowledge_documents_collection_id_knowledge_collections"),
        ),
        sa.PrimaryKeyConstraint("document_id", name=op.f("pk_knowledge_documents")),
    )
    with op.batch_alter_table("knowledge_documents", schema=None) as batch_op:
        batch_op.create_index("ix_knowledge_documents_collection_source", ["collection_id", "source"], unique=True)
        batch_op.create_index(
            "ix_knowledge_documents_workspace_collection", ["workspace_id", "collection_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("knowledge_documents", schema=None) as batch_op:
        batch_op.drop_index("ix_knowledge_documents_workspace_collection")
        batch_op.drop_index("ix_knowledge_documents_collection_source")
    op.drop_table("knowledge_documents")
    with op.batch_alter_table("knowledge_collections", schema=None) as batch_op:
        batch_op.drop_index("ix_knowledge_collections_workspace_name")
    op.drop_table("knowledge_collections")
