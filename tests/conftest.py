"""Shared fixtures: the shipped registry, and an in-process app with its test client."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from trioshop.config import Settings
from trioshop.http import create_app
from trioshop.registry import Registry, load_registry
from trioshop.shop.shop import CartFactory, Shop

REGISTRY_DIR = Path(__file__).parents[1] / "registry"


@pytest.fixture
def registry() -> Registry:
    return load_registry(REGISTRY_DIR)


@pytest.fixture
def registry_copy(tmp_path: Path) -> Path:
    """A writable copy of the shipped registry folder."""
    folder = tmp_path / "registry"
    shutil.copytree(REGISTRY_DIR, folder)
    return folder


class ShopClient:
    """An in-process app, its test client, and a handle on the running shop."""

    def __init__(self, test_app: Any, app: Any) -> None:
        self.test_app = test_app
        self.app = app
        self.client = test_app.test_client()

    @property
    def shop(self) -> Shop:
        shop = self.app.extensions["trioshop"].shop
        assert shop is not None
        return shop

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        client: str = "127.0.0.1",
    ) -> tuple[int, Any, Any]:
        """One request from *client* (an IP address); returns status, JSON body, headers."""
        kwargs: dict[str, Any] = {
            "headers": headers or {},
            "scope_base": {"client": (client, 50000)},
        }
        if json is not None:
            kwargs["json"] = json
        if data is not None:
            kwargs["data"] = data
        response = await self.client.open(path, method=method, **kwargs)
        body = await response.get_json() if response.mimetype == "application/json" else None
        return response.status_code, body, response.headers

    async def add(self, user: str, sku: str, quantity: int = 1) -> tuple[int, Any, Any]:
        return await self.request(
            "POST", f"/api/cart/{user}/items", json={"sku": sku, "quantity": quantity}
        )


@asynccontextmanager
async def open_shop_client(
    registry: Registry,
    settings: Settings | None = None,
    cart_factory: CartFactory | None = None,
) -> AsyncIterator[ShopClient]:
    app = create_app(registry, settings, cart_factory=cart_factory)
    async with app.test_app() as test_app:
        yield ShopClient(test_app, app)


@pytest.fixture
async def shop_client(registry: Registry) -> AsyncIterator[ShopClient]:
    async with open_shop_client(registry) as client:
        yield client
