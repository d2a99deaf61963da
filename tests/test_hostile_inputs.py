"""Every route of the app, walked from `app.routes`, with hostile values in each path and query
parameter and in its body: the answer is always JSON with a `code` (or, on the page's /ui routes, an
HTML fragment), never a 500 or a plain-text traceback. A route added later is walked too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from capsearch.config import RateLimitSettings, Settings

pytestmark = pytest.mark.fake_captioner

LONG_URL = 60_000  # about the longest URL httpx sends
MB = 1_000_000
FORM = "application/x-www-form-urlencoded"
# Percent-encoded, as they travel in a URL.
URL_VALUES = [
    "%00", "a%00b", "%ED%A0%80", "%FF%FE", "%F0%9F%92%A5", str(2**63), str(2**64), "-1", "0",
    "1" + "0" * 30, "1e3", "1.5", "NaN", "inf", "true", "abc", "%20", "%0A", "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e", "x" * LONG_URL,
]  # fmt: skip
QUERY_VALUES = [*URL_VALUES, ""]
JSON_BODIES = [
    b'{"caption": "\\ud800"}', b'{"caption": ["\\udfff"]}', b'{"\\ud83d": "x"}', b'{"caption": "a\\u0000b"}',
    b'{"caption": "' + b"x" * MB + b'"}', b'{"caption": NaN}', b'{"caption": 1e400}', b'{"caption": null}',
    b'{"caption": ' + str(2**64).encode() + b"}", b'{"caption": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    b"[" + b"1," * 100_000 + b"1]", b"null", b'"x"', b"", b"{", b"\xff\xfe\x00", b"{" + b"9" * 5000 + b"}",
]  # fmt: skip
# Percent-encoded form fields (application/x-www-form-urlencoded), including bytes that are not UTF-8.
FORM_VALUES = [
    "",
    "%00",
    "a%00b",
    "%ED%B3%BF",
    "%FF",
    "x" * MB,
    "NaN",
    "inf",
    "1e400",
    str(2**64),
    "-1",
    "abc",
]
MULTIPART_BODIES: list[tuple[str | None, bytes]] = [
    (None, b""),
    ("multipart/form-data", b"--x\r\n"),
    ("multipart/form-data; boundary=" + "b" * 5000, b"--b\r\n"),
    ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data\r\n\r\njunk\r\n--x--\r\n"),
    ("multipart/form-data; boundary=x", b"--x\r\n" + b"A: " + b"a" * MB + b"\r\n\r\n--x--\r\n"),
    (
        "multipart/form-data; boundary=x",
        b'--x\r\nContent-Disposition: form-data; name="files"; filename="\xed\xa0\x80\x00.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n\x00\x01junk\r\n--x\r\n"
        b'Content-Disposition: form-data; name="file"; filename="\xff.wav"\r\n\r\n'
        b"RIFF\xff\xff\xff\xffWAVE\r\n--x--\r\n",
    ),
    ("application/json", b'{"files": "\\ud800"}'),
    ("text/plain; charset=\x00", b"x" * MB),
]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Hundreds of refused requests from one client must reach validation, not its rate limit.
    return settings.model_copy(update={"rate_limits": RateLimitSettings(enabled=False)})


def api_routes(routes: list[Any]) -> Iterator[tuple[str, APIRoute]]:
    """(full path, route) for every HTTP route, routers included (FastAPI includes them lazily)."""
    for r in routes:
        if isinstance(r, APIRoute):
            yield r.path, r
        elif hasattr(r, "effective_candidates"):
            yield from api_routes(r.effective_candidates())
        elif isinstance(getattr(r, "original_route", None), APIRoute):
            yield r.path or r.original_route.path, r.original_route


def params(dep: Any, kind: str) -> list[Any]:
    found = list(getattr(dep, kind))
    for sub in dep.dependencies:
        found += params(sub, kind)
    return found


def fill(template: str, /, **values: str) -> str:
    """The path with every {param} (or {param:path}) set: to `values[param]`, else a harmless "1"."""
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: values.get(m.group(1), "1"), template)


def check(r: httpx.Response, what: str) -> None:
    """Documented: below 500, and an error is JSON {"detail", "code"} or, on /ui, an HTML fragment."""
    ctype = r.headers.get("content-type", "")
    assert r.status_code < 500, f"{what}: {r.status_code} {r.text[:300]}"
    if r.status_code < 400 and r.request.url.path == "/metrics":
        return  # Prometheus's text format
    assert not ctype.startswith("text/plain"), f"{what}: plain text {r.text[:300]}"
    if r.status_code < 400 or (r.request.url.path.startswith("/ui/") and ctype.startswith("text/html")):
        return
    assert ctype == "application/json", f"{what}: {r.status_code} {ctype} {r.text[:300]}"
    if r.request.method == "HEAD":
        return  # the same answer as GET, without its body
    body = r.json()
    assert isinstance(body.get("code"), str) and isinstance(body.get("detail"), str), f"{what}: {body}"
    assert len(r.content) < 20_000, f"{what}: an error {len(r.content)} bytes long"


async def send(client: httpx.AsyncClient, method: str, url: str, **kw: Any) -> None:
    check(await client.request(method, url, **kw), f"{method} {url[:120]} {str(kw)[:120]}")


async def test_every_route_answers_hostile_input_with_documented_errors(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    walked = {(method, path) for path, route in api_routes(app.routes) for method in route.methods or ()}
    assert {
        ("GET", "/api/images/{image_id}"),
        ("POST", "/ui/images/{image_id}/caption"),
        ("GET", "/"),
    } <= walked
    for path, route in api_routes(app.routes):
        path_params = [p.name for p in params(route.dependant, "path_params")]
        query_params = [p.name for p in params(route.dependant, "query_params")] or ["unexpected"]
        bodies = params(route.dependant, "body_params")
        is_form = any(type(b.field_info).__name__ in ("Form", "File") for b in bodies)
        ok_body: dict[str, Any] = {"data": {"caption": "x"}} if is_form else {"json": {"caption": "x"}}
        for method in sorted(route.methods or ()):
            kw = ok_body if bodies else {}
            for name in path_params:
                for value in URL_VALUES:
                    await send(client, method, fill(path, **{name: value}), **kw)
            for name in query_params:
                for value in QUERY_VALUES:
                    await send(client, method, fill(path) + f"?{name}={value}", **kw)
            if method not in ("POST", "PATCH", "PUT"):
                continue
            url = fill(path)
            if is_form:
                for name in ("caption", "score"):
                    for v in FORM_VALUES:
                        form = f"caption=x&{name}={v}" if name != "caption" else f"caption={v}"
                        await send(client, method, url, content=form, headers={"content-type": FORM})
            elif bodies:
                for raw in JSON_BODIES:
                    await send(client, method, url, content=raw, headers={"content-type": "application/json"})
            else:  # the upload routes read their multipart body themselves
                for ctype, raw in MULTIPART_BODIES:
                    headers = {"content-type": ctype} if ctype else {}
                    await send(client, method, url, content=raw, headers=headers)


async def test_page_requests_get_fragments_or_json_with_a_code(client: httpx.AsyncClient) -> None:
    hx = {"HX-Request": "true"}
    for value in URL_VALUES:
        for method, path in (("POST", f"/ui/images/{value}/caption"), ("DELETE", f"/ui/images/{value}")):
            r = await client.request(method, path, data={"caption": "x"}, headers=hx)
            check(r, f"{method} {path[:100]}")
            if r.status_code in (422, 429, 503):
                # Swapped by the page: a toast, leaving what the request's element shows alone.
                assert r.headers["hx-reswap"] == "none" and 'class="toast' in r.text
