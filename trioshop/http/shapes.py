"""The JSON shapes the API answers with, each written once: its schema and how a value renders.

A :class:`Shape` is both what the OpenAPI document publishes and what the routes render, so
an answer cannot drift from its description.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from trioshop.domain.limits import (
    IDEMPOTENCY_KEY_MAX_LENGTH,
    MAX_QUANTITY,
    ORDER_ID_MAX_LENGTH,
    USER_ID_PATTERN,
)
from trioshop.domain.money import to_json_number

Schema = dict[str, Any]

STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
MONEY: Schema = {"type": "number", "minimum": 0, "multipleOf": 0.01}
STRINGS: Schema = {"type": "array", "items": STRING}
USER_ID: Schema = {"type": "string", "pattern": f"^{USER_ID_PATTERN}$"}
ORDER_ID: Schema = {"type": "string", "minLength": 1, "maxLength": ORDER_ID_MAX_LENGTH}
IDEMPOTENCY_KEY: Schema = {
    "type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX_LENGTH,
}


def nullable(schema: Schema) -> Schema:
    return {**schema, "type": [schema["type"], "null"]}


def const(value: str) -> Field:
    """A field that is always *value*."""
    return Field({"type": "string", "enum": [value]}, lambda _: value)


def _by_name(name: str) -> Callable[[Any], Any]:
    def get(value: Any) -> Any:
        return value[name] if isinstance(value, Mapping) else getattr(value, name)

    return get


@attrs.frozen
class Field:
    """One property: its schema (or the :class:`Shape` it holds), and how to read it.

    ``get`` reads it from the value being rendered (default: the attribute, or key, of the
    property's name); ``many`` makes it a list of its shape; an optional field whose value is
    ``None`` is left out.
    """

    schema: Schema | Shape
    get: Callable[[Any], Any] | None = None
    many: bool = False
    required: bool = True

    def document(self) -> Schema:
        schema = self.schema.ref() if isinstance(self.schema, Shape) else self.schema
        return {"type": "array", "items": schema} if self.many else schema

    def render(self, raw: Any) -> Any:
        if not isinstance(self.schema, Shape):
            return raw
        if self.many:
            return [self.schema.render(item) for item in raw]
        return self.schema.render(raw)


@attrs.frozen
class Shape:
    """A JSON object answer: named fields, each with its schema and its reader.

    With ``extends``, the object is that shape's (read from ``extends[1](value)``) plus the
    fields of its own.
    """

    name: str
    fields: Mapping[str, Field]
    extends: tuple[Shape, Callable[[Any], Any]] | None = None

    def ref(self) -> Schema:
        return {"$ref": f"#/components/schemas/{self.name}"}

    def schema(self) -> Schema:
        own = {
            "type": "object",
            "required": [name for name, f in self.fields.items() if f.required],
            "properties": {name: f.document() for name, f in self.fields.items()},
        }
        return own if self.extends is None else {"allOf": [self.extends[0].ref(), own]}

    def render(self, value: Any, **given: Any) -> dict[str, Any]:
        """The JSON object for *value*; *given* supplies fields by name instead of reading."""
        answer: dict[str, Any] = {}
        if self.extends is not None:
            base, get_base = self.extends
            answer.update(base.render(get_base(value)))
        for name, field in self.fields.items():
            raw = given[name] if name in given else (field.get or _by_name(name))(value)
            if raw is None and not field.required:
                continue
            answer[name] = field.render(raw)
        return answer


def _money(attribute: str) -> Field:
    return Field(MONEY, lambda value: to_json_number(getattr(value, attribute)))


ERROR = Shape("Error", {"error": Field(STRING)})

# GET products: renders a (product, live stock) pair.
PRODUCT = Shape("Product", {
    "id": Field(STRING, lambda ps: ps[0].id),
    "title": Field(STRING, lambda ps: ps[0].title),
    "sku": Field(STRING, lambda ps: ps[0].sku),
    "price": Field(MONEY, lambda ps: to_json_number(ps[0].price_cents)),
    "stock": Field({"type": "integer", "minimum": 0}, lambda ps: ps[1]),
})
PRODUCTS = Shape("Products", {"products": Field(PRODUCT, lambda value: value, many=True)})

CART_ITEM = Shape("CartItem", {
    "sku": Field(STRING),
    "title": Field(STRING),
    "price": _money("price_cents"),
    "quantity": Field({"type": "integer", "minimum": 1}),
})
# Renders (user_id, the line as added now).
ADDED = Shape("Added", {
    "status": const("added"),
    "user_id": Field(STRING, lambda ua: ua[0]),
    "item": Field(CART_ITEM, lambda ua: ua[1]),
})
# Every empty cart says so, whether the node had it live (emptied) or not (never used, checked
# out, live on another node): one body for the same cart on every node.
EMPTY_CART_MESSAGE = "Cart is empty (no active session)"
CART = Shape("Cart", {
    "user_id": Field(STRING),
    "items": Field(CART_ITEM, lambda view: view.lines, many=True),
    "total": _money("total_cents"),
    "message": Field(
        STRING, lambda view: None if view.lines else EMPTY_CART_MESSAGE, required=False
    ),
})
ORDER = Shape("Order", {
    "order_id": Field(STRING),
    "user_id": Field(STRING),
    "items": Field(CART_ITEM, lambda order: order.lines, many=True),
    "total": _money("total_cents"),
    "timestamp": Field(INTEGER),
})
CHECKED_OUT = Shape("CheckedOut", {
    "status": const("checked_out"),
    "order": Field(ORDER, lambda order: order),
})
SERVICE_OUTCOME = Shape("ServiceOutcome", {
    "status": Field(STRING, lambda outcome: "pending" if outcome is None else outcome.status),
    "updated_at": Field(nullable(NUMBER), lambda outcome: None if outcome is None else outcome.at),
})
# Renders (stored order, the running services' names): every running service is listed,
# "pending" until it has handled the order.
STORED_ORDER = Shape(
    "StoredOrder",
    {"services": Field(
        {"type": "object", "additionalProperties": SERVICE_OUTCOME.ref()},
        lambda so: {name: SERVICE_OUTCOME.render(so[0].services.get(name)) for name in so[1]},
    )},
    extends=(ORDER, lambda so: so[0].order),
)
ORDER_ANSWER = Shape("OrderAnswer", {"order": Field(STORED_ORDER)})
USER_ORDERS = Shape("UserOrders", {
    "user_id": Field(STRING),
    "orders": Field(STORED_ORDER, many=True),
})
HEALTH = Shape("Health", {"status": const("ok")})
READY = Shape("Ready", {"status": const("ready")})

ACTOR = Shape("Actor", {
    "pid": Field(INTEGER),
    "name": Field(nullable(STRING)),
    "mailbox_depth": Field(INTEGER),
    "age_seconds": Field(NUMBER, lambda info: round(info.age, 3)),
    "last_message_seconds_ago": Field(NUMBER, lambda info: round(info.last_message_age, 3)),
})
SERVICE = Shape("Service", {
    "state": Field(STRING, lambda s: s.state.status.value),
    "restarts": Field(INTEGER, lambda s: s.state.restarts),
    "failures": Field(INTEGER, lambda s: s.state.failures),
    "last_error": Field(nullable(STRING), lambda s: s.state.last_error),
    "orders_processed": Field(INTEGER, lambda s: s.processed),
})
# Renders {"count": live actors, "actors": [ActorInfo], "services": [ServiceStatistics]}.
PROCESSES = Shape("Processes", {
    "count": Field(INTEGER),
    "actors": Field(ACTOR, many=True),
    "services": Field(
        {"type": "object", "additionalProperties": SERVICE.ref()},
        lambda p: {s.state.name: SERVICE.render(s) for s in p["services"]},
    ),
})
REGISTRY_ENTRY = Shape("RegistryEntry", {
    "id": Field(STRING),
    "kind": Field(STRING),
    "source": Field(STRING),
    "meta": Field({"type": "object"}),
})
REGISTRY_VIEW = Shape("RegistryView", {
    "folder": Field(STRING),
    "version": Field(STRING),
    "loaded_at": Field(NUMBER),
    # Each entry also carries the fields of its kind.
    "entries": Field({"type": "array", "items": REGISTRY_ENTRY.ref()}),
})
RELOAD_REPORT = Shape("ReloadReport", {
    "status": const("reloaded"),
    "version": Field(STRING),
    "products": Field(INTEGER),
    "services_restarted": Field(STRINGS),
    "services_started": Field(STRINGS),
    "services_stopped": Field(STRINGS),
    "restart_required": Field(STRINGS),
})

# Request bodies: described here, checked by ``validation``.
ADD_ITEM_BODY: Schema = {
    "type": "object", "required": ["sku"],
    "properties": {
        "sku": {"type": "string", "minLength": 1},
        "quantity": {"type": "integer", "minimum": 1, "maximum": MAX_QUANTITY, "default": 1},
    },
}

SHAPES: tuple[Shape, ...] = (
    ERROR, PRODUCT, PRODUCTS, CART_ITEM, ADDED, CART, ORDER, CHECKED_OUT, SERVICE_OUTCOME,
    STORED_ORDER, ORDER_ANSWER, USER_ORDERS, HEALTH, READY, ACTOR, SERVICE, PROCESSES,
    REGISTRY_ENTRY, REGISTRY_VIEW, RELOAD_REPORT,
)
