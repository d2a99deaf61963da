"""search: image_embeddings table, user_caption column

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("user_caption", sa.Text(), nullable=True))
    op.create_table(
        "image_embeddings",
        sa.Column("image_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("image_id", "model", name="pk_image_embeddings"),
        # Deleting an image deletes its vectors in the same statement; nothing can be orphaned.
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name="fk_image_embeddings_image_id_images",
            ondelete="CASCADE",
        ),
    )
    # The index is rebuilt per model: "all vectors of model M" must not scan other models' rows.
    op.create_index("ix_image_embeddings_model", "image_embeddings", ["model"])


def downgrade() -> None:
    op.drop_index("ix_image_embeddings_model", table_name="image_embeddings")
    op.drop_table("image_embeddings")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("user_caption")
