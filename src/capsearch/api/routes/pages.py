"""The HTML page and its static assets.

`/static/*` serves `web/static` (a fixed set of file types; `AssetFiles`, mounted by `create_app`
after the routes); `/static/vendor/*` serves an explicit allow-list of files from `web/node_modules`
(installed by `npm ci --prefix web`, which `make run`, `make demo` and `make test` do), so htmx is
never copied into the repository.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from fastapi import APIRouter, HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from capsearch.api.routes import ui
from capsearch.api.routes.ui import PageFiltersIn, search_context
from capsearch.deps import LibraryDep, PageSearchQuotaDep, SearchServiceDep, SettingsDep
from capsearch.shapes import COLLECTION_PAGE_SIZE, ImageOut
from capsearch.templating import templates, web_dir

router = APIRouter(include_in_schema=False)
# The page's own htmx endpoints (/ui/...) come with the page wherever it is mounted.
router.include_router(ui.router)


# URL name under /static/vendor/ → path inside web/node_modules. Nothing else there is served.
VENDOR_FILES: dict[str, str] = {
    "htmx.min.js": "htmx.org/dist/htmx.min.js",
    "ws.js": "htmx-ext-ws/ws.js",
    # The browser build: its WebAssembly is inlined, so this one file is all hash-worker.js loads.
    "hash-wasm-sha256.js": "hash-wasm/dist/sha256.umd.min.js",
}

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "media-src 'self' blob:; connect-src 'self'; worker-src 'self'; frame-ancestors 'none'; "
    "base-uri 'self'; form-action 'self'"
)
# A dedicated worker runs under the policy its own script is served with, not the page's. The hash
# worker's: nothing but same-origin scripts (its importScripts) and the compiling of WebAssembly
# (hash-wasm), which the page's own policy does not allow.
WORKER_CSP = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'"
WORKERS = {"js/hash-worker.js"}

TYPE_NAMES = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WebP", "image/gif": "GIF"}


def human_types(mimes: list[str]) -> str:
    """["image/jpeg", "image/png", "image/webp"] → "JPEG, PNG or WebP"."""
    names = [TYPE_NAMES.get(m, m.split("/")[-1].upper()) for m in mimes]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def human_bytes(n: int) -> str:
    mb = n / (1024 * 1024)
    return f"{mb:.0f} MB" if mb >= 1 and mb == int(mb) else (f"{mb:.1f} MB" if mb >= 1 else f"{n // 1024} KB")


@router.get("/", response_class=HTMLResponse)
async def index(
    request: Request,
    settings: SettingsDep,
    images: LibraryDep,
    search: SearchServiceDep,
    quota: PageSearchQuotaDep,
    filters: PageFiltersIn,
    q: str = "",
) -> Response:
    items, total = await images.page(COLLECTION_PAGE_SIZE, None)
    # `/?q=&sort=&from=&to=&tz=` is where the search box and its controls leave the address bar: a
    # reload shows the same results. It is a search like any other (rate limited too); a refusal
    # (a bad date range included) shows in the results, the page still loads.
    results = (await search_context(search, q, quota, filters))[0] if q else None
    limits = settings.limits
    response = templates().TemplateResponse(
        request,
        "index.html",
        {
            "images": [ImageOut.of(i).model_dump(mode="json") for i in items],
            "total": total,
            "limits": {
                "max_bytes": limits.max_image_bytes,
                "types": limits.allowed_types,
                "text": f"{human_types(limits.allowed_types)}, up to {human_bytes(limits.max_image_bytes)}",
            },
            "max_parallel": settings.uploads.max_parallel,
            "query": q,
            "filters": {"sort": filters.sort, "from": filters.from_, "to": filters.to, "tz": filters.tz},
            "results": results,
            "idle_seconds": settings.gallery.idle_seconds,
        },
    )
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/static/vendor/{name}")
async def vendor(name: str) -> FileResponse:
    rel = VENDOR_FILES.get(name)
    path = web_dir() / "node_modules" / rel if rel else None
    if path is None or not path.is_file():
        raise HTTPException(404, f"No vendor file {name!r}; run `npm ci --prefix web` (make does it).")
    return FileResponse(path, media_type="text/javascript", headers={"Cache-Control": "no-cache"})


STATIC_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",  # the idle gallery's bundled example photos
}


# Every asset's path is plain ASCII; anything else (a NUL, "..", a backslash) is refused before the
# file system sees it.
STATIC_PATH = re.compile(r"(?:[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}/){0,4}[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")


class AssetFiles(StaticFiles):
    """`web/static` through Starlette's StaticFiles (ETag and Last-Modified with 304 answers, byte
    ranges), limited to plain paths of the page's file types, revalidated on every use (`no-cache`)
    so a new version of a script is seen at once. Mounted after the routes: /static/vendor/ wins."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if not STATIC_PATH.fullmatch(path) or PurePosixPath(path).suffix not in STATIC_TYPES:
            raise HTTPException(404, "No such file.")
        response = await super().get_response(path, scope)
        response.headers["Content-Type"] = STATIC_TYPES[PurePosixPath(path).suffix]
        response.headers["Cache-Control"] = "no-cache"
        if path in WORKERS:
            response.headers["Content-Security-Policy"] = WORKER_CSP
        return response


def static_files() -> AssetFiles:
    return AssetFiles(directory=web_dir() / "static")
