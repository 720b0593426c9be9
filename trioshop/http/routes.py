"""The shop's HTTP routes: products and carts under the router prefix, health at the root."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from quart import Blueprint, Response, request

from trioshop.http.errors import ApiError, error_response
from trioshop.http.validation import (
    check_add_item,
    check_idempotency_key,
    check_user_id,
    parse_json_object,
)
from trioshop.money import to_json_number
from trioshop.registry import Product
from trioshop.runtime import ActorTimeout
from trioshop.shop.model import (
    CartEmpty,
    IdempotencyKeyReused,
    InsufficientStock,
    ItemNotInCart,
    Order,
    ServiceStatus,
)
from trioshop.shop.shop import NoActiveCart, Shop
from trioshop.store import StoredOrder

EMPTY_CART_MESSAGE = "Cart is empty (no active session)"


def product_json(product: Product, stock: int) -> dict[str, Any]:
    return {
        "id": product.id,
        "title": product.title,
        "sku": product.sku,
        "price": to_json_number(product.price_cents),
        "stock": stock,
    }


def service_status_json(status: ServiceStatus | None) -> dict[str, Any]:
    if status is None:  # the service has not handled the order yet
        return {"status": "pending", "updated_at": None}
    return {"status": status.status, "updated_at": status.at}


def stored_order_json(stored: StoredOrder, services: list[str]) -> dict[str, Any]:
    """An order with what each running service did with it."""
    return {
        **stored.order.to_json(),
        "services": {name: service_status_json(stored.services.get(name)) for name in services},
    }


def api_routes(prefix: str, get_shop: Callable[[], Shop]) -> Blueprint:
    """The public API, mounted under *prefix* (the registry's ``http.router``)."""
    api = Blueprint("api", __name__, url_prefix=prefix)

    @api.get("/products")
    async def list_products() -> dict[str, Any]:
        shop = get_shop()
        return {"products": [product_json(p, shop.stock(p)) for p in shop.catalog]}

    @api.post("/cart/<user_id>/items")
    async def add_item(user_id: str) -> dict[str, Any]:
        check_user_id(user_id)
        sku, quantity = check_add_item(parse_json_object(await request.get_data()))
        shop = get_shop()
        product = shop.catalog.get(sku)
        if product is None:
            raise ApiError(404, f"Product not found: {sku}")
        try:
            line = await shop.add_item(user_id, product, quantity)
        except InsufficientStock as refusal:
            raise ApiError(409, str(refusal)) from None
        return {"status": "added", "user_id": user_id, "item": line.to_json()}

    @api.get("/cart/<user_id>")
    async def view_cart(user_id: str) -> dict[str, Any]:
        check_user_id(user_id)
        view = await get_shop().view(user_id)
        if view is None:
            return {"user_id": user_id, "items": [], "total": 0, "message": EMPTY_CART_MESSAGE}
        return view.to_json()

    @api.post("/cart/<user_id>/checkout")
    async def checkout(user_id: str) -> dict[str, Any]:
        check_user_id(user_id)
        key = check_idempotency_key(request.headers.get("Idempotency-Key"))
        try:
            order: Order = await get_shop().checkout(user_id, key)
        except NoActiveCart:
            raise ApiError(400, "No active cart for this user") from None
        except CartEmpty:
            raise ApiError(400, "Cart is empty") from None
        except InsufficientStock as refusal:
            raise ApiError(409, str(refusal)) from None
        except IdempotencyKeyReused as refusal:
            raise ApiError(422, str(refusal)) from None
        except ActorTimeout:
            raise ApiError(504, "Checkout timed out") from None
        return {"status": "checked_out", "order": order.to_json()}

    @api.delete("/cart/<user_id>/items/<sku>")
    async def remove_item(user_id: str, sku: str) -> dict[str, Any]:
        check_user_id(user_id)
        try:
            view = await get_shop().remove_item(user_id, sku)
        except (NoActiveCart, ItemNotInCart):
            raise ApiError(404, f"Item not in cart: {sku}") from None
        return view.to_json()

    @api.delete("/cart/<user_id>")
    async def clear_cart(user_id: str) -> tuple[str, int]:
        check_user_id(user_id)
        await get_shop().clear(user_id)
        return "", 204

    @api.get("/orders/<order_id>")
    async def get_order(order_id: str) -> dict[str, Any]:
        shop = get_shop()
        stored = await shop.order(order_id) if len(order_id) <= 64 else None
        if stored is None:
            raise ApiError(404, f"Order not found: {order_id}")
        return {"order": stored_order_json(stored, list(shop.services))}

    @api.get("/users/<user_id>/orders")
    async def user_orders(user_id: str) -> dict[str, Any]:
        check_user_id(user_id)
        shop = get_shop()
        orders = await shop.orders_for(user_id)
        services = list(shop.services)
        return {"user_id": user_id, "orders": [stored_order_json(o, services) for o in orders]}

    return api


def health_routes(get_shop: Callable[[], Shop]) -> Blueprint:
    """``GET /healthz``: 200 while every supervised service is up or recovering, else 503."""
    health = Blueprint("health", __name__)

    @health.get("/healthz")
    async def healthz() -> Response | dict[str, Any]:
        failed = get_shop().failed_services
        if failed:
            return error_response(503, f"Service(s) gave up: {', '.join(failed)}")
        return {"status": "ok"}

    return health
