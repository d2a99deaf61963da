"""Jinja2 templates shared by the page and the WebSocket fragments, and where the web assets live."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi.templating import Jinja2Templates


def web_dir() -> Path:
    candidates = [
        os.environ.get("CAPSEARCH_WEB_DIR"),
        # Source checkout / editable install: <repo>/src/capsearch/templating.py → <repo>/web
        str(Path(__file__).resolve().parents[2] / "web"),
        str(Path.cwd() / "web"),
    ]
    for c in candidates:
        if c and (Path(c) / "templates").is_dir():
            return Path(c)
    raise FileNotFoundError("web/ directory not found; set CAPSEARCH_WEB_DIR")


@lru_cache
def templates() -> Jinja2Templates:
    t = Jinja2Templates(directory=str(web_dir() / "templates"))
    t.env.globals["size_mb"] = lambda n: f"{n / (1024 * 1024):.0f} MB"
    t.env.globals["uploaded"] = uploaded
    return t


def uploaded(value: str | datetime) -> dict[str, str]:
    """An upload time as a card shows it: `iso` for <time datetime>, `day` and `full` in UTC.

    A fragment is rendered once for every open page, so it cannot know each reader's time zone:
    it says UTC, and the page's local-dates.js rewrites both texts in the browser's own zone."""
    when = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    when = (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)
    day = f"{when.day} {when:%b %Y}"
    return {
        "iso": when.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "day": day,
        "full": f"{day}, {when:%H:%M} UTC",
    }


def render(name: str, **context: Any) -> str:
    """Render a template to a string (WebSocket fragments use the same templates as the page)."""
    return templates().env.get_template(name).render(**context)
