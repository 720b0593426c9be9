"""The opt-in user authentication mode through the app: who may reach which cart and order."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.helpers import ShopClient, open_shop_client
from trioshop.http.auth import UserAuth, mint_token
from trioshop.registry import Registry

SECRET = "0123456789abcdef0123456789abcdef"  # 32 bytes, as HS256 asks


def bearer(user_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, user_id)}"}


@pytest.fixture
async def client(registry: Registry) -> AsyncIterator[ShopClient]:
    async with open_shop_client(registry, auth=UserAuth.from_secret(SECRET)) as opened:
        yield opened


USER_ROUTES = [
    ("POST", "/api/cart/alice/items"),
    ("GET", "/api/cart/alice"),
    ("POST", "/api/cart/alice/checkout"),
    ("DELETE", "/api/cart/alice/items/KB-002"),
    ("DELETE", "/api/cart/alice"),
    ("GET", "/api/users/alice/orders"),
]


@pytest.mark.parametrize(("method", "path"), USER_ROUTES)
async def test_user_routes_need_a_token(client: ShopClient, method: str, path: str) -> None:
    """Every route naming a user answers 401 with a Bearer challenge without a token."""
    status, body, headers = await client.request(method, path, json={"sku": "KB-002"})
    assert status == 401
    assert headers["WWW-Authenticate"].startswith('Bearer realm="trioshop"')
    assert "Authorization: Bearer" in body["error"]


@pytest.mark.parametrize(("method", "path"), USER_ROUTES)
async def test_another_users_token_is_403(client: ShopClient, method: str, path: str) -> None:
    """A valid token for bob opens none of alice's routes."""
    status, _, _ = await client.request(method, path, json={"sku": "KB-002"}, headers=bearer("bob"))
    assert status == 403


async def test_owner_shops_and_sees_only_own_orders(client: ShopClient) -> None:
    """Alice with her token adds, checks out and reads her order; bob cannot see it."""
    alice = bearer("alice")
    status, _, _ = await client.request(
        "POST", "/api/cart/alice/items", json={"sku": "KB-002"}, headers=alice
    )
    assert status == 200
    status, body, _ = await client.request("POST", "/api/cart/alice/checkout", headers=alice)
    assert status == 200
    order_path = f"/api/orders/{body['order']['order_id']}"
    assert (await client.request("GET", order_path, headers=alice))[0] == 200
    assert (await client.request("GET", order_path, headers=bearer("bob")))[0] == 404
    assert (await client.request("GET", order_path))[0] == 401


async def test_bad_token_is_401_invalid_token(client: ShopClient) -> None:
    """A token signed with another secret is refused with error=invalid_token."""
    forged = mint_token("f" * 32, "alice")
    status, _, headers = await client.request(
        "GET", "/api/cart/alice", headers={"Authorization": f"Bearer {forged}"}
    )
    assert status == 401
    assert 'error="invalid_token"' in headers["WWW-Authenticate"]


async def test_public_and_admin_routes_are_unchanged(client: ShopClient) -> None:
    """Products, health and the admin API (loopback or admin token) need no user token."""
    assert (await client.request("GET", "/api/products"))[0] == 200
    assert (await client.request("GET", "/healthz"))[0] == 200
    assert (await client.request("GET", "/api/admin/processes"))[0] == 200


async def test_openapi_describes_the_user_token(client: ShopClient) -> None:
    """In auth mode the API document names the bearer scheme and the 401/403 answers."""
    _, document, _ = await client.request("GET", "/openapi.json")
    assert "userToken" in document["components"]["securitySchemes"]
    view = document["paths"]["/api/cart/{user_id}"]["get"]
    assert view["security"] == [{"userToken": []}]
    assert {"401", "403"} <= set(view["responses"])
