"""Run Alembic programmatically so `capsearch migrate`, `make migrate` and the tests share one path.

Alembic is imported only where it runs: importing it costs 0.2-0.4 s (it loads every dialect's DDL
module), which `capsearch serve` would otherwise pay on every start just to compare two revisions.
"""

from __future__ import annotations

import ast
import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from capsearch.db.session import create_engine, normalise_url

if TYPE_CHECKING:
    from alembic.config import Config

VERSION_TABLE = "alembic_version"  # Alembic's default; alembic/env.py does not change it


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
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_alembic_dir()))
    cfg.attributes["url"] = normalise_url(url)
    cfg.attributes["configure_logging"] = False
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Blocking: call from a thread (or a CLI) — Alembic's env runs its own event loop."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def head_revision(url: str) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


async def current_revision(url: str) -> str | None:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:

            def _current(sync_conn: Connection) -> str | None:
                # What MigrationContext.get_current_revision() reads, without importing Alembic.
                if not inspect(sync_conn).has_table(VERSION_TABLE):
                    return None
                rows = sync_conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
                if len(rows) > 1:
                    raise RuntimeError(f"the database has several schema heads ({', '.join(rows)})")
                return str(rows[0]) if rows else None

            return await conn.run_sync(_current)
    finally:
        await engine.dispose()


def current_revision_sync(url: str) -> str | None:
    return asyncio.run(current_revision(url))


def script_head() -> str | None:
    """The head revision read straight from the version scripts (no Alembic import), or None when the
    scripts are not one simple chain: then only Alembic's own answer (`head_revision`) will do."""
    revisions: dict[str, str | None] = {}
    for path in sorted((_alembic_dir() / "versions").glob("*.py")):
        values = _constants(ast.parse(path.read_text(encoding="utf-8")))
        revision, down = values.get("revision"), values.get("down_revision")
        if not isinstance(revision, str) or not (down is None or isinstance(down, str)):
            return None  # a merge (a tuple of parents) or something unusual
        revisions[revision] = down
    heads = set(revisions) - {down for down in revisions.values() if down is not None}
    return heads.pop() if len(heads) == 1 else None


def _constants(module: ast.Module) -> dict[str, object]:
    """Top-level `name = <literal>` and `name: type = <literal>` assignments of a module."""
    values: dict[str, object] = {}
    for node in module.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name):
            try:
                values[target.id] = ast.literal_eval(value)
            except ValueError:
                continue
    return values
