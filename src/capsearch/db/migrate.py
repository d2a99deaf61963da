"""Run Alembic programmatically so `capsearch migrate`, `make migrate` and the tests share one path."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from capsearch.db.session import create_engine, normalise_url


def _alembic_dir() -> Path:
    candidates = [
        os.environ.get("CAPSEARCH_ALEMBIC_DIR"),
        # Source checkout / editable install: <repo>/src/capsearch/db/migrate.py → <repo>/alembic
        str(Path(__file__).resolve().parents[3] / "alembic"),
        str(Path.cwd() / "alembic"),
    ]
    for c in candidates:
        if c and (Path(c) / "env.py").is_file():
            return Path(c)
    raise FileNotFoundError("alembic/ migrations directory not found; set CAPSEARCH_ALEMBIC_DIR")


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_alembic_dir()))
    cfg.attributes["url"] = normalise_url(url)
    cfg.attributes["configure_logging"] = False
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Blocking: call from a thread (or a CLI) — Alembic's env runs its own event loop."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


async def current_revision(url: str) -> str | None:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:

            def _current(sync_conn: Connection) -> str | None:
                return MigrationContext.configure(sync_conn).get_current_revision()

            return await conn.run_sync(_current)
    finally:
        await engine.dispose()


def current_revision_sync(url: str) -> str | None:
    return asyncio.run(current_revision(url))
