"""The OpenAPI 3 description of the HTTP API, kept beside the routes (a test checks they agree)."""

from __future__ import annotations

from typing import Any

from trioshop import __version__
from trioshop.domain import IdempotencyKeyReused, InsufficientStock, ItemNotInCart
from trioshop.http.errors import answer_for
from trioshop.http.shapes import (
    ADD_ITEM_BODY,
    ADDED,
    CART,
    CHECKED_OUT,
    ERROR,
    HEALTH,
    IDEMPOTENCY_KEY,
    ORDER_ANSWER,
    ORDER_ID,
    PROCESSES,
    PRODUCTS,
    READY,
    REGISTRY_VIEW,
    RELOAD_REPORT,
    SHAPES,
    USER_ID,
    USER_ORDERS,
    Shape,
)
from trioshop.runtime import ActorTimeout, MailboxFull


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _answer(shape: Shape, description: str) -> dict[str, Any]:
    return _json(shape.ref(), description)


def _error(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    response = _answer(ERROR, description)
    if retry_after:
        response["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
    return response


def _raised(error: type[Exception], endpoint: str | None = None) -> dict[str, Any]:
    """The error answer *endpoint* gives when its work raises *error* (``errors.ANSWERS``)."""
    answer = answer_for(error, endpoint)
    if answer is None:
        raise LookupError(f"errors.ANSWERS has no entry for {error.__name__}: add one")
    return _error(answer.description, retry_after=answer.busy)


REQUEST_ID = {
    "name": "X-Request-ID", "in": "header", "required": False,
    "description": "Echoed back; generated when absent or unusable.",
    "schema": {"type": "string"},
}
USER_ID_PARAMETER = {"name": "user_id", "in": "path", "required": True, "schema": USER_ID}
IDEMPOTENCY_KEY_PARAMETER = {
    "name": "Idempotency-Key", "in": "header", "required": False, "schema": IDEMPOTENCY_KEY,
    "description": "A retry with the same key gets the first answer and changes nothing more.",
}

BAD_USER = _error("Invalid user_id")
BUSY = _raised(MailboxFull)
SLOW = _raised(ActorTimeout)
ADMIN_ERRORS = {
    "401": _error("Missing or wrong admin bearer token (when one is configured)"),
    "403": _error("Not a loopback client, and no admin token configured"),
}


USER_TOKEN_ERRORS = {
    "401": _error("Missing, malformed, badly signed or expired bearer token (auth mode)"),
    "403": _error("The bearer token is another user's (auth mode)"),
}


def _operation(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    parameters = [*extra.pop("parameters", []), REQUEST_ID]
    return {"summary": summary, "parameters": parameters, "responses": responses, **extra}


def openapi_document(
    prefix: str, max_body_bytes: int, *, user_auth: bool = False
) -> dict[str, Any]:
    """The OpenAPI 3.1 document for an API mounted under *prefix* (e.g. ``/api``) that takes
    request bodies of up to *max_body_bytes*; with *user_auth*, user routes need a JWT."""
    cart = f"{prefix}/cart/{{user_id}}"
    paths: dict[str, Any] = {
        f"{prefix}/products": {"get": _operation(
            "List products in registry order, with live stock",
            {"200": _answer(PRODUCTS, "The catalog")},
        )},
        f"{cart}/items": {"post": _operation(
            "Add a product to the user's cart (answers once the cart has saved it)",
            {
                "200": _answer(ADDED, "The line added now"),
                "400": _error("Bad JSON, body, sku, quantity or user_id"),
                "404": _error("Product not found"),
                "409": _raised(InsufficientStock),
                "413": _error(f"Body over {max_body_bytes} bytes"),
                "415": _error("The body is not sent as Content-Type: application/json"),
                "503": BUSY, "504": SLOW,
            },
            parameters=[USER_ID_PARAMETER, IDEMPOTENCY_KEY_PARAMETER],
            requestBody={"required": True, "content": {"application/json": {
                "schema": ADD_ITEM_BODY}}},
        )},
        cart: {
            "get": _operation(
                "View the user's cart (empty answer with a message when there is none)",
                {"200": _answer(CART, "The cart"), "400": BAD_USER, "503": BUSY,
                 "504": SLOW},
                parameters=[USER_ID_PARAMETER],
            ),
            "delete": _operation(
                "Delete the user's cart; its actor ends",
                {"204": {"description": "Deleted (or there was none)"}, "400": BAD_USER,
                 "503": BUSY, "504": SLOW},
                parameters=[USER_ID_PARAMETER],
            ),
        },
        f"{cart}/checkout": {"post": _operation(
            "Check the cart out: order stored, stock reserved, services notified, cart ended",
            {
                "200": _answer(CHECKED_OUT, "The order"),
                "400": _error("No active cart, empty cart, bad user_id or Idempotency-Key"),
                "409": _error("Insufficient stock; the cart stays as it was"),
                "422": _raised(IdempotencyKeyReused),
                "503": BUSY, "504": _raised(ActorTimeout, "api.checkout"),
            },
            parameters=[USER_ID_PARAMETER, IDEMPOTENCY_KEY_PARAMETER],
        )},
        f"{cart}/items/{{sku}}": {"delete": _operation(
            "Remove one SKU from the cart",
            {"200": _answer(CART, "The cart without it"), "400": BAD_USER,
             "404": _raised(ItemNotInCart, "api.remove_item"), "503": BUSY, "504": SLOW},
            parameters=[USER_ID_PARAMETER, {"name": "sku", "in": "path", "required": True,
                                  "schema": {"type": "string", "minLength": 1}}],
        )},
        f"{prefix}/orders/{{order_id}}": {"get": _operation(
            "An order with what each service has done with it",
            {"200": _answer(ORDER_ANSWER, "The order"),
             "404": _error("Order not found"), "503": BUSY},
            parameters=[{"name": "order_id", "in": "path", "required": True,
                         "schema": ORDER_ID}],
        )},
        f"{prefix}/users/{{user_id}}/orders": {"get": _operation(
            "The user's orders, newest first",
            {"200": _answer(USER_ORDERS, "The orders"), "400": BAD_USER, "503": BUSY},
            parameters=[USER_ID_PARAMETER],
        )},
        f"{prefix}/admin/processes": {"get": _operation(
            "Live actors and supervised services",
            {"200": _answer(PROCESSES, "The live view"),
             "400": _error("Bad limit"), **ADMIN_ERRORS},
            parameters=[{"name": "limit", "in": "query", "required": False,
                         "schema": {"type": "integer", "minimum": 0, "maximum": 1000000}}],
            security=[{"adminToken": []}, {}],
        )},
        f"{prefix}/admin/registry": {"get": _operation(
            "The loaded registry",
            {"200": _answer(REGISTRY_VIEW, "Entries, version, load time"), **ADMIN_ERRORS},
            security=[{"adminToken": []}, {}],
        )},
        f"{prefix}/admin/registry/reload": {"post": _operation(
            "Re-read the registry folder and swap it in whole, or refuse it",
            {"200": _answer(RELOAD_REPORT, "What changed"),
             "422": _error("The new registry is invalid; the old one keeps serving"),
             **ADMIN_ERRORS},
            security=[{"adminToken": []}, {}],
        )},
        "/healthz": {"get": _operation(
            "Health: 503 when a supervised service was given up on",
            {"200": _answer(HEALTH, "Healthy"),
             "503": _error("A service gave up")},
        )},
        "/readyz": {"get": _operation(
            "Readiness for load balancers: 503 while this node cannot serve carts",
            {"200": _answer(READY, "Ready"),
             "503": _error("Starting, stopping, or the store does not answer")},
        )},
        "/metrics": {"get": _operation(
            "Prometheus metrics (text exposition format)",
            {"200": {"description": "Metrics", "content": {"text/plain": {
                "schema": {"type": "string"}}}}},
        )},
        "/openapi.json": {"get": _operation(
            "This document",
            {"200": _json({"type": "object"}, "The OpenAPI document")},
        )},
    }
    schemes: dict[str, Any] = {"adminToken": {"type": "http", "scheme": "bearer"}}
    if user_auth:
        schemes["userToken"] = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
        for path, operations in paths.items():
            if "{user_id}" in path or path == f"{prefix}/orders/{{order_id}}":
                for operation in operations.values():
                    operation["security"] = [{"userToken": []}]
                    operation["responses"]["401"] = USER_TOKEN_ERRORS["401"]
                    if "{user_id}" in path:
                        operation["responses"]["403"] = USER_TOKEN_ERRORS["403"]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "trioshop",
            "version": __version__,
            "description": "A shopping-cart server: one actor per cart, durable orders.",
        },
        "paths": paths,
        "components": {
            "schemas": {shape.name: shape.schema() for shape in SHAPES},
            "securitySchemes": schemes,
        },
    }
