"""Caption text clean-up shared by the torch and OpenVINO captioners (no torch import here)."""

from __future__ import annotations

import re

# BLIP base was trained on web captions full of the mangled word "arafed"/"araffe" (from "a raffed"),
# and it often starts its output with it. It carries no meaning, so we drop it.
_ARTIFACT = re.compile(r"^ar+af+e*d?\b\s*", re.IGNORECASE)
_SPACES = re.compile(r"\s+")


def tidy_caption(text: str) -> str:
    """Collapse whitespace and drop BLIP's leading "arafed"-style artifact (unless nothing else is left)."""
    text = _SPACES.sub(" ", text).strip()
    without = _ARTIFACT.sub("", text, count=1).strip()
    return without or text
