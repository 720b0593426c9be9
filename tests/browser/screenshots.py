"""Regenerate docs/storefront.png and docs/ops.png: ``python -m tests.browser.screenshots``.

Starts ``trioshop run --memory``, gives it a little traffic and a few carts, and takes both
pages 1280 px wide with Debian's chromium under playwright. Not a test: it writes files.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from playwright.sync_api import expect, sync_playwright

from tests.browser.support import launch
from tests.helpers import REGISTRY_DIR
from trioshop.testing.server import running_server

DOCS = Path(__file__).parents[2] / "docs"
WIDTH = 1280
TRAFFIC_SECONDS = 12  # a few bars for the requests chart
TRAFFIC_REQUESTS = 600


def traffic(http: httpx.Client) -> None:
    """Some carts and orders, then a bounded burst of reads spread over a few seconds."""
    for user, sku, quantity in [("bob", "HP-005", 1), ("carol", "MON-004", 2),
                                ("dave", "MOUSE-003", 3), ("erin", "KB-002", 1)]:
        http.post(f"/api/cart/{user}/items", json={"sku": sku, "quantity": quantity})
    http.post("/api/cart/dave/checkout")
    pause = TRAFFIC_SECONDS / TRAFFIC_REQUESTS
    for n in range(TRAFFIC_REQUESTS):
        http.get("/api/products" if n % 3 else "/api/cart/bob")
        time.sleep(pause * (1 + (n // 50) % 3))  # uneven, as real traffic is


def main() -> None:
    with running_server(
        "--registry", str(REGISTRY_DIR), "--memory", "--node-id", "shop-1"
    ) as server, \
            httpx.Client(base_url=server.base_url, timeout=10) as http, \
            sync_playwright() as playwright:
        browser = launch(playwright)
        context = browser.new_context(viewport={"width": WIDTH, "height": 900})
        ops = context.new_page()
        ops.goto(f"{server.base_url}/ops")
        shop = context.new_page()
        shop.goto(f"{server.base_url}/?user=alice")
        shop.get_by_role("button", name="Add Laptop Pro 16 to the cart").click()
        expect(shop.locator("#cart-lines tr")).to_have_count(1)
        shop.get_by_label("Quantity of Mechanical Keyboard").fill("2")
        shop.get_by_role("button", name="Add Mechanical Keyboard to the cart").click()
        expect(shop.locator("#cart-lines tr")).to_have_count(2)
        shop.get_by_role("button", name="Check out").click()
        expect(shop.locator('.order [data-service="delivery"] strong')).to_have_text("dispatched")
        shop.get_by_label("Quantity of Noise-Cancelling Headphones").fill("1")
        shop.get_by_role("button", name="Add Noise-Cancelling Headphones to the cart").click()
        expect(shop.locator("#cart-lines tr")).to_have_count(1)
        traffic(http)
        shop.reload()
        expect(shop.locator("#cart-lines tr")).to_have_count(1)
        expect(shop.locator('.order [data-service="notifier"] strong')).to_have_text("sent")
        shop.screenshot(path=str(DOCS / "storefront.png"), full_page=True)
        ops.bring_to_front()
        expect(ops.locator('#actor-rows tr[data-name="cart:alice"]')).to_be_visible()
        ops.screenshot(path=str(DOCS / "ops.png"), full_page=True)
        browser.close()
    print(f"wrote {DOCS / 'storefront.png'} and {DOCS / 'ops.png'}")


if __name__ == "__main__":
    main()
