"""distributed mode: the caption job a row waits for, and the ordered feed of index changes

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The job a model worker must present to write the caption: a stale job (the image was deleted
    # and re-uploaded, or captioned again) finds another token and writes nothing.
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("caption_job", sa.String(36), nullable=True))
    # Written in the same transaction as each change to an embedding: web replicas tail it in order,
    # so every replica's search index follows the database.
    op.create_table(
        "index_changes",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("image_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_index("ix_index_changes_created_at", "index_changes", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_index_changes_created_at", table_name="index_changes")
    op.drop_table("index_changes")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("caption_job")
