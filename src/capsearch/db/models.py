"""ORM tables. Alembic owns the schema; these classes must match the latest migration."""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Enum,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable constraint names so Alembic migrations can refer to them on both databases.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ImageStatus(enum.StrEnum):
    RECEIVED = "received"
    CAPTIONING = "captioning"
    READY = "ready"
    FAILED = "failed"


class Image(Base):
    __tablename__ = "images"

    # SQLite only autoincrements an INTEGER PRIMARY KEY; BigInteger elsewhere.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    mime: Mapped[str] = mapped_column(String(32))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    filename: Mapped[str | None] = mapped_column(String(255))
    # The model's caption; a person's edit goes to user_caption and wins (see `effective_caption`).
    caption: Mapped[str | None] = mapped_column(Text)
    caption_model: Mapped[str | None] = mapped_column(String(200))
    user_caption: Mapped[str | None] = mapped_column(Text)
    status: Mapped[ImageStatus] = mapped_column(
        Enum(
            ImageStatus,
            name="image_status",
            native_enum=False,
            create_constraint=True,
            length=16,
            values_callable=lambda e: [m.value for m in e],
        ),
        default=ImageStatus.RECEIVED,
    )
    error: Mapped[str | None] = mapped_column(Text)
    # Distributed mode: the caption job a model worker must present to write this row's caption.
    caption_job: Mapped[str | None] = mapped_column(String(36))
    # Indexed: a search narrowed to an upload-date range asks for the ids uploaded in it.
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now(), index=True
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow, server_default=func.now()
    )

    @property
    def effective_caption(self) -> str | None:
        """What is shown and searched: the person's caption if they wrote one, else the model's."""
        return self.user_caption if self.user_caption is not None else self.caption


class ImageEmbedding(Base):
    """One vector per image and embedding model, so the search index can be rebuilt without the model."""

    __tablename__ = "image_embeddings"

    image_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"),
        ForeignKey("images.id", ondelete="CASCADE"),
        primary_key=True,
    )
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32, little-endian, `dim` values
    # The exact text that was embedded: a caption changed without re-embedding is detectable.
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now()
    )


class IndexChange(Base):
    """Distributed mode: one row per change to an image's embedding, written in the same transaction.
    Web replicas tail it by `seq` so each one's search index follows the database."""

    __tablename__ = "index_changes"

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    image_id: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now(), index=True
    )
