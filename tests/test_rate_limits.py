"""Per-client rate limits on uploads, searches (and caption edits) and voice, through real requests.

Over its limit a client gets 429 `rate_limited` with `Retry-After` (the page's routes: the message in
their fragment), and nothing is done; other clients (other addresses) are not affected. The
limiters' clock is a test clock, so a minute of typing replays without waiting for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from capsearch.app import create_app
from capsearch.config import RateLimitSettings, Settings
from capsearch.importer import Importer, find_files
from capsearch.ratelimit import RateLimiter
from tests.apikit import count_rows, files, state_of
from tests.conftest import photo_bytes
from tests.fakes import FakeCaptioner
from tests.voicekit import silence, wav_bytes
from tests.ws_page import root_of

pytestmark = pytest.mark.fake_captioner

TIGHT = RateLimitSettings(uploads_burst=2, searches_burst=3, voice_burst=1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0


def use_clock(app: FastAPI, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every limiter of `app` reads `clock` instead of the monotonic clock."""
    limits = state_of(app).rate_limits
    for limiter in (limits.uploads, limits.searches, limits.voice):

        def try_take(
            key: str, cost: float = 1.0, now: float | None = None, *, _l: RateLimiter = limiter
        ) -> float:
            return RateLimiter.try_take(_l, key, cost, clock.now)

        monkeypatch.setattr(limiter, "try_take", try_take)


@asynccontextmanager
async def limited(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, rate_limits: RateLimitSettings = TIGHT
) -> AsyncIterator[tuple[FastAPI, Clock]]:
    settings.rate_limits = rate_limits
    app = create_app(settings, captioner_factory=lambda _s: FakeCaptioner())
    clock = Clock()
    async with app.router.lifespan_context(app):
        use_clock(app, clock, monkeypatch)
        yield app, clock


def client_at(app: FastAPI, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 123))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def assert_limited(r: httpx.Response) -> int:
    assert r.status_code == 429, r.text
    assert r.json()["code"] == "rate_limited"
    assert "try again in" in r.json()["detail"]
    retry = int(r.headers["Retry-After"])
    assert retry >= 1
    return retry


async def test_searches_over_the_limit_get_429_and_other_clients_do_not(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with limited(settings, monkeypatch) as (app, clock), client_at(app, "10.0.0.1") as one:
        for _ in range(3):
            assert (await one.get("/api/search", params={"q": "a dog"})).status_code == 200
        retry = assert_limited(await one.get("/api/search", params={"q": "a dog"}))
        async with client_at(app, "10.0.0.2") as other:
            assert (await other.get("/api/search", params={"q": "a dog"})).status_code == 200
        # Reads that are not searches are not limited.
        assert (await one.get("/api/images")).status_code == 200
        clock.now += retry
        assert (await one.get("/api/search", params={"q": "a dog"})).status_code == 200


async def test_uploads_over_the_limit_store_nothing(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with limited(settings, monkeypatch) as (app, _clock), client_at(app, "10.0.0.1") as one:
        for seed in (1, 2):
            assert (await one.post("/api/images", files=files(photo_bytes(seed)))).status_code == 202
        assert_limited(await one.post("/api/images", files=files(photo_bytes(3))))
        assert await count_rows(app) == 2
        async with client_at(app, "10.0.0.2") as other:
            assert (await other.post("/api/images", files=files(photo_bytes(3)))).status_code == 202
        assert await count_rows(app) == 3


async def test_caption_edits_count_as_searches(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    async with limited(settings, monkeypatch) as (app, _clock), client_at(app, "10.0.0.1") as one:
        r = await one.post("/api/images?wait=true", files=files(photo_bytes(1)))
        image = r.json()["items"][0]["image"]
        url = f"/api/images/{image['id']}"
        for text in ("one", "two", "three"):
            assert (await one.patch(url, json={"caption": text})).status_code == 200
        assert_limited(await one.patch(url, json={"caption": "four"}))
        assert (await one.get(url)).json()["caption"] == "three"

        # The page's edit answers with the card in its form, the draft kept and the reason shown.
        r = await one.post(f"/ui/images/{image['id']}/caption", data={"caption": "five"})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert f'<article id="image-{image["id"]}" class="card card-editing"' in r.text
        assert 'value="five"' in r.text and "Too many searches" in r.text and 'role="alert"' in r.text
        assert (await one.get(url)).json()["caption"] == "three"


async def test_the_search_box_gets_a_fragment_saying_why(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with limited(settings, monkeypatch) as (app, _clock), client_at(app, "10.0.0.1") as one:
        for _ in range(3):
            assert (await one.get("/ui/search", params={"q": "a dog"})).status_code == 200
        r = await one.get("/ui/search", params={"q": "a dog"})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert root_of(r.text)["data-code"] == "rate_limited"
        assert "Too many searches from this address; try again in" in r.text
        # An emptied box only shows the collection again: no search, nothing to refuse.
        assert (await one.get("/ui/search", params={"q": ""})).status_code == 200
        # The page's own address for a search (`/?q=`) is a search too: the page loads, saying why.
        r = await one.get("/", params={"q": "a dog"})
        assert r.status_code == 200 and 'data-code="rate_limited"' in r.text
        assert "Too many searches from this address" in r.text and 'id="search-results"' in r.text


async def test_voice_requests_are_limited(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    quiet = [("file", ("quiet.wav", wav_bytes(silence(1.0)), "audio/wav"))]
    async with limited(settings, monkeypatch) as (app, _clock), client_at(app, "10.0.0.1") as one:
        first = await one.post("/api/transcriptions", files=quiet)
        assert first.status_code != 429, first.text  # silence is refused for itself (422)
        assert_limited(await one.post("/api/transcriptions", files=quiet))
        assert_limited(await one.post("/api/search/voice", files=quiet))
        async with client_at(app, "10.0.0.2") as other:
            assert (await other.post("/api/search/voice", files=quiet)).status_code != 429


async def test_disabled_limits_allow_everything(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    off = TIGHT.model_copy(update={"enabled": False})
    async with limited(settings, monkeypatch, off) as (app, _clock), client_at(app, "10.0.0.1") as one:
        for _ in range(10):
            assert (await one.get("/api/search", params={"q": "a dog"})).status_code == 200
        for seed in range(5):
            assert (await one.post("/api/images", files=files(photo_bytes(seed)))).status_code == 202


# What a fast typist sends: a request each time the box has been still for 250 ms (the search box's
# `delay:250ms`), which is at most four a second; the phrases are retyped, corrected and refined.
PHRASES = ["a dog on the beach", "red car", "pasta with tomato", "mountains in snow", "a cat asleep"]


def typed_queries() -> list[str]:
    queries: list[str] = []
    while len(queries) < 240:
        for phrase in PHRASES:
            queries += [phrase[:n] for n in range(1, len(phrase) + 1)] + [phrase[:-3]]
    return queries[:240]


async def test_a_minute_of_search_as_you_type_stays_inside_the_default_limits(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        limited(settings, monkeypatch, RateLimitSettings()) as (app, clock),
        client_at(app, "10.0.0.1") as one,
    ):
        statuses = []
        for q in typed_queries():  # 240 requests, one every 250 ms: a minute without a pause
            statuses.append((await one.get("/ui/search", params={"q": q})).status_code)
            clock.now += 0.25
        assert 429 not in statuses and set(statuses) <= {200, 422}
        # ... then a few caption fixes in the same minute (they share the search budget).
        r = await one.post("/api/images?wait=true", files=files(photo_bytes(1)))
        image = r.json()["items"][0]["image"]
        for text in ("a dog", "a dog on a beach", "my dog on the beach"):
            r = await one.post(f"/ui/images/{image['id']}/caption", data={"caption": text})
            assert r.status_code == 200, r.text


async def test_the_importer_waits_out_a_rate_limit(settings: Settings, tmp_path: Path) -> None:
    # One upload a second and no burst to speak of: the importer is refused, waits Retry-After, and
    # every file still arrives.
    settings.rate_limits = RateLimitSettings(uploads_per_minute=60, uploads_burst=1)
    app = create_app(settings, captioner_factory=lambda _s: FakeCaptioner())
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        (folder / f"photo{i}.jpg").write_bytes(photo_bytes(40 + i))
    async with app.router.lifespan_context(app), client_at(app, "10.0.0.1") as one:
        refusals: list[int] = []
        one.event_hooks["response"].append(lambda r: _note(r, refusals))
        report = await Importer(one, settings.limits, batch_size=1, concurrency=1).run(find_files(folder))
        assert (report.added, report.rejected) == (3, [])
        assert refusals  # the limit was met and waited out, not missed
        assert await count_rows(app) == 3


async def _note(r: httpx.Response, refusals: list[int]) -> None:
    if r.status_code == 429:
        refusals.append(r.status_code)
