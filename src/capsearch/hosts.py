"""Which host names and origins are ours: one rule for HTTP requests and the WebSocket handshake.

A request is answered only when its `Host` names this server (else a page on a rebound DNS name could
read the collection), and a browser may write (POST, PATCH, DELETE, the WebSocket) only from a page
whose `Origin` is ours (else any site could upload or edit on a visitor's behalf). docs/security.md.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from capsearch.config import ServerSettings

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
# Addresses a server binds to in order to listen everywhere: no browser ever asks for them by name.
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::", "*"})
ANY_HOST = "*"
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def host_name(host: str) -> str:
    """The name in a `Host` header or a host setting, without its port: lower case, IPv6 unbracketed."""
    host = host.strip().lower()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    # "localhost." is the same DNS name as "localhost".
    return host.rstrip(".")


def normalise_origin(origin: str) -> str:
    """`scheme://host[:port]` in lower case, without a default port or trailing slash."""
    origin = origin.strip().rstrip("/").lower()
    scheme, sep, host = origin.partition("://")
    if not sep:
        return origin
    port = _DEFAULT_PORTS.get(scheme)
    if port and host.endswith(f":{port}"):
        host = host[: -len(port) - 1]
    return f"{scheme}://{host}"


class HostPolicy:
    """Allowed hosts: the loopback names, `server.host` (unless a wildcard bind such as 0.0.0.0) and
    `server.allowed_hosts`, whatever the port; "*" in `allowed_hosts` allows any `Host`.

    An origin is ours when it is http(s) on an allowed host (any port) or is listed in
    `server.allowed_origins`. With "*" the host names are not known, so an origin on the request's
    own `Host` counts too: the reverse proxy that "*" requires has vetted that name.
    """

    def __init__(self, server: ServerSettings) -> None:
        names = {host_name(h) for h in server.allowed_hosts}
        self.any_host = ANY_HOST in names
        names.discard(ANY_HOST)
        own = host_name(server.host)
        if own not in WILDCARD_BINDS:
            names.add(own)
        self.hosts = frozenset(names | LOOPBACK_HOSTS)
        self.origins = frozenset(normalise_origin(o) for o in server.allowed_origins)

    def host_allowed(self, host: str) -> bool:
        return self.any_host or host_name(host) in self.hosts

    def origin_allowed(self, origin: str, request_host: str | None = None) -> bool:
        """Whether a page at `origin` may write; "null" (sandboxed frames, file:// pages) may not."""
        if normalise_origin(origin) in self.origins:
            return True
        try:
            parts = urlsplit(origin.strip())
            parts.port  # noqa: B018 — raises ValueError on a malformed port
        except ValueError:
            return False
        name = (parts.hostname or "").rstrip(".")
        if parts.scheme not in ("http", "https") or not name:
            return False
        if name in self.hosts:
            return True
        return self.any_host and request_host is not None and name == host_name(request_host)

    def write_allowed(self, origin: str | None, fetch_site: str | None, request_host: str | None) -> bool:
        """Whether a state-changing request (or a socket) may go ahead, from its browser headers.

        Browsers send `Origin` on every write and every socket, so its absence means a script (curl,
        the CLI), which no other site can steer. `Sec-Fetch-Site: cross-site` is the browser's own
        verdict and is trusted even without `Origin`.
        """
        if fetch_site is not None and fetch_site.strip().lower() == "cross-site":
            return False
        return origin is None or self.origin_allowed(origin, request_host)
