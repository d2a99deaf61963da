"""The server-rendered page, its headers and assets, and the partial templates the socket reuses."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import FastAPI

from capsearch.api.routes.pages import VENDOR_FILES, human_bytes, human_types
from capsearch.db.models import Image, ImageStatus
from capsearch.state import AppState
from capsearch.templating import render, web_dir


async def add_image(app: FastAPI, n: int, status: ImageStatus, **fields: str) -> int:
    state: AppState = app.state.capsearch
    image = Image(
        sha256=f"{n:064x}", mime="image/jpeg", width=320, height=240, size_bytes=1000, status=status, **fields
    )
    async with state.sessions() as s, s.begin():
        s.add(image)
    return image.id


def image_json(image_id: int = 7, status: str = "ready", **extra: object) -> dict[str, object]:
    base: dict[str, object] = {
        "id": image_id,
        "status": status,
        "caption": None,
        "error": None,
        "filename": "beach.jpg",
        "width": 320,
        "height": 240,
        "url": f"/media/originals/{'a' * 64}",
        "thumbnail_url": f"/media/thumbs/{'a' * 64}",
        "created_at": "2026-03-01T08:05:09.123456Z",
    }
    return base | extra


async def test_page_renders_drop_zone_limits_and_containers(client: httpx.AsyncClient) -> None:
    r = await client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    assert "JPEG, PNG, WebP or GIF, up to 5 MB" in html
    assert re.search(r'<input id="file-input"[^>]*type="file"[^>]*multiple', html)
    assert 'accept="image/jpeg,image/png,image/webp,image/gif"' in html
    assert '<label for="file-input"' in html
    assert 'id="uploads"' in html
    assert re.search(r'id="toasts"[^>]*aria-live="polite"', html)
    assert 'id="collection"' in html
    assert 'hx-ext="ws,capsearch-ws" ws-connect="/ws"' in html
    assert """<meta name="htmx-config" content='{"includeIndicatorStyles":false""" in html
    assert 'data-max-bytes="5242880"' in html
    scripts = [
        f'<script src="{src}" defer></script>'
        for src in (
            "/static/vendor/htmx.min.js",
            "/static/vendor/ws.js",
            "/static/js/page.js",
            "/static/js/upload-lookup.js",
            "/static/js/upload-cards.js",
            "/static/js/upload-sender.js",
            "/static/js/upload.js",
        )
    ]
    for tag in scripts:
        assert tag in html
    # Deferred scripts run in document order: each one after those it uses.
    at = [html.index(tag) for tag in scripts]
    assert at == sorted(at)


async def test_page_sends_a_strict_csp_that_the_markup_obeys(client: httpx.AsyncClient) -> None:
    r = await client.get("/")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp and "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    # Nothing the policy would block: no inline scripts, no style attributes or elements, no on*=.
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", r.text)
    assert not re.search(r"\sstyle=|<style|\son[a-z]+=", r.text)
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_the_hash_worker_runs_under_its_own_narrow_policy(client: httpx.AsyncClient) -> None:
    # A worker is not bound by the page's policy but by the one its script comes with: hash-wasm
    # needs WebAssembly compiled ('wasm-unsafe-eval', never the page's), and nothing else but scripts
    # from this origin (its importScripts).
    assert "worker-src 'self'" in (await client.get("/")).headers["content-security-policy"]
    r = await client.get("/static/js/hash-worker.js")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert r.headers["content-security-policy"] == "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'"
    assert "importScripts('/static/vendor/hash-wasm-sha256.js')" in r.text
    assert "content-security-policy" not in (await client.get("/static/js/upload.js")).headers


@pytest.mark.parametrize("name", sorted(VENDOR_FILES))
async def test_vendor_js_comes_from_node_modules(client: httpx.AsyncClient, name: str) -> None:
    r = await client.get(f"/static/vendor/{name}")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/javascript")
    assert r.content == (web_dir() / "node_modules" / VENDOR_FILES[name]).read_bytes()


async def test_htmx_is_version_2(client: httpx.AsyncClient) -> None:
    body = (await client.get("/static/vendor/htmx.min.js")).text
    assert re.search(r'version:\s*"2\.0\.\d+"', body), "htmx-ext-ws 2.0.4 needs htmx 2.0.x"


@pytest.mark.parametrize(
    "path",
    [
        "/static/vendor/package.json",
        "/static/vendor/htmx.js",
        "/static/%2e%2e/templates/index.html",
        "/static/..%2f..%2fpyproject.toml",
        "/static/missing.js",
    ],
)
async def test_only_allowed_static_files_are_served(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path)).status_code == 404


@pytest.mark.parametrize(
    ("path", "ctype"),
    [("/static/js/upload.js", "text/javascript"), ("/static/css/app.css", "text/css")],
)
async def test_page_assets_are_served(client: httpx.AsyncClient, path: str, ctype: str) -> None:
    r = await client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(ctype)


async def test_collection_is_server_rendered_newest_first_with_every_stage(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    ready = await add_image(app, 1, ImageStatus.READY, caption="a dog on a beach", filename="dog.jpg")
    failed = await add_image(app, 2, ImageStatus.FAILED, error="The captioner gave up.")
    queued = await add_image(app, 3, ImageStatus.RECEIVED)
    html = (await client.get("/")).text
    collection = html[html.index('id="collection"') :]
    ids = [int(i) for i in re.findall(r'<article id="image-(\d+)"', collection)]
    assert ids == [queued, failed, ready]
    stages = re.findall(r'<article id="image-\d+" class="card" data-stage="(\w+)"', collection)
    assert stages == ["queued", "failed", "done"]
    assert "a dog on a beach" in collection and "The captioner gave up." in collection
    assert "hx-swap-oob" not in collection  # the page's own cards are not out-of-band swaps
    assert "3 images" in html
    assert f'src="/media/thumbs/{1:064x}"' in collection


async def test_empty_collection_says_so(client: httpx.AsyncClient) -> None:
    html = (await client.get("/")).text
    assert "<article" not in html
    assert "Nothing here yet" in html


async def test_page_has_an_empty_hidden_gallery_with_the_idle_delay(client: httpx.AsyncClient) -> None:
    html = (await client.get("/")).text
    gallery = r'<section id="gallery" class="gallery-section" hidden[^>]*data-idle-seconds="8.0"'
    assert re.search(gallery, html)
    assert html.index('id="gallery"') < html.index('id="collection"')
    assert '<script src="/static/js/idle.js" defer></script>' in html


async def test_page_has_a_microphone_button_and_a_voice_panel(client: httpx.AsyncClient) -> None:
    html = (await client.get("/")).text
    form = html[html.index('<form id="search-form"') : html.index("</form>")]
    assert re.search(r'<button id="voice-button" class="mic-button" type="button" aria-pressed="false"', form)
    assert 'aria-label="Search by voice"' in form
    assert re.search(r'<section id="voice-panel"[^>]*hidden', html)
    assert html.index('id="voice-panel"') < html.index('id="search-results"')
    # Only the settled words are a live region: tentative ones flicker and are not read out.
    transcript = html[
        html.index('<p id="voice-transcript"') : html.index("</p>", html.index('id="voice-transcript"'))
    ]
    assert "aria-live" not in transcript[: transcript.index(">")]
    assert re.search(r'<span\s+id="voice-settled"[^>]*aria-live="polite"', transcript)
    assert re.search(r'<span\s+id="voice-tentative"(?![^>]*aria-live)[^>]*>', transcript)
    assert 'aria-describedby="voice-transcript-hint"' in transcript
    assert re.search(r'<p id="voice-transcript-hint" class="visually-hidden">[^<]*may change', html)
    assert re.search(r'<audio id="voice-audio"[^>]*controls', html)
    assert '<meter id="voice-level"' in html
    names = ("voice-audio.js", "voice-panel.js", "voice-results.js", "voice.js")
    voice = [f'<script src="/static/js/{name}" defer></script>' for name in names]
    assert all(tag in html for tag in voice)
    assert [html.index(tag) for tag in voice] == sorted(html.index(tag) for tag in voice)
    # The AudioWorklet module is loaded by URL and must be a same-origin script (CSP script-src 'self').
    worklet = await client.get("/static/js/pcm-worklet.js")
    assert worklet.status_code == 200 and worklet.headers["content-type"].startswith("text/javascript")
    assert "registerProcessor('pcm-capture'" in worklet.text


@pytest.mark.parametrize("stage", ["uploading", "queued", "captioning", "done", "failed"])
def test_upload_status_partial_follows_the_contract(stage: str) -> None:
    html = render(
        "partials/upload_status.html",
        upload_id="abc_DEF-123",
        stage=stage,
        image=image_json(caption="a <b>cat</b>") if stage == "done" else None,
        error={"code": "too_large", "detail": "That file is too big."} if stage == "failed" else None,
    )
    assert html.startswith(
        f'<div id="upload-abc_DEF-123-status" class="card-status" data-stage="{stage}" hx-swap-oob="true">'
    )
    if stage == "done":
        assert "a &lt;b&gt;cat&lt;/b&gt;" in html
    if stage == "failed":
        assert 'data-code="too_large"' in html and "That file is too big." in html


@pytest.mark.parametrize(
    ("status", "stage"),
    [("received", "queued"), ("captioning", "captioning"), ("ready", "done"), ("failed", "failed")],
)
def test_image_card_partial_follows_the_contract(status: str, stage: str) -> None:
    image = image_json(status=status, caption="a red bus" if status == "ready" else None, error="boom")
    html = render("partials/image_card.html", image=image)
    assert html.startswith(f'<article id="image-7" class="card" data-stage="{stage}" hx-swap-oob="true">')
    assert f'src="/media/thumbs/{"a" * 64}"' in html
    if stage == "done":
        assert 'alt="a red bus"' in html and '<p class="caption">a red bus</p>' in html
    if stage == "failed":
        assert "boom" in html
    inline = render("partials/image_card.html", image=image, oob=False)
    assert "hx-swap-oob" not in inline


def test_toast_partial_appends_to_toasts() -> None:
    html = render("partials/toast.html", level="error", message="No <script> here")
    assert html.startswith(
        '<div hx-swap-oob="beforeend:#toasts"><div class="toast toast-error" role="alert">'
    )
    assert "No &lt;script&gt; here" in html


def test_limits_text_follows_the_settings() -> None:
    assert human_types(["image/jpeg", "image/png", "image/webp", "image/gif"]) == "JPEG, PNG, WebP or GIF"
    assert human_types(["image/png"]) == "PNG"
    assert human_bytes(5 * 1024 * 1024) == "5 MB"
    assert human_bytes(1536 * 1024) == "1.5 MB"
    assert human_bytes(300 * 1024) == "300 KB"
