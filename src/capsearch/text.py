"""Text fit to store and show: what people and models write is cleaned the same way on both databases.

PostgreSQL text cannot hold NUL (SQLite can), lone surrogates cannot be encoded at all, and invisible
format characters (U+202E turns "gpj.exe" around, zero-width spaces hide text) make a caption or file
name read differently from what it is. One function decides, so every database and path agrees.
"""

from __future__ import annotations

import posixpath
import unicodedata

# Cc: control characters (NUL included); Cf: invisible formatting (bidi overrides and isolates,
# zero-width space/joiners, BOM, soft hyphen); Cs: lone surrogates (from JSON "\ud800"), unencodable.
_DROPPED = frozenset({"Cc", "Cf", "Cs"})
MAX_FILENAME = 255


def clean_text(text: str) -> str:
    """NFC; control and invisible format characters removed; runs of whitespace (tabs and line breaks
    included) become one space; trimmed. May return "" when nothing visible was there."""
    # Whitespace first: a tab or line break separates words and must not glue them together.
    spaced = "".join(" " if c.isspace() else c for c in text)
    kept = "".join(c for c in spaced if unicodedata.category(c) not in _DROPPED)
    return " ".join(unicodedata.normalize("NFC", kept).split())


def clean_filename(name: str | None) -> str | None:
    """Keep a name fit for display: last path segment, no control or bidi-override characters."""
    if name is None:
        return None
    # No control characters, no invisible format characters such as U+202E, used to disguise names.
    text = clean_text(posixpath.basename(name.replace("\\", "/")))
    if text in ("", ".", ".."):
        return None
    return text[:MAX_FILENAME]
