"""The admin API: live actors and services, the loaded registry, and hot reloads; guarded."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from typing import Any

import attrs
from quart import Blueprint, request

from trioshop.http.errors import ApiError
from trioshop.http.shapes import PROCESSES, REGISTRY_VIEW, RELOAD_REPORT
from trioshop.registry import Registry, RegistryError
from trioshop.shop import Shop

DEFAULT_PROCESS_LIMIT = 1000


def is_loopback(address: str | None) -> bool:
    if not address:
        return False
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def check_admin_access(token: str | None, authorization: str | None, client: str | None) -> None:
    """Raise a 401 or 403 :class:`ApiError` unless the caller may use the admin API.

    With a configured *token*, the request must carry ``Authorization: Bearer <token>``
    (compared in constant time). Without one, only loopback clients are let in.
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
            403, "Admin API answers loopback clients only; start the server with "
            "--admin-token (or TRIOSHOP_ADMIN_TOKEN) to allow others with that token",
        )


def registry_json(registry: Registry) -> dict[str, Any]:
    """The registry as the admin API shows it: each entry with the fields of its kind."""
    entries = [
        {"kind": entry.KIND, **attrs.asdict(entry, recurse=True)} for entry in registry
    ]
    return REGISTRY_VIEW.render(registry, entries=entries)


def admin_routes(
    prefix: str, get_shop: Callable[[], Shop], admin_token: str | None
) -> Blueprint:
    """``{prefix}/admin/*``, each request checked by :func:`check_admin_access` first."""
    admin = Blueprint("admin", __name__, url_prefix=f"{prefix}/admin")

    @admin.before_request
    async def guard() -> None:
        check_admin_access(
            admin_token, request.headers.get("Authorization"), request.remote_addr
        )

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
