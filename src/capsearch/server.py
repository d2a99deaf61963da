"""How capsearch runs under uvicorn — one place, so `serve`, the benchmarks and the browser test agree."""

from __future__ import annotations

from typing import Any

import uvicorn
from fastapi import FastAPI

# The socket mostly carries image bytes that are already compressed: permessage-deflate would burn
# CPU on both ends for nothing (measured: it cut loopback upload throughput from hundreds of MB/s
# to about 25 MB/s).
WS_PER_MESSAGE_DEFLATE = False
# The protocol's largest frame is a 256 KiB chunk plus its header; the app enforces its own
# (smaller, configurable) limit and closes with 1009, this is only the transport's backstop.
WS_MAX_SIZE = 1 << 20


def uvicorn_config(
    app: FastAPI, *, host: str, port: int, log_level: str = "info", **extra: Any
) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        ws_max_size=WS_MAX_SIZE,
        ws_per_message_deflate=WS_PER_MESSAGE_DEFLATE,
        **extra,
    )
