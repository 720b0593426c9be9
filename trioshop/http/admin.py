"""The admin API: live actors and services, the loaded registry, and hot reloads; guarded."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import attrs
from quart import Blueprint, g, request

from trioshop.config import ADMIN_TOKEN_ENV, IPAddress
from trioshop.http.errors import ApiError
from trioshop.http.shapes import PROCESSES, REGISTRY_VIEW, RELOAD_REPORT
from trioshop.registry import Registry, RegistryError
from trioshop.shop import Shop

DEFAULT_PROCESS_LIMIT = 1000


# Methods that change nothing: a page of another site may make a browser send them freely.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
TOKEN_OPTIONS = f"--admin-token (or {ADMIN_TOKEN_ENV}, or --admin-token-file)"


def _ip(address: str | None) -> IPAddress | None:
    try:
        return ipaddress.ip_address((address or "").split("%")[0])
    except ValueError:
        return None


def is_loopback(address: str | None) -> bool:
    ip = _ip(address)
    return ip is not None and ip.is_loopback


def client_address(
    peer: str | None, forwarded_for: list[str], trusted_proxies: frozenset[IPAddress]
) -> str | None:
    """Who the client is: the TCP *peer*, or, when the peer is one of *trusted_proxies*, the
    last address of its ``X-Forwarded-For`` (the one that proxy saw; "unknown" if it is not an
    address, which no loopback rule lets in). A header from any other peer is ignored."""
    ip = _ip(peer)
    if ip is None or not forwarded_for or ip not in trusted_proxies:
        return peer
    last = ",".join(forwarded_for).rsplit(",", 1)[-1].strip()
    return last if _ip(last) is not None else "unknown"


def is_loopback_host(host: str) -> bool:
    """Whether the ``Host`` header names this machine's loopback: localhost, 127.0.0.0/8 or
    [::1], with any port."""
    name = urlsplit(f"//{host}").hostname if host else None
    return name is not None and (name == "localhost" or is_loopback(name))


def check_same_origin(method: str, origin: str | None, host: str) -> None:
    """Raise a 403 :class:`ApiError` for a state change (*method* not safe) whose ``Origin``
    is another site than *host*, the request's own: a page elsewhere made the browser send
    it. Without an ``Origin`` (curl, scripts) the request is let through."""
    if method in SAFE_METHODS or origin is None:
        return
    if urlsplit(origin).netloc.lower() != host.lower():
        raise ApiError(
            403, f"Cross-site request refused: Origin {origin!r} is not this server "
            f"({host!r}); send it from this server's own pages, or without an Origin header",
        )


def check_admin_access(
    token: str | None, authorization: str | None, client: str | None, host: str = "localhost"
) -> None:
    """Raise a 401 or 403 :class:`ApiError` unless the caller may use the admin API.

    With a configured *token*, the request must carry ``Authorization: Bearer <token>``
    (compared in constant time). Without one, only loopback *client* addresses asking for a
    loopback *host* name are let in (a foreign ``Host`` is a DNS-rebinding page).
    """
    if token:
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            raise ApiError(
                401, "Admin API needs the header 'Authorization: Bearer <admin token>'",
                {"WWW-Authenticate": 'Bearer realm="trioshop-admin"'},
            )
    elif not is_loopback(client):
        raise ApiError(
            403, f"Admin API answers loopback clients only; start the server with "
            f"{TOKEN_OPTIONS} to allow others with that token",
        )
    elif not is_loopback_host(host):
        raise ApiError(
            403, f"Admin API without an admin token answers requests for localhost only "
            f"(Host was {host!r}); use http://localhost:PORT, or start the server with "
            f"{TOKEN_OPTIONS}",
        )


def request_client() -> str | None:
    """This request's client address, as the app found it (see :func:`client_address`)."""
    client: str | None = g.get("client", request.remote_addr)
    return client


def check_admin_request(token: str | None, authorization: str | None) -> None:
    """Both admin rules for the current request: :func:`check_same_origin`, then
    :func:`check_admin_access` with its client address and ``Host``."""
    host = request.headers.get("Host", "")
    check_same_origin(request.method, request.headers.get("Origin"), host)
    check_admin_access(token, authorization, request_client(), host)


def registry_json(registry: Registry) -> dict[str, Any]:
    """The registry as the admin API shows it: each entry with the fields of its kind."""
    entries = [
        {"kind": entry.KIND, **attrs.asdict(entry, recurse=True)} for entry in registry
    ]
    return REGISTRY_VIEW.render(registry, entries=entries)


def admin_routes(
    prefix: str, get_shop: Callable[[], Shop], admin_token: str | None
) -> Blueprint:
    """``{prefix}/admin/*``, each request checked by :func:`check_admin_request` first."""
    admin = Blueprint("admin", __name__, url_prefix=f"{prefix}/admin")

    @admin.before_request
    async def guard() -> None:
        check_admin_request(admin_token, request.headers.get("Authorization"))

    @admin.get("/processes")
    async def processes() -> dict[str, Any]:
        try:
            limit = int(request.args.get("limit", DEFAULT_PROCESS_LIMIT))
        except ValueError:
            raise ApiError(400, "Query parameter 'limit' must be an integer") from None
        if not 0 <= limit <= 1_000_000:
            raise ApiError(400, "Query parameter 'limit' must be from 0 to 1000000")
        shop = get_shop()
        statistics = shop.statistics()
        return PROCESSES.render({
            "count": statistics.actors.live,
            "actors": shop.live_actors(limit),
            "services": statistics.services,
        })

    @admin.get("/registry")
    async def registry() -> dict[str, Any]:
        return registry_json(get_shop().registry)

    @admin.post("/registry/reload")
    async def reload() -> dict[str, Any]:
        try:
            report = await get_shop().reload_from_disk()
        except RegistryError as exc:
            raise ApiError(
                422, "Registry refused, the previous one keeps serving: " + "; ".join(exc.problems)
            ) from None
        return RELOAD_REPORT.render(report)

    return admin
