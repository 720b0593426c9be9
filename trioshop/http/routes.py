"""The shop's HTTP routes: products and carts under the router prefix, health at the root."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio
from quart import Blueprint, Response, request

from trioshop.domain import CartLine, CartView
from trioshop.domain.limits import ORDER_ID_MAX_LENGTH
from trioshop.http.auth import UserAuth
from trioshop.http.errors import ApiError, error_response
from trioshop.http.shapes import (
    ADDED,
    CART,
    CHECKED_OUT,
    HEALTH,
    ORDER_ANSWER,
    PRODUCTS,
    READY,
    USER_ORDERS,
)
from trioshop.http.validation import (
    check_add_item,
    check_idempotency_key,
    check_user_id,
    parse_json_object,
)
from trioshop.shop import Shop
from trioshop.store import StoreError


def api_routes(
    prefix: str, get_shop: Callable[[], Shop], auth: UserAuth | None = None
) -> Blueprint:
    """The public API, mounted under *prefix* (the registry's ``http.router``); the errors a
    route's work raises are answered by ``errors.ANSWERS`` and its ``ROUTE_ANSWERS`` entry.

    With *auth*, a route naming a user needs a bearer token for that user (401, 403), and an
    order is shown only to its owner (another user's order is a 404, as if it did not exist).
    """
    api = Blueprint("api", __name__, url_prefix=prefix)

    if auth is not None:

        @api.before_request
        async def authenticate_user() -> None:
            user_id = (request.view_args or {}).get("user_id")
            if user_id is not None:
                auth.check(request.headers.get("Authorization"), user_id)

    @api.get("/products")
    async def list_products() -> dict[str, Any]:
        shop = get_shop()
        stock = await shop.stock_levels()
        return PRODUCTS.render([(p, stock.get(p.sku, 0)) for p in shop.catalog])

    @api.post("/cart/<user_id>/items")
    async def add_item(user_id: str) -> dict[str, Any]:
        check_user_id(user_id)
        key = check_idempotency_key(request.headers.get("Idempotency-Key"))
        sku, quantity = check_add_item(
            parse_json_object(await request.get_data(), request.mimetype)
        )
        shop = get_shop()
        product = shop.catalog.get(sku)
        if product is None:
            raise ApiError(404, f"Product not found: {sku}")
        line = CartLine(product.sku, product.title, product.price_cents, quantity)
        added = await shop.carts.add_item(user_id, line, key)
        return ADDED.render((user_id, added))

    @api.get("/cart/<user_id>")
    async def view_cart(user_id: str) -> dict[str, Any]:
        check_user_id(user_id)
        view = await get_shop().carts.view(user_id)
        return CART.render(view or CartView(user_id, (), 0))  # empty: the same body either way

    @api.post("/cart/<user_id>/checkout")
    async def checkout(user_id: str) -> dict[str, Any]:
        check_user_id(user_id)
        key = check_idempotency_key(request.headers.get("Idempotency-Key"))
        order = await get_shop().carts.checkout(user_id, key)
        return CHECKED_OUT.render(order)

    @api.delete("/cart/<user_id>/items/<sku>")
    async def remove_item(user_id: str, sku: str) -> dict[str, Any]:
        check_user_id(user_id)
        view = await get_shop().carts.remove_item(user_id, sku)
        return CART.render(view)

    @api.delete("/cart/<user_id>")
    async def clear_cart(user_id: str) -> tuple[str, int]:
        check_user_id(user_id)
        await get_shop().carts.clear(user_id)
        return "", 204

    @api.get("/orders/<order_id>")
    async def get_order(order_id: str) -> dict[str, Any]:
        owner = None if auth is None else auth.authenticate(request.headers.get("Authorization"))
        shop = get_shop()
        too_long = len(order_id) > ORDER_ID_MAX_LENGTH
        stored = None if too_long else await shop.carts.order(order_id)
        if stored is None or owner not in (None, stored.order.user_id):
            raise ApiError(404, f"Order not found: {order_id}")
        return ORDER_ANSWER.render(None, order=(stored, shop.services.names))

    @api.get("/users/<user_id>/orders")
    async def user_orders(user_id: str) -> dict[str, Any]:
        check_user_id(user_id)
        shop = get_shop()
        orders = await shop.carts.orders_for(user_id)
        names = shop.services.names
        return USER_ORDERS.render(
            {"user_id": user_id, "orders": [(stored, names) for stored in orders]}
        )

    return api


# The probes' blueprint: its routes are polled by load balancers and monitors.
HEALTH_BLUEPRINT = "health"


def health_routes(get_shop: Callable[[], Shop], readiness_timeout: float) -> Blueprint:
    """``GET /healthz`` (alerting): 200 while every supervised service is up or recovering,
    else 503. ``GET /readyz`` (load balancers): 200 while this node can serve carts (running,
    its store answering within *readiness_timeout*), else 503: a failure every node shares,
    such as a broken notifier, must not make a proxy eject every node."""
    health = Blueprint(HEALTH_BLUEPRINT, __name__)

    @health.get("/readyz")
    async def readyz() -> Response | dict[str, Any]:
        shop = get_shop()  # 503 while starting or stopping
        with trio.move_on_after(readiness_timeout):
            try:
                await shop.ready()
            except StoreError as exc:
                return error_response(503, f"Not ready: the store does not answer ({exc})")
            return READY.render(None)
        return error_response(
            503, f"Not ready: the store did not answer within {readiness_timeout:g} s"
        )

    @health.get("/healthz")
    async def healthz() -> Response | dict[str, Any]:
        failed = get_shop().services.failed
        if failed:
            return error_response(503, f"Service(s) gave up: {', '.join(failed)}")
        return HEALTH.render(None)

    return health
