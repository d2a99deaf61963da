"""Every error is the documented JSON `{"detail", "code"}` (or, where a person reads it, the page's
toast fragment or an HTML page), through real requests: odd paths and ids, validation errors that
echo hostile input, an unexpected exception and a database that cannot be reached.
"""

from __future__ import annotations

import json
import logging
import sqlite3

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import exc as sa
from sqlalchemy.ext.asyncio import create_async_engine

from capsearch.config import RateLimitSettings, Settings
from capsearch.db.models import Image, ImageStatus
from capsearch.db.outage import is_unavailable
from capsearch.deps import get_library
from tests.apikit import dead_database_url, state_of

pytestmark = pytest.mark.fake_captioner

BIG = [str(2**63), str(2**64), "1" + "0" * 30]
HX = {"HX-Request": "true"}
LONG = 60_000  # about the longest URL httpx sends


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Hundreds of refused requests from one client must reach validation, not its rate limit.
    return settings.model_copy(update={"rate_limits": RateLimitSettings(enabled=False)})


async def add_image(app: FastAPI, n: int = 1) -> int:
    image = Image(
        sha256=f"{n:064x}", mime="image/jpeg", width=4, height=3, size_bytes=10, status=ImageStatus.READY
    )
    async with state_of(app).sessions() as s, s.begin():
        s.add(image)
    return image.id


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert r.status_code == status, r.text[:500]
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["code"] == code and isinstance(body["detail"], str) and body["detail"]
    return dict(body)


@pytest.mark.parametrize(
    "path",
    ["/static/%00", "/static/a%00.js", "/static/js/%00/search.js", "/static/..%2f..%2fpyproject.toml",
     "/static/js/search.js%00.js", "/static/%ED%A0%80.js", "/static/js%5csearch.js", "/static/" + "a" * LONG,
     "/static/vendor/%00", "/static/vendor/" + "b" * LONG],
)  # fmt: skip
async def test_odd_static_paths_are_json_404(client: httpx.AsyncClient, path: str) -> None:
    body = assert_error(await client.get(path), 404, "not_found")
    assert len(str(body["detail"])) <= 300


async def test_static_files_are_still_served(client: httpx.AsyncClient) -> None:
    r = await client.get("/static/js/search.js")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert r.headers["cache-control"] == "no-cache"
    # Revalidation costs no body (StaticFiles' ETag), and a range is served as asked.
    again = await client.get("/static/js/search.js", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    part = await client.get("/static/js/search.js", headers={"Range": "bytes=0-9"})
    assert part.status_code == 206 and part.content == r.content[:10]
    assert (await client.get("/static/examples/LICENSE")).status_code == 404  # not a page asset type


@pytest.mark.parametrize("value", [*BIG, "-1", "0"])
async def test_ids_out_of_range_are_invalid_everywhere(client: httpx.AsyncClient, value: str) -> None:
    assert_error(await client.get(f"/api/images/{value}"), 422, "invalid_request")
    assert_error(await client.patch(f"/api/images/{value}", json={"caption": "x"}), 422, "invalid_request")
    assert_error(await client.delete(f"/api/images/{value}"), 422, "invalid_request")
    assert_error(await client.delete(f"/ui/images/{value}"), 422, "invalid_request")
    # The page's own request: the refusal is a toast, and the card that asked stays as it is.
    r = await client.post(f"/ui/images/{value}/caption", data={"caption": "x"}, headers=HX)
    assert r.status_code == 422 and r.headers["hx-reswap"] == "none"
    assert 'class="toast toast-error"' in r.text and "image_id" in r.text


async def test_largest_id_is_simply_not_found(client: httpx.AsyncClient) -> None:
    assert_error(await client.get(f"/api/images/{2**63 - 1}"), 404, "not_found")


@pytest.mark.parametrize("cursor", [*BIG, "9223372036854775808", "99999999999999999999", "0", "-5", "1e3"])
async def test_cursor_beyond_any_id_is_invalid(client: httpx.AsyncClient, cursor: str) -> None:
    assert_error(await client.get("/api/images", params={"cursor": cursor}), 422, "invalid_request")


async def test_largest_cursor_is_a_page(client: httpx.AsyncClient, app: FastAPI) -> None:
    image_id = await add_image(app)
    r = await client.get("/api/images", params={"cursor": str(2**63 - 1)})
    assert r.status_code == 200 and [i["id"] for i in r.json()["items"]] == [image_id]


async def test_validation_error_with_lone_surrogate(client: httpx.AsyncClient, app: FastAPI) -> None:
    image_id = await add_image(app)
    for raw in (b'{"caption": ["\\ud800"]}', b'{"caption": "' + b"\\udfff" * 600 + b'"}', b'{"\\ud83d": 1}'):
        r = await client.patch(
            f"/api/images/{image_id}", content=raw, headers={"content-type": "application/json"}
        )
        body = assert_error(r, 422, "invalid_request")
        assert "\ud800" not in r.text and "\\ud800" not in r.content.decode()
        assert isinstance(body["errors"], list) and body["errors"]


async def test_validation_echo_of_huge_input_is_capped(client: httpx.AsyncClient, app: FastAPI) -> None:
    image_id = await add_image(app)
    r = await client.patch(f"/api/images/{image_id}", json={"caption": "x" * 1_000_000})
    body = assert_error(r, 422, "invalid_request")
    assert len(r.content) < 4000
    errors = body["errors"]
    assert isinstance(errors, list) and len(errors) == 1
    echoed = errors[0]["input"]
    assert echoed.endswith("…") and len(echoed) <= 200
    # Many errors at once: a few are listed, and the count of the rest.
    r = await client.patch(f"/api/images/{image_id}", json=[{"a": i} for i in range(5000)])
    assert_error(r, 422, "invalid_request")
    assert len(r.content) < 4000


async def test_json_values_json_cannot_carry_are_refused_cleanly(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    image_id = await add_image(app)
    url = f"/api/images/{image_id}"
    for raw in (b'{"caption": NaN}', b'{"caption": 1e400}', b'{"caption": -Infinity}'):
        body = assert_error(
            await client.patch(url, content=raw, headers={"content-type": "application/json"}),
            422,
            "invalid_request",
        )
        assert json.dumps(body, allow_nan=False)
    deep = b'{"caption": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    for raw in (deep, b"{" + b"9" * 5000 + b"}", b'{"caption": ' + b"9" * 5000 + b"}", b"\xff\xfe{", b"["):
        r = await client.patch(url, content=raw, headers={"content-type": "application/json"})
        assert r.status_code in (400, 422) and r.json()["code"] in ("bad_request", "invalid_request"), r.text[
            :300
        ]


async def test_unexpected_error_is_json_with_request_id_logged_once(
    client: httpx.AsyncClient, app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise RuntimeError("the image service fell over")

    app.dependency_overrides[get_library] = broken
    caplog.set_level(logging.INFO)
    r = await client.get("/api/images/1")
    body = assert_error(r, 500, "internal_error")
    rid = r.headers["x-request-id"]
    assert body["request_id"] == rid and "fell over" not in r.text
    logged = [rec for rec in caplog.records if rec.exc_info]
    assert (
        len(logged) == 1 and getattr(logged[0], "request_id", None) == rid and rid in logged[0].getMessage()
    )
    assert logged[0].levelno == logging.ERROR and "RuntimeError" in caplog.text
    # A proxy's own request id is kept, so its logs and ours line up.
    r = await client.get("/api/images/1", headers={"X-Request-ID": "edge-42"})
    assert r.json()["request_id"] == "edge-42" == r.headers["x-request-id"]
    # An id that could forge log lines is replaced.
    for forged in ("a\tb", "edge-42\n", "x" * 65):
        r = await client.get("/api/images/1", headers={"X-Request-ID": forged})
        assert r.json()["request_id"] != forged and len(r.json()["request_id"]) == 16


async def test_every_answer_carries_a_request_id(client: httpx.AsyncClient) -> None:
    a, b = await client.get("/healthz"), await client.get("/api/images/1")
    assert (
        a.headers["x-request-id"]
        and b.headers["x-request-id"]
        and a.headers["x-request-id"] != b.headers["x-request-id"]
    )


async def test_database_outage_is_503_everywhere(
    client: httpx.AsyncClient, app: FastAPI, db_url: str, tmp_path: object, caplog: pytest.LogCaptureFixture
) -> None:
    image_id = await add_image(app)
    state = state_of(app)
    dead = create_async_engine(dead_database_url(db_url, tmp_path))
    state.sessions.configure(bind=dead)
    try:
        for r in (await client.get("/api/images"), await client.get(f"/api/images/{image_id}"),
                  await client.patch(f"/api/images/{image_id}", json={"caption": "a cat"}),
                  await client.delete(f"/api/images/{image_id}")):  # fmt: skip
            body = assert_error(r, 503, "database_unavailable")
            assert int(r.headers["retry-after"]) >= 1 and "request_id" in body
        # The page's own request: a toast, nothing swapped.
        r = await client.delete(f"/ui/images/{image_id}", headers=HX)
        assert r.status_code == 503 and r.headers["hx-reswap"] == "none" and r.headers["retry-after"]
        assert 'class="toast toast-error"' in r.text and "database is not available" in r.text
        # A browser opening the page: a readable page, not a traceback.
        r = await client.get("/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
        assert r.status_code == 503 and r.headers["content-type"].startswith("text/html")
        assert "database is not available" in r.text and "Traceback" not in r.text
        # Readiness says why (it asks the engine, which is still the live one here).
        assert (await client.get("/readyz")).status_code in (200, 503)
        assert not [rec for rec in caplog.records if rec.exc_info], "an outage is no traceback"
    finally:
        state.sessions.configure(bind=state.engine)
        await dead.dispose()
    # Back: nothing was changed by the refused requests.
    r = await client.get(f"/api/images/{image_id}")
    assert r.status_code == 200 and r.json()["user_caption"] is None


async def test_outage_classification(
    client: httpx.AsyncClient, app: FastAPI, db_url: str, tmp_path: object
) -> None:
    await add_image(app, 7)
    with pytest.raises(sa.IntegrityError) as duplicate:
        await add_image(app, 7)
    assert not is_unavailable(duplicate.value)  # a constraint is not an outage
    dead = create_async_engine(dead_database_url(db_url, tmp_path))
    try:
        with pytest.raises(Exception) as unreachable:
            async with dead.connect():
                pass
        assert is_unavailable(unreachable.value)
    finally:
        await dead.dispose()
    assert is_unavailable(sa.OperationalError("SELECT 1", {}, sqlite3.OperationalError("database is locked")))
    # An OSError that no database driver raised (a full disk, an HTTP client) is not an outage.
    try:
        raise OSError(28, "No space left on device")
    except OSError as e:
        assert not is_unavailable(e)
