"""The OpenAPI 3 description of the HTTP API, kept beside the routes (a test checks they agree)."""

from __future__ import annotations

from typing import Any

from trioshop import __version__
from trioshop.http.validation import MAX_QUANTITY


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    response = _json(_ref("Error"), description)
    if retry_after:
        response["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
    return response


REQUEST_ID = {
    "name": "X-Request-ID", "in": "header", "required": False,
    "description": "Echoed back; generated when absent or unusable.",
    "schema": {"type": "string"},
}
USER_ID = {
    "name": "user_id", "in": "path", "required": True,
    "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_.@\-]{1,64}$"},
}

_MONEY = {"type": "number", "minimum": 0, "multipleOf": 0.01}
_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "string"}},
    },
    "Product": {
        "type": "object", "required": ["id", "title", "sku", "price", "stock"],
        "properties": {
            "id": {"type": "string"}, "title": {"type": "string"}, "sku": {"type": "string"},
            "price": _MONEY, "stock": {"type": "integer", "minimum": 0},
        },
    },
    "CartItem": {
        "type": "object", "required": ["sku", "title", "price", "quantity"],
        "properties": {
            "sku": {"type": "string"}, "title": {"type": "string"}, "price": _MONEY,
            "quantity": {"type": "integer", "minimum": 1},
        },
    },
    "AddItem": {
        "type": "object", "required": ["sku"],
        "properties": {
            "sku": {"type": "string", "minLength": 1},
            "quantity": {"type": "integer", "minimum": 1, "maximum": MAX_QUANTITY, "default": 1},
        },
    },
    "Added": {
        "type": "object", "required": ["status", "user_id", "item"],
        "properties": {
            "status": {"type": "string", "enum": ["added"]}, "user_id": {"type": "string"},
            "item": _ref("CartItem"),
        },
    },
    "Cart": {
        "type": "object", "required": ["user_id", "items", "total"],
        "properties": {
            "user_id": {"type": "string"},
            "items": {"type": "array", "items": _ref("CartItem")},
            "total": _MONEY,
            "message": {"type": "string"},
        },
    },
    "Order": {
        "type": "object", "required": ["order_id", "user_id", "items", "total", "timestamp"],
        "properties": {
            "order_id": {"type": "string"}, "user_id": {"type": "string"},
            "items": {"type": "array", "items": _ref("CartItem")},
            "total": _MONEY, "timestamp": {"type": "integer"},
        },
    },
    "StoredOrder": {
        "allOf": [
            _ref("Order"),
            {
                "type": "object", "required": ["services"],
                "properties": {"services": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object", "required": ["status", "updated_at"],
                        "properties": {
                            "status": {"type": "string"},
                            "updated_at": {"type": ["number", "null"]},
                        },
                    },
                }},
            },
        ],
    },
    "CheckedOut": {
        "type": "object", "required": ["status", "order"],
        "properties": {
            "status": {"type": "string", "enum": ["checked_out"]}, "order": _ref("Order"),
        },
    },
    "Processes": {
        "type": "object", "required": ["count", "actors", "services"],
        "properties": {
            "count": {"type": "integer"},
            "actors": {"type": "array", "items": {
                "type": "object",
                "required": ["pid", "name", "mailbox_depth", "age_seconds",
                             "last_message_seconds_ago"],
                "properties": {
                    "pid": {"type": "integer"}, "name": {"type": ["string", "null"]},
                    "mailbox_depth": {"type": "integer"}, "age_seconds": {"type": "number"},
                    "last_message_seconds_ago": {"type": "number"},
                },
            }},
            "services": {"type": "object", "additionalProperties": {
                "type": "object", "required": ["state", "restarts", "failures", "last_error"],
                "properties": {
                    "state": {"type": "string"}, "restarts": {"type": "integer"},
                    "failures": {"type": "integer"}, "last_error": {"type": ["string", "null"]},
                },
            }},
        },
    },
    "RegistryView": {
        "type": "object", "required": ["folder", "version", "loaded_at", "entries"],
        "properties": {
            "folder": {"type": "string"}, "version": {"type": "string"},
            "loaded_at": {"type": "number"},
            "entries": {"type": "array", "items": {
                "type": "object", "required": ["id", "kind", "source", "meta"],
            }},
        },
    },
    "ReloadReport": {
        "type": "object",
        "required": ["status", "version", "products", "services_restarted", "services_started",
                     "services_stopped", "restart_required"],
        "properties": {
            "status": {"type": "string", "enum": ["reloaded"]},
            "version": {"type": "string"}, "products": {"type": "integer"},
            **{
                name: {"type": "array", "items": {"type": "string"}}
                for name in ("services_restarted", "services_started", "services_stopped",
                             "restart_required")
            },
        },
    },
}

BAD_USER = _error("Invalid user_id")
BUSY = _error("The cart or the store is busy; retry after Retry-After", retry_after=True)
SLOW = _error("The cart did not answer in time")
ADMIN_ERRORS = {
    "401": _error("Missing or wrong admin bearer token (when one is configured)"),
    "403": _error("Not a loopback client, and no admin token configured"),
}


def _operation(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    parameters = [*extra.pop("parameters", []), REQUEST_ID]
    return {"summary": summary, "parameters": parameters, "responses": responses, **extra}


def openapi_document(prefix: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document for an API mounted under *prefix* (e.g. ``/api``)."""
    cart = f"{prefix}/cart/{{user_id}}"
    paths: dict[str, Any] = {
        f"{prefix}/products": {"get": _operation(
            "List products in registry order, with live stock",
            {"200": _json({"type": "object", "required": ["products"], "properties": {
                "products": {"type": "array", "items": _ref("Product")}}}, "The catalog")},
        )},
        f"{cart}/items": {"post": _operation(
            "Add a product to the user's cart (answers once the cart has saved it)",
            {
                "200": _json(_ref("Added"), "The line added now"),
                "400": _error("Bad JSON, body, sku, quantity or user_id"),
                "404": _error("Product not found"),
                "409": _error("More than the stock on hand"),
                "413": _error("Body over 64 KiB"),
                "503": BUSY, "504": SLOW,
            },
            parameters=[USER_ID],
            requestBody={"required": True, "content": {"application/json": {
                "schema": _ref("AddItem")}}},
        )},
        cart: {
            "get": _operation(
                "View the user's cart (empty answer with a message when there is none)",
                {"200": _json(_ref("Cart"), "The cart"), "400": BAD_USER, "503": BUSY,
                 "504": SLOW},
                parameters=[USER_ID],
            ),
            "delete": _operation(
                "Delete the user's cart; its actor ends",
                {"204": {"description": "Deleted (or there was none)"}, "400": BAD_USER,
                 "503": BUSY, "504": SLOW},
                parameters=[USER_ID],
            ),
        },
        f"{cart}/checkout": {"post": _operation(
            "Check the cart out: order stored, stock reserved, services notified, cart ended",
            {
                "200": _json(_ref("CheckedOut"), "The order"),
                "400": _error("No active cart, empty cart, bad user_id or Idempotency-Key"),
                "409": _error("Insufficient stock; the cart stays as it was"),
                "422": _error("Idempotency-Key already used by another user"),
                "503": BUSY, "504": _error("Checkout timed out"),
            },
            parameters=[USER_ID, {
                "name": "Idempotency-Key", "in": "header", "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            }],
        )},
        f"{cart}/items/{{sku}}": {"delete": _operation(
            "Remove one SKU from the cart",
            {"200": _json(_ref("Cart"), "The cart without it"), "400": BAD_USER,
             "404": _error("Item not in cart"), "503": BUSY, "504": SLOW},
            parameters=[USER_ID, {"name": "sku", "in": "path", "required": True,
                                  "schema": {"type": "string", "minLength": 1}}],
        )},
        f"{prefix}/orders/{{order_id}}": {"get": _operation(
            "An order with what each service has done with it",
            {"200": _json({"type": "object", "required": ["order"], "properties": {
                "order": _ref("StoredOrder")}}, "The order"),
             "404": _error("Order not found"), "503": BUSY},
            parameters=[{"name": "order_id", "in": "path", "required": True,
                         "schema": {"type": "string", "minLength": 1}}],
        )},
        f"{prefix}/users/{{user_id}}/orders": {"get": _operation(
            "The user's orders, newest first",
            {"200": _json({"type": "object", "required": ["user_id", "orders"], "properties": {
                "user_id": {"type": "string"},
                "orders": {"type": "array", "items": _ref("StoredOrder")}}}, "The orders"),
             "400": BAD_USER, "503": BUSY},
            parameters=[USER_ID],
        )},
        f"{prefix}/admin/processes": {"get": _operation(
            "Live actors and supervised services",
            {"200": _json(_ref("Processes"), "The live view"),
             "400": _error("Bad limit"), **ADMIN_ERRORS},
            parameters=[{"name": "limit", "in": "query", "required": False,
                         "schema": {"type": "integer", "minimum": 0, "maximum": 1000000}}],
            security=[{"adminToken": []}, {}],
        )},
        f"{prefix}/admin/registry": {"get": _operation(
            "The loaded registry",
            {"200": _json(_ref("RegistryView"), "Entries, version, load time"), **ADMIN_ERRORS},
            security=[{"adminToken": []}, {}],
        )},
        f"{prefix}/admin/registry/reload": {"post": _operation(
            "Re-read the registry folder and swap it in whole, or refuse it",
            {"200": _json(_ref("ReloadReport"), "What changed"),
             "422": _error("The new registry is invalid; the old one keeps serving"),
             **ADMIN_ERRORS},
            security=[{"adminToken": []}, {}],
        )},
        "/healthz": {"get": _operation(
            "Health: 503 when a supervised service was given up on",
            {"200": _json({"type": "object", "required": ["status"], "properties": {
                "status": {"type": "string", "enum": ["ok"]}}}, "Healthy"),
             "503": _error("A service gave up")},
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
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "trioshop",
            "version": __version__,
            "description": "A shopping-cart server: one actor per cart, durable orders.",
        },
        "paths": paths,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
        },
    }
