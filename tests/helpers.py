"""Shared test helpers: the shipped registry and edited copies, the CLI as a subprocess, skips
that fail under CI, and an in-process app with its client."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NoReturn

import attrs
import httpx
import pytest

from trioshop.config import Settings
from trioshop.http import create_app
from trioshop.http.auth import UserAuth
from trioshop.registry import Registry
from trioshop.shop import CartFactory, Shop
from trioshop.shop.services import ServiceStatistics

REGISTRY_DIR = Path(__file__).parents[1] / "registry"


def required(reason: str, *, ci_message: str | None = None, pytrace: bool = True) -> NoReturn:
    """Skip with *reason*; when ``CI`` is set, where a skip would hide a gap, fail instead with
    *ci_message* (default: *reason*)."""
    if os.environ.get("CI"):
        pytest.fail(ci_message or reason, pytrace=pytrace)
    pytest.skip(reason)


def run_trioshop(
    *args: str, env: Mapping[str, str] | None = None, timeout: float | None = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m trioshop *args`` to its end, output captured; *env* adds to ours."""
    return subprocess.run(
        [sys.executable, "-m", "trioshop", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, **(env or {})},
    )


def printed_by_fresh_python(code: str) -> list[str]:
    """What *code* prints, split on whitespace, run in a fresh interpreter (for what is set
    once per process, such as OpenTelemetry's global tracer provider); fails if it fails."""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout.split()


def registry_with(parent: Path, replacements: Mapping[str, str]) -> Path:
    """A copy of the shipped registry in *parent*/registry, each key of *replacements*
    replaced by its value in processes.yaml; returns the copy's folder."""
    folder = parent / "registry"
    shutil.copytree(REGISTRY_DIR, folder, dirs_exist_ok=True)
    processes = folder / "processes.yaml"
    text = processes.read_text()
    for old, new in replacements.items():
        text = text.replace(old, new)
    processes.write_text(text)
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
    auth: UserAuth | None = None,
) -> AsyncIterator[ShopClient]:
    app = create_app(registry, settings, cart_factory=cart_factory, auth=auth)
    async with app.test_app() as test_app:
        yield ShopClient(test_app, app)


def live_cart_names(shop: Shop) -> set[str]:
    """The names of the live actors (``cart:{user_id}``)."""
    return {info.name for info in shop.live_actors() if info.name is not None}


def service(shop: Shop, name: str) -> ServiceStatistics:
    """The running service *name*'s statistics."""
    found = [s for s in shop.statistics().services if s.state.name == name]
    assert found, f"no running service {name!r}"
    return found[0]


def buy_one(client: httpx.Client, user: str, sku: str) -> int:
    """Add one *sku* to *user*'s cart and check out: the add's status if it failed, else the
    checkout's (a racer for the last units gets 200 or 409)."""
    added = client.post(f"/api/cart/{user}/items", json={"sku": sku})
    if added.status_code != 200:
        return added.status_code
    return client.post(f"/api/cart/{user}/checkout").status_code


@attrs.define
class AddTally:
    """Adds sent while a node may die: those acknowledged, and those whose outcome is unknown
    (cut by the kill, or refused), per user."""

    acknowledged: Counter[str] = attrs.field(factory=Counter)
    uncertain: Counter[str] = attrs.field(factory=Counter)

    def add(self, client: httpx.Client, user: str, sku: str = "KB-002") -> bool:
        """Send one add for *user*; whether it was acknowledged."""
        try:
            reply = client.post(f"/api/cart/{user}/items", json={"sku": sku})
        except httpx.TransportError:  # cut by the kill: it may or may not have happened
            self.uncertain[user] += 1
            return False
        acknowledged = reply.status_code == 200
        (self.acknowledged if acknowledged else self.uncertain)[user] += 1
        return acknowledged

    def check(self, reply: httpx.Response, user: str) -> None:
        """*reply* (the user's cart) holds every acknowledged add, and more only for adds
        whose outcome is unknown."""
        items = reply.json()["items"]
        quantity = items[0]["quantity"] if items else 0
        assert self.acknowledged[user] <= quantity <= (
            self.acknowledged[user] + self.uncertain[user]
        ), (user, quantity, self.acknowledged[user], self.uncertain[user])
