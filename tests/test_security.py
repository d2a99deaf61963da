"""Host allow-list and cross-site write protection (docs/security.md), through real requests.

A write from a page on another site (its `Origin`, or the browser's `Sec-Fetch-Site: cross-site`) is
refused with 403 `cross_site_request` before anything is stored; a request for a host name that is
not ours (DNS rebinding) gets 400 `host_not_allowed`, and the socket's handshake is refused (403).
Clients that send neither header (curl, the CLI) keep working.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI

from capsearch.app import create_app
from capsearch.config import ServerSettings, Settings
from capsearch.hosts import HostPolicy
from tests.apikit import count_rows, files, state_of
from tests.conftest import TEST_HOSTS, photo_bytes
from tests.fakes import FakeCaptioner

pytestmark = pytest.mark.fake_captioner

EVIL = "https://evil.example"


@asynccontextmanager
async def serving(settings: Settings, address: str = "127.0.0.1") -> AsyncIterator[httpx.AsyncClient]:
    """An app of its own over `settings`, and a client at `address`."""
    app = create_app(settings, captioner_factory=lambda _s: FakeCaptioner())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(address, 123))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


async def uploaded(client: httpx.AsyncClient, seed: int = 1) -> dict[str, object]:
    r = await client.post("/api/images?wait=true", files=files(photo_bytes(seed)))
    assert r.status_code == 201, r.text
    image: dict[str, object] = r.json()["items"][0]["image"]
    return image


def assert_cross_site(r: httpx.Response) -> None:
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "cross_site_request"
    assert r.json()["detail"].endswith(".")


async def test_a_foreign_origin_cannot_upload(client: httpx.AsyncClient, app: FastAPI) -> None:
    r = await client.post("/api/images", files=files(photo_bytes(1)), headers={"Origin": EVIL})
    assert_cross_site(r)
    assert await count_rows(app) == 0
    assert state_of(app).store.all_files() == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},  # the browser's verdict, even without Origin
        {"Sec-Fetch-Site": "cross-site", "Origin": "http://testserver"},
        {"Origin": "null"},  # a sandboxed frame or a file:// page
        {"Origin": "http://testserver.evil.example"},
        {"Origin": "ftp://testserver"},
        {"Origin": "http://testserver:notaport"},
    ],
)
async def test_other_cross_site_signs_are_refused(
    client: httpx.AsyncClient, app: FastAPI, headers: dict[str, str]
) -> None:
    assert_cross_site(await client.post("/api/images", files=files(photo_bytes(1)), headers=headers))
    assert await count_rows(app) == 0


@pytest.mark.parametrize(
    "headers",
    [
        {},  # curl, the CLI, httpx: no browser, nothing another site could steer
        {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"},
        {"Origin": "HTTPS://TestServer:8443"},  # any port and scheme of an allowed host
        {"Origin": "http://localhost:5173", "Sec-Fetch-Site": "same-site"},
        {"Origin": "http://[::1]:8000"},
        {"Sec-Fetch-Site": "none"},  # typed into the address bar
    ],
)
async def test_our_own_pages_and_scripts_can_upload(
    client: httpx.AsyncClient, app: FastAPI, headers: dict[str, str]
) -> None:
    r = await client.post("/api/images", files=files(photo_bytes(1)), headers=headers)
    assert r.status_code == 202, r.text
    assert await count_rows(app) == 1


async def test_a_cross_site_form_cannot_edit_a_caption(client: httpx.AsyncClient) -> None:
    image = await uploaded(client)
    url = f"/ui/images/{image['id']}/caption"
    assert_cross_site(await client.post(url, data={"caption": "pwned"}, headers={"Origin": EVIL}))
    assert (await client.get(f"/api/images/{image['id']}")).json()["caption"] == image["caption"]
    r = await client.post(url, data={"caption": "mine"}, headers={"Origin": "http://testserver"})
    assert r.status_code == 200, r.text
    assert (await client.get(f"/api/images/{image['id']}")).json()["caption"] == "mine"


async def test_cross_site_patch_and_delete_are_refused(client: httpx.AsyncClient, app: FastAPI) -> None:
    image = await uploaded(client)
    url = f"/api/images/{image['id']}"
    foreign = {"Origin": EVIL}
    assert_cross_site(await client.patch(url, json={"caption": "pwned"}, headers=foreign))
    assert_cross_site(await client.delete(url, headers=foreign))
    assert_cross_site(await client.delete(f"/ui/images/{image['id']}", headers=foreign))
    assert (await client.get(url)).json()["caption"] == image["caption"]
    assert await count_rows(app) == 1 and len(state_of(app).store.all_files()) > 0

    own = {"Origin": "http://testserver"}
    assert (await client.patch(url, json={"caption": "mine"}, headers=own)).json()["caption"] == "mine"
    assert (await client.delete(url, headers=own)).status_code == 204
    assert await count_rows(app) == 0


async def test_reads_stay_open_to_any_origin(client: httpx.AsyncClient) -> None:
    # A cross-site read cannot see the answer (no CORS headers); only writes need refusing.
    r = await client.get("/api/images", headers={"Origin": EVIL, "Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 200


async def test_a_foreign_host_is_refused_without_data(client: httpx.AsyncClient) -> None:
    image = await uploaded(client)
    for path in ("/api/images", f"/api/images/{image['id']}", "/", f"/media/originals/{image['sha256']}"):
        r = await client.get(path, headers={"Host": "attacker.example"})
        assert r.status_code == 400, (path, r.text)
        assert r.json()["code"] == "host_not_allowed"
        assert "attacker.example" in r.json()["detail"]
        assert str(image["sha256"]) not in r.text and str(image["caption"]) not in r.text
    # Writes are refused for the host first, whatever the origin says.
    r = await client.post(
        "/api/images",
        files=files(photo_bytes(2)),
        headers={"Host": "attacker.example", "Origin": "http://attacker.example"},
    )
    assert (r.status_code, r.json()["code"]) == (400, "host_not_allowed")
    assert (await client.get("/api/images")).json()["total"] == 1


@pytest.mark.parametrize("host", ["localhost:8000", "LOCALHOST", "127.0.0.1:9", "[::1]:8000", "testserver."])
async def test_loopback_and_configured_names_answer_on_any_port(client: httpx.AsyncClient, host: str) -> None:
    r = await client.get("/api/images", headers={"Host": host})
    assert r.status_code == 200, r.text


async def test_health_probes_answer_any_host(client: httpx.AsyncClient) -> None:
    # Load balancers and Prometheus probe by IP address; these say nothing about the collection.
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await client.get(path, headers={"Host": "10.1.2.3:8000"})).status_code == 200, path


async def test_allowed_hosts_and_origins_let_a_name_in(settings: Settings) -> None:
    settings.server.allowed_hosts = [*TEST_HOSTS, "Photos.Example.org"]
    settings.server.allowed_origins = ["https://proxy.example.net/"]
    async with serving(settings) as client:
        assert (
            await client.get("/api/images", headers={"Host": "photos.example.org:8443"})
        ).status_code == 200
        assert (await client.get("/api/images", headers={"Host": "other.example.org"})).status_code == 400
        for origin in ("https://photos.example.org", "https://proxy.example.net"):
            r = await client.post("/api/images", files=files(photo_bytes(3)), headers={"Origin": origin})
            assert r.status_code == 202, (origin, r.text)
        r = await client.post(
            "/api/images", files=files(photo_bytes(4)), headers={"Origin": "https://example.org"}
        )
        assert_cross_site(r)


async def test_the_configured_host_is_allowed_but_a_wildcard_bind_is_not_a_name(settings: Settings) -> None:
    settings.server.host = "photos.lan"
    async with serving(settings) as client:
        assert (await client.get("/api/images", headers={"Host": "photos.lan:8000"})).status_code == 200
    settings.server.host = "0.0.0.0"
    async with serving(settings) as client:
        assert (await client.get("/api/images", headers={"Host": "0.0.0.0:8000"})).status_code == 400


async def test_any_host_still_refuses_foreign_origins(settings: Settings) -> None:
    # "*" (behind a proxy that checks Host): any name answers, and a page may write to its own name only.
    settings.server.allowed_hosts = ["*"]
    async with serving(settings) as client:
        own = {"Host": "photos.example.org", "Origin": "https://photos.example.org"}
        assert (await client.get("/api/images", headers={"Host": "photos.example.org"})).status_code == 200
        r = await client.post("/api/images", files=files(photo_bytes(5)), headers=own)
        assert r.status_code == 202, r.text
        foreign = {"Host": "photos.example.org", "Origin": EVIL}
        assert_cross_site(await client.post("/api/images", files=files(photo_bytes(6)), headers=foreign))


def test_host_policy_rule() -> None:
    policy = HostPolicy(ServerSettings())
    assert policy.hosts == {"localhost", "127.0.0.1", "::1"}
    assert not policy.host_allowed("127.0.0.1.nip.io") and not policy.host_allowed("localhost.evil")
    assert policy.origin_allowed("http://127.0.0.1:8000") and not policy.origin_allowed("null")
    assert not policy.origin_allowed("http://user@evil.example") and not policy.origin_allowed("javascript:1")


async def handshake(base_url: str, host: str, origin: str | None) -> int:
    """The HTTP status a real server gives a WebSocket handshake with these headers."""
    url = httpx.URL(base_url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    lines = [
        "GET /ws HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 30)
    finally:
        writer.close()
    return int(status_line.split()[1])


async def test_the_socket_refuses_a_rebound_host_and_foreign_origins(server: str) -> None:
    port = httpx.URL(server).port
    own = f"127.0.0.1:{port}"
    # DNS rebinding: the page's Origin matches its Host, but neither is ours.
    rebound = f"attacker.example:{port}"
    assert await handshake(server, rebound, f"http://{rebound}") == 403
    assert await handshake(server, own, EVIL) == 403
    assert await handshake(server, own, "null") == 403
    assert await handshake(server, own, f"http://{own}") == 101
    assert await handshake(server, f"localhost:{port}", f"http://localhost:{port}") == 101
    assert await handshake(server, own, None) == 101  # a script, not a browser
