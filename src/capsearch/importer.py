"""`capsearch import DIR`: bulk import through the same REST API a person's uploads use.

Going through the API (of the running server when one answers, else of an in-process app over the
same settings) means one intake, one store, one caption queue and one search index: open pages see
imported images arrive live, and nothing can drift out of step with the server's index.
Duplicates are skipped by hash before any bytes are sent, so a second run only adds what is new,
and an interrupted run continues where it stopped.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from capsearch.config import LimitSettings, Settings
from capsearch.hosts import WILDCARD_BINDS

# A busy server (503) or a rate limit (429) is waited out and the batch offered again, this many times.
RETRY_LIMIT = 8
RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class Rejected:
    path: Path
    code: str
    detail: str


@dataclass
class ImportReport:
    found: int = 0
    added: int = 0
    duplicates: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    # Stored, but the model failed on them: sending the same file again retries the caption.
    caption_failed: list[Rejected] = field(default_factory=list)

    @property
    def done(self) -> int:
        return self.added + self.duplicates + len(self.rejected)


def find_files(root: Path) -> list[Path]:
    """Every regular file below `root`, in a stable order; hidden files and folders are left out."""
    if root.is_file():
        return [root]
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


@dataclass(frozen=True)
class _Candidate:
    path: Path
    data: bytes
    sha256: str


def _read(path: Path, limit: int) -> tuple[int, bytes | None, str]:
    """Size, bytes and hash of a file; bytes are not read when the file is over `limit`."""
    size = path.stat().st_size
    if size > limit:
        return size, None, ""
    data = path.read_bytes()
    return len(data), data, hashlib.sha256(data).hexdigest()


class Importer:
    def __init__(
        self,
        client: httpx.AsyncClient,
        limits: LimitSettings,
        *,
        batch_size: int = 8,
        concurrency: int = 2,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        self.client = client
        self.limits = limits
        self.batch_size = max(1, min(batch_size, limits.max_files_per_request))
        self.concurrency = max(1, concurrency)
        self.on_progress = on_progress or (lambda _n: None)
        self.report = ImportReport()

    async def run(self, files: Sequence[Path]) -> ImportReport:
        self.report.found = len(files)
        queue: asyncio.Queue[Path] = asyncio.Queue()
        for f in files:
            queue.put_nowait(f)
        await asyncio.gather(*(self._worker(queue) for _ in range(self.concurrency)))
        return self.report

    async def _worker(self, queue: asyncio.Queue[Path]) -> None:
        while not queue.empty():
            batch: list[_Candidate] = []
            while len(batch) < self.batch_size and not queue.empty():
                candidate = await self._prepare(queue.get_nowait())
                if candidate is not None:
                    batch.append(candidate)
            if batch:
                await self._send(batch)

    async def _prepare(self, path: Path) -> _Candidate | None:
        """Read and hash one file; settle it here when it is too big, unreadable or already stored."""
        limit = self.limits.max_image_bytes
        try:
            size, data, sha = await asyncio.to_thread(_read, path, limit)
        except OSError as e:
            self._reject(path, "unreadable", f"could not read the file: {e.strerror or e}")
            return None
        if data is None:
            mb = 1024 * 1024
            self._reject(path, "too_large", f"{size / mb:.1f} MB; the limit is {limit / mb:g} MB.")
            return None
        r = await self.client.get(f"/api/images/by-sha256/{sha}")
        if r.status_code == 200:
            self.report.duplicates += 1
            self.on_progress(1)
            return None
        return _Candidate(path, data, sha)

    async def _send(self, batch: list[_Candidate]) -> None:
        files = [("files", (c.path.name, c.data, "application/octet-stream")) for c in batch]
        for attempt in range(RETRY_LIMIT):
            r = await self.client.post("/api/images", params={"wait": "true"}, files=files)
            if r.status_code not in RETRY_STATUSES or attempt == RETRY_LIMIT - 1:
                break
            await asyncio.sleep(_retry_delay(r, attempt))
        body: dict[str, Any] = r.json()
        items: list[dict[str, Any]] = body.get("items") or []
        if len(items) != len(batch):
            # The request as a whole was refused (not one outcome per file): the same reason for all.
            for c in batch:
                self._reject(c.path, str(body.get("code", "error")), str(body.get("detail", r.text)))
            return
        for c, item in zip(batch, items, strict=True):
            if item.get("ok"):
                image = item.get("image") or {}
                if item.get("duplicate"):
                    self.report.duplicates += 1
                else:
                    self.report.added += 1
                    if image.get("status") == "failed":
                        self.report.caption_failed.append(
                            Rejected(c.path, "caption_failed", str(image.get("error")))
                        )
                self.on_progress(1)
            else:
                err = item.get("error") or {}
                self._reject(c.path, str(err.get("code", "error")), str(err.get("detail", "")))

    def _reject(self, path: Path, code: str, detail: str) -> None:
        self.report.rejected.append(Rejected(path, code, detail))
        self.on_progress(1)


def _retry_delay(r: httpx.Response, attempt: int) -> float:
    """How long to wait before offering a refused batch again, at most 30 s."""
    try:
        after = max(0.0, float(r.headers.get("retry-after", "1")))
    except ValueError:  # an HTTP date instead of seconds: not something this server sends
        after = 1.0
    # A rate limit says exactly when a token is back; a full caption queue drains at its own pace.
    return min(after if r.status_code == 429 else after * (attempt + 1), 30.0)


def format_report(report: ImportReport, root: Path, *, interrupted: bool = False) -> str:
    lines = [
        f"{report.added} added, {report.duplicates} already there, {len(report.rejected)} not imported"
        f" ({report.done} of {report.found} files)"
    ]
    if interrupted:
        lines.append("Interrupted: run the same command again to continue where it stopped.")
    if report.rejected:
        lines.append("Not imported:")
    for r in report.rejected:
        lines.append(f"  {_shown(r.path, root)}: {r.detail} [{r.code}]")
    if report.caption_failed:
        lines.append("Stored, but captioning failed (import again to retry):")
    for r in report.caption_failed:
        lines.append(f"  {_shown(r.path, root)}: {r.detail}")
    return "\n".join(lines)


def _shown(path: Path, root: Path) -> Path:
    return path.relative_to(root) if root.is_dir() and path.is_relative_to(root) else path


@asynccontextmanager
async def api_client(
    settings: Settings, server: str | None, local: bool
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """The running server's API when it answers (unless `local`), else an in-process app's."""
    url = server or f"http://{_local_host(settings.server.host)}:{settings.server.port}"
    if not local and await _ready(url):
        async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(600, connect=5)) as client:
            yield client, f"the running server at {url}"
        return
    if server:
        raise ImportTargetError(f"no capsearch server answers at {server}")
    from capsearch.app import check_schema, create_app  # torch and friends: only for in-process imports
    from capsearch.ml.registry import ensure_available, profile_specs

    for spec in profile_specs(settings.models):
        await asyncio.to_thread(ensure_available, spec, settings.models)
    await check_schema(settings.database.url)
    # The only client of this in-process app is this import: a per-client rate limit would only slow it.
    limits = settings.rate_limits.model_copy(update={"enabled": False})
    app = create_app(settings.model_copy(update={"rate_limits": limits}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        # A loopback name: the app answers only to its allowed host names.
        async with httpx.AsyncClient(
            transport=transport, base_url="http://localhost", timeout=None
        ) as client:
            db = make_url(settings.database.url).render_as_string(hide_password=True)
            yield client, f"{db} directly (no server answered at {url})"


class ImportTargetError(Exception):
    pass


def _local_host(host: str) -> str:
    """The address to reach a server bound to `host` from this machine (a wildcard bind: loopback)."""
    if host in WILDCARD_BINDS:
        return "127.0.0.1"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


async def _ready(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            r = await client.get(f"{url}/readyz")
    except httpx.HTTPError:
        return False
    return r.status_code == 200 and "checks" in r.json()
