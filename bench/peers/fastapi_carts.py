"""trioshop's cart API on the usual Python stack: FastAPI, uvicorn workers, carts in PostgreSQL."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import asyncpg
from fastapi import FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StrictInt, StrictStr
from starlette.exceptions import HTTPException

DATABASE_URL = os.environ["PEER_DATABASE_URL"]  # postgresql://postgres@127.0.0.1:5432/test
SCHEMA = os.environ.get("PEER_SCHEMA", "public")
APPLICATION_NAME = os.environ.get("PEER_APPLICATION_NAME", "peer")
CATALOG_PATH = os.environ["PEER_CATALOG"]  # [{"id", "title", "sku", "price_cents", "stock"}]
POOL_SIZE = int(os.environ.get("PEER_POOL_SIZE", "10"))

EMPTY_CART_MESSAGE = "Cart is empty (no active session)"
SETUP_LOCK = "fastapi_carts setup"  # advisory lock key: one worker creates and seeds at a time

CART_LINES = """SELECT sku, title, price_cents, quantity FROM peer_carts
                WHERE user_id = $1 ORDER BY position"""

SETUP = """
CREATE TABLE IF NOT EXISTS peer_stock (
    sku text PRIMARY KEY,
    available bigint NOT NULL CHECK (available >= 0)
);
CREATE TABLE IF NOT EXISTS peer_carts (
    user_id text NOT NULL,
    sku text NOT NULL,
    title text NOT NULL,
    price_cents bigint NOT NULL,
    quantity int NOT NULL,
    position bigserial NOT NULL,
    PRIMARY KEY (user_id, sku)
);
CREATE TABLE IF NOT EXISTS peer_orders (
    order_id text PRIMARY KEY,
    user_id text NOT NULL,
    lines jsonb NOT NULL,
    total_cents bigint NOT NULL,
    created_at timestamptz NOT NULL
);
"""


def load_catalog(path: str) -> dict[str, dict[str, Any]]:
    """The products of the catalog file, by SKU, in the file's order."""
    with open(path, encoding="utf-8") as file:
        return {product["sku"]: product for product in json.load(file)}


CATALOG = load_catalog(CATALOG_PATH)


def money(cents: int) -> int | float:
    """Integer cents as a JSON number with at most two decimals: 179997 -> 1799.97."""
    return cents // 100 if cents % 100 == 0 else cents / 100


def render_line(row: Any) -> dict[str, Any]:
    return {
        "sku": row["sku"], "title": row["title"],
        "price": money(row["price_cents"]), "quantity": row["quantity"],
    }


def total_cents(rows: list[Any]) -> int:
    return sum(row["price_cents"] * row["quantity"] for row in rows)


def render_cart(user_id: str, rows: list[Any]) -> dict[str, Any]:
    items = [render_line(row) for row in rows]
    return {"user_id": user_id, "items": items, "total": money(total_cents(rows))}


def insufficient_stock(sku: str, requested: int, available: int) -> HTTPException:
    return HTTPException(
        409, f"Insufficient stock for {sku}: requested {requested}, available {available}"
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    pool = await asyncpg.create_pool(
        DATABASE_URL, min_size=POOL_SIZE, max_size=POOL_SIZE,
        server_settings={"search_path": SCHEMA, "application_name": APPLICATION_NAME},
    )
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", SETUP_LOCK)
        await conn.execute(SETUP)
        await conn.executemany(
            "INSERT INTO peer_stock (sku, available) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            [(product["sku"], product["stock"]) for product in CATALOG.values()],
        )
    app.state.pool = pool
    try:
        yield
    finally:
        await pool.close()


# strict_content_type=False: a JSON body without a Content-Type is read as JSON, as trioshop does.
app = FastAPI(
    title="trioshop peer: FastAPI + asyncpg", lifespan=lifespan, strict_content_type=False
)

UserId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.@-]{1,64}$")]


class AddItem(BaseModel):
    sku: StrictStr = Field(min_length=1)
    quantity: StrictInt = Field(default=1, ge=1, le=1000)


@app.exception_handler(HTTPException)
async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


@app.exception_handler(RequestValidationError)
async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    error = exc.errors()[0]
    where, name = error["loc"][0], ".".join(str(part) for part in error["loc"][1:])
    if error["type"] == "json_invalid":
        message = "Invalid JSON body"
    elif where == "path":
        message = f"Invalid {name}: {error['msg']}"
    elif not name:
        message = "Request body must be a JSON object"
    elif error["type"] == "missing":
        message = f"Missing required field: {name}"
    else:
        message = f"Field '{name}': {error['msg']}"
    return JSONResponse({"error": message}, status_code=400)


@app.exception_handler(OSError)
@app.exception_handler(asyncpg.PostgresConnectionError)
@app.exception_handler(asyncpg.InterfaceError)
async def storage_error(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(
        {"error": "Storage is unavailable, retry shortly"}, status_code=503,
        headers={"Retry-After": "1"},
    )


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/api/products")
async def list_products(request: Request) -> dict[str, Any]:
    rows = await request.app.state.pool.fetch("SELECT sku, available FROM peer_stock")
    stock = {row["sku"]: row["available"] for row in rows}
    return {"products": [
        {"id": p["id"], "title": p["title"], "sku": p["sku"],
         "price": money(p["price_cents"]), "stock": stock.get(p["sku"], 0)}
        for p in CATALOG.values()
    ]}


@app.post("/api/cart/{user_id}/items")
async def add_item(user_id: UserId, body: AddItem, request: Request) -> dict[str, Any]:
    product = CATALOG.get(body.sku)
    if product is None:
        raise HTTPException(404, f"Product not found: {body.sku}")
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        available = await conn.fetchval(
            "SELECT available FROM peer_stock WHERE sku = $1", product["sku"]
        )
        # The upsert locks the line, so concurrent adds of one SKU to one cart see each other.
        line = await conn.fetchrow(
            """INSERT INTO peer_carts (user_id, sku, title, price_cents, quantity)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (user_id, sku)
               DO UPDATE SET quantity = peer_carts.quantity + excluded.quantity
               RETURNING sku, title, price_cents, quantity""",
            user_id, product["sku"], product["title"], product["price_cents"], body.quantity,
        )
        if line["quantity"] > (available or 0):
            raise insufficient_stock(product["sku"], line["quantity"], available or 0)  # rolls back
    return {"status": "added", "user_id": user_id,
            "item": {**render_line(line), "quantity": body.quantity}}


@app.get("/api/cart/{user_id}")
async def view_cart(user_id: UserId, request: Request) -> dict[str, Any]:
    rows = await request.app.state.pool.fetch(CART_LINES, user_id)
    if not rows:
        return {"user_id": user_id, "items": [], "total": 0, "message": EMPTY_CART_MESSAGE}
    return render_cart(user_id, rows)


@app.post("/api/cart/{user_id}/checkout")
async def checkout(user_id: UserId, request: Request) -> dict[str, Any]:
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        lines = await conn.fetch(CART_LINES + " FOR UPDATE", user_id)
        if not lines:
            raise HTTPException(400, "No active cart for this user")
        for line in sorted(lines, key=lambda line: line["sku"]):  # one lock order: no deadlocks
            taken = await conn.fetchval(
                """UPDATE peer_stock SET available = available - $2
                   WHERE sku = $1 AND available >= $2 RETURNING available""",
                line["sku"], line["quantity"],
            )
            if taken is None:
                available = await conn.fetchval(
                    "SELECT available FROM peer_stock WHERE sku = $1", line["sku"]
                )
                raise insufficient_stock(line["sku"], line["quantity"], available or 0)
        order = {"order_id": uuid.uuid4().hex, **render_cart(user_id, lines),
                 "timestamp": int(time.time())}
        await conn.execute(
            """INSERT INTO peer_orders (order_id, user_id, lines, total_cents, created_at)
               VALUES ($1, $2, $3::jsonb, $4, to_timestamp($5))""",
            order["order_id"], user_id, json.dumps(order["items"]), total_cents(lines),
            order["timestamp"],
        )
        # Only the lines checked out: a line added meanwhile stays in the cart.
        await conn.execute(
            "DELETE FROM peer_carts WHERE user_id = $1 AND sku = ANY($2::text[])",
            user_id, [line["sku"] for line in lines],
        )
    return {"status": "checked_out", "order": order}


@app.delete("/api/cart/{user_id}/items/{sku}")
async def remove_item(user_id: UserId, sku: str, request: Request) -> dict[str, Any]:
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        removed = await conn.fetchval(
            "DELETE FROM peer_carts WHERE user_id = $1 AND sku = $2 RETURNING sku", user_id, sku
        )
        if removed is None:
            raise HTTPException(404, f"Item not in cart: {sku}")
        rows = await conn.fetch(CART_LINES, user_id)
    return render_cart(user_id, rows)
