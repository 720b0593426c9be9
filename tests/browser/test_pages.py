"""The storefront and ops pages in a real browser (Debian's chromium under playwright)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.helpers import REGISTRY_DIR, run_trioshop
from trioshop import events
from trioshop.testing.server import ServerProcess, running_server

WIDE = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 740}
LOCALE = "en-US"  # prices read "$149.99": the shop's currency is US dollars
TIMES = "\N{MULTIPLICATION SIGN}"  # as in "2 x Keyboard"
SECRET = "browser-secret-0123456789abcdef0123"  # a user-auth secret (32 bytes or more)


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    with running_server("--registry", str(REGISTRY_DIR), "--memory") as process:
        yield process


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def test_shopping_shows_up_live_on_the_ops_page(browser: Any, server: ServerProcess) -> None:
    """Add through the storefront, see cart:ann live on /ops, check out, see it dispatched."""
    context = browser.new_context(viewport=WIDE, locale=LOCALE)
    ops = context.new_page()
    ops.goto(f"{server.base_url}/ops")
    expect(ops.locator("#conn")).to_have_attribute("data-state", "live")
    node = httpx.get(f"{server.base_url}/healthz").headers["X-Served-By"]
    expect(ops.locator("#node")).to_have_text(node)

    shop = context.new_page()
    shop.goto(f"{server.base_url}/?user=ann")
    expect(shop.locator("#cart-user")).to_have_text("ann")
    shop.get_by_label("Quantity of Mechanical Keyboard").fill("2")
    shop.get_by_role("button", name="Add Mechanical Keyboard to the cart").click()
    notice = shop.locator("#notice")
    expect(notice).to_have_text(f"Added 2 {TIMES} Mechanical Keyboard to the cart.")
    expect(shop.locator("#cart-lines tr")).to_have_count(1)
    expect(shop.locator("#cart-total")).to_have_text("$299.98")

    actor = ops.locator('#actor-rows tr[data-name="cart:ann"]')
    expect(actor).to_be_visible(timeout=1000)
    expect(ops.locator("#lifecycle")).to_contain_text("spawned cart:ann")
    expect(ops.locator(f'#events li[data-event="{events.ITEM_ADDED}"]')).to_have_count(1)

    shop.get_by_role("button", name="Add Wireless Mouse to the cart").click()
    expect(shop.locator("#cart-lines tr")).to_have_count(2)
    shop.get_by_role("button", name="Remove Wireless Mouse from the cart").click()
    expect(shop.locator("#cart-lines tr")).to_have_count(1)
    expect(shop.locator("#cart-total")).to_have_text("$299.98")

    shop.get_by_role("button", name="Check out").click()
    expect(notice).to_contain_text("Thank you! Order")
    order = shop.locator("#order-list .order").first
    expect(order.locator('[data-service="delivery"] strong')).to_have_text("dispatched")
    expect(order.locator('[data-service="notifier"] strong')).to_have_text("sent")
    expect(shop.locator("#cart-empty")).to_be_visible()
    expect(shop.locator("#served-by")).to_have_text(re.compile(r"Served by 127\.0\.0\.1:\d+"))

    expect(actor).to_have_count(0)
    expect(ops.locator("#lifecycle")).to_contain_text("ended: cart:ann")
    for event in [events.CHECKOUT_COMPLETED, "DELIVERY package dispatched for user ann",
                  "EMAIL sent to ann"]:
        expect(ops.locator(f'#events li[data-event="{event}"]')).to_have_count(1)
    expect(ops.locator('#service-rows tr[data-service="delivery"]')).to_contain_text("running")
    expect(ops.locator("#c-checkouts")).to_have_text("1")
    expect(ops.locator("#chart rect").first).to_be_attached()
    expect(ops.locator("#lost")).to_have_text("0")
    context.close()


def test_refusals_are_explained_as_a_shopper_needs(browser: Any) -> None:
    """Out of stock (409) and a full shop (503, retried as Retry-After says) read as advice."""
    with running_server(
        "--registry", str(REGISTRY_DIR), "--memory", "--max-live-carts", "1"
    ) as server:
        page = browser.new_context(viewport=WIDE).new_page()
        page.goto(f"{server.base_url}/?user=ann")
        quantity = page.get_by_label("Quantity of 4K Monitor 27")
        quantity.fill("75")
        quantity.press("Enter")
        expect(page.locator("#cart-lines tr")).to_have_count(1)
        expect(page.locator('li[data-sku="MON-004"] .stock')).to_have_text("75 in stock")
        quantity.fill("1")
        quantity.press("Enter")
        expect(page.get_by_role("alert")).to_contain_text(
            f"Only 75 {TIMES} 4K Monitor 27 are left: your cart would hold 76. Choose a smaller"
        )
        page.get_by_role("button", name="Dismiss").click()
        expect(page.get_by_role("alert")).to_be_hidden()

        user = page.get_by_label("Shopping as")
        user.fill("bob")
        user.press("Enter")
        expect(page.locator("#cart-user")).to_have_text("bob")
        page.get_by_role("button", name="Add Wireless Mouse to the cart").click()
        expect(page.locator("#notice")).to_contain_text("The shop is busy; trying again")
        expect(page.get_by_role("alert")).to_contain_text(
            "The shop is very busy right now and could not take this. Nothing was changed",
            timeout=10_000,
        )
        expect(page.get_by_role("button", name="Try again")).to_be_visible()
        expect(page.locator("#cart-empty")).to_be_visible()


def test_the_ops_stream_survives_idle_connection_cuts(browser: Any) -> None:
    """With --connection-idle 2 the page reconnects every ~2.5 s and still loses no event."""
    with running_server(
        "--registry", str(REGISTRY_DIR), "--memory", "--connection-idle", "2"
    ) as server, httpx.Client(base_url=server.base_url, timeout=10) as http:
        page = browser.new_context(viewport=WIDE).new_page()
        page.goto(f"{server.base_url}/ops")
        conn = page.locator("#conn")
        expect(conn).to_have_attribute("data-state", "live")
        added = page.locator(f'#events li[data-event="{events.ITEM_ADDED}"]')
        for n in range(3):
            expect(conn).to_have_attribute("data-state", "reconnecting", timeout=10_000)
            assert http.post(
                f"/api/cart/u{n}/items", json={"sku": "HP-005", "quantity": 1}
            ).status_code == 200
            expect(conn).to_have_attribute("data-state", "live", timeout=10_000)
            expect(added).to_have_count(n + 1)
        expect(page.locator("#connections")).to_have_text(re.compile(r"^([4-9]|\d\d+)$"))
        expect(page.locator("#lost")).to_have_text("0")
        seqs = [int(s) for s in page.locator("#events li").evaluate_all(
            "items => items.map(item => item.dataset.seq)"
        )]
        assert seqs == list(range(seqs[0], seqs[0] - len(seqs), -1))  # newest first, no hole
        expect(page.locator("#stream-notes")).to_be_empty()


def test_pages_left_open_two_minutes_still_update(browser: Any, server: ServerProcess) -> None:
    """Both pages open for two minutes at the default idle cut (30 s) keep showing news."""
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        context = browser.new_context(viewport=WIDE)
        ops, shop = context.new_page(), context.new_page()
        ops.goto(f"{server.base_url}/ops")
        shop.goto(f"{server.base_url}/")
        conn = ops.locator("#conn")
        expect(conn).to_have_attribute("data-state", "live")
        stock = shop.locator('li[data-sku="HP-005"] .stock')
        expect(stock).to_have_text("150 in stock")
        added = ops.locator(f'#events li[data-event="{events.ITEM_ADDED}"]')
        started, cuts = time.monotonic(), 0
        # Each round waits for the server's idle cut (event-driven, ~30 s), then for news.
        while time.monotonic() - started < 120:
            expect(conn).to_have_attribute("data-state", "reconnecting", timeout=45_000)
            cuts += 1
            assert http.post(
                f"/api/cart/u{cuts}/items", json={"sku": "HP-005", "quantity": 1}
            ).status_code == 200
            expect(conn).to_have_attribute("data-state", "live", timeout=10_000)
            expect(added).to_have_count(cuts)
        assert cuts >= 4
        assert http.post("/api/cart/u1/checkout").status_code == 200
        expect(stock).to_have_text("149 in stock", timeout=10_000)  # polled every 5 s
        expect(ops.locator("#lost")).to_have_text("0")


def test_ops_sign_in_with_the_admin_token(browser: Any) -> None:
    """With --admin-token a person signs in on a form; then the page and its stream work."""
    with running_server(
        "--registry", str(REGISTRY_DIR), "--memory", "--admin-token", "t0ken-for-ops"
    ) as server:
        page = browser.new_context(viewport=WIDE).new_page()
        response = page.goto(f"{server.base_url}/ops")
        assert response is not None and response.status == 401
        token = page.get_by_label("Admin token")
        token.fill("not-it")
        token.press("Enter")
        expect(page.locator("#reason")).to_have_text(re.compile("does not match"))
        page.get_by_label("Admin token").fill("t0ken-for-ops")
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(f"{server.base_url}/ops")
        expect(page.locator("#conn")).to_have_attribute("data-state", "live")
        expect(page.locator("#c-live")).to_have_text("0")


def test_pages_fit_a_phone_and_work_by_keyboard(browser: Any, server: ServerProcess) -> None:
    """At 375 px neither page scrolls sideways; the storefront is usable with the keyboard."""
    context = browser.new_context(viewport=PHONE, locale=LOCALE)
    page = context.new_page()
    page.goto(f"{server.base_url}/?user=kim")
    expect(page.locator("#product-list li")).to_have_count(5)
    page.keyboard.press("Tab")  # the skip link first
    expect(page.get_by_role("link", name="Skip to the products")).to_be_focused()
    page.get_by_label("Quantity of Wireless Mouse").focus()
    page.keyboard.press("Control+A")
    page.keyboard.type("3")
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Add Wireless Mouse to the cart")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#cart-lines tr")).to_have_count(1)
    expect(page.locator("#cart-total")).to_have_text("$239.97")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

    ops = context.new_page()
    ops.goto(f"{server.base_url}/ops")
    expect(ops.locator('#actor-rows tr[data-name="cart:kim"]')).to_be_visible()
    expect(ops.locator('#service-rows tr[data-service="notifier"]')).to_be_visible()
    assert ops.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    # Rows are redrawn with every snapshot: measure the current one in the page, not a handle
    # that a redraw may have detached (bounding_box() of a detached row is None).
    ops.wait_for_function(
        """(width) => {
            const row = document.querySelector('#service-rows tr[data-service="notifier"]');
            const box = row && row.getBoundingClientRect();
            return box && box.width > 0 && box.right <= width;
        }""",
        arg=PHONE["width"],
    )
    context.close()


def test_check_out_needs_a_line_in_the_cart(browser: Any, server: ServerProcess) -> None:
    """Check out is disabled on an empty cart, enabled with a line, disabled after the order."""
    page = browser.new_context(viewport=WIDE, locale=LOCALE).new_page()
    page.goto(f"{server.base_url}/?user=eve")
    checkout = page.get_by_role("button", name="Check out")
    expect(page.locator("#cart-user")).to_have_text("eve")
    expect(page.locator("#product-list li")).to_have_count(5)
    expect(checkout).to_be_disabled()
    page.get_by_role("button", name="Add Wireless Mouse to the cart").click()
    expect(page.locator("#cart-lines tr")).to_have_count(1)
    expect(checkout).to_be_enabled()
    checkout.click()
    expect(page.locator("#notice")).to_contain_text("Thank you! Order")
    expect(page.locator("#cart-empty")).to_be_visible()
    expect(checkout).to_be_disabled()


def test_prices_name_their_currency(browser: Any, server: ServerProcess) -> None:
    """Prices, line amounts, totals and orders on the storefront are in US dollars."""
    page = browser.new_context(viewport=WIDE, locale=LOCALE).new_page()
    page.goto(f"{server.base_url}/?user=fay")
    expect(page.locator('li[data-sku="KB-002"] .price')).to_have_text("$149.99")
    page.get_by_label("Quantity of Mechanical Keyboard").fill("2")
    page.get_by_role("button", name="Add Mechanical Keyboard to the cart").click()
    line = page.locator('#cart-lines tr[data-sku="KB-002"]')
    expect(line).to_contain_text("$149.99 each")
    expect(line.locator("td").nth(2)).to_have_text("$299.98")
    expect(page.locator("#cart-total")).to_have_text("$299.98")
    page.get_by_role("button", name="Check out").click()
    expect(page.locator("#notice")).to_contain_text(": $299.98.")
    expect(page.locator("#order-list .order .total").first).to_have_text("$299.98")


def test_sign_in_panel_only_when_the_server_needs_tokens(
    browser: Any, server: ServerProcess
) -> None:
    """Without user auth the storefront shows no token panel; with it, the panel is there
    and a token from `trioshop token` opens the user's cart."""
    page = browser.new_context(viewport=WIDE, locale=LOCALE).new_page()
    page.goto(f"{server.base_url}/?user=gus")
    expect(page.locator("#cart-user")).to_have_text("gus")
    expect(page.locator("#token-box")).to_be_hidden()
    env = {"TRIOSHOP_AUTH_SECRET": SECRET}
    minted = run_trioshop("token", "gus", env=env)
    assert minted.returncode == 0, minted.stderr
    with running_server("--registry", str(REGISTRY_DIR), "--memory", env=env) as guarded:
        page.goto(f"{guarded.base_url}/?user=gus")
        expect(page.locator("#token-box")).to_be_visible()
        expect(page.get_by_role("alert")).to_contain_text("needs a sign-in token for gus")
        page.get_by_label("Bearer token of this user").fill(minted.stdout.strip())
        page.get_by_role("button", name="Add Wireless Mouse to the cart").click()
        expect(page.locator("#cart-lines tr")).to_have_count(1)


def test_ops_shows_figures_before_its_stream_connects(
    browser: Any, server: ServerProcess
) -> None:
    """With its stream refused, /ops still shows the node's figures and a chart with axes."""
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        add = http.post("/api/cart/hal/items", json={"sku": "HP-005", "quantity": 1})
        assert add.status_code == 200
        assert http.post("/api/cart/hal/checkout").status_code == 200
        node = add.headers["X-Served-By"]
    page = browser.new_context(viewport=WIDE, locale=LOCALE).new_page()
    page.route("**/ops/stream*", lambda route: route.abort())
    page.goto(f"{server.base_url}/ops")
    expect(page.locator("#node")).to_have_text(node)
    expect(page.locator("#c-checkouts")).to_have_text("1")
    expect(page.locator("#c-spawned")).to_have_text("1")
    expect(page.locator('#service-rows tr[data-service="delivery"]')).to_contain_text("running")
    expect(page.locator("#axis-rate")).to_have_text(re.compile(r"^\d+(\.\d)?/s$"))
    expect(page.locator("#axis-p95")).to_have_text(re.compile(r"^\d+(\.\d)? ms$"))
    expect(page.locator(".axis-x")).to_contain_text("now")
    expect(page.locator("#conn")).not_to_have_attribute("data-state", "live")
    expect(page.locator("#received")).to_have_text("0")


def test_ops_shows_each_actor_kinds_figures(browser: Any) -> None:
    """After requests to two carts that then passivate, /ops' per-kind panel shows the cart
    kind's activations, passivations and its mailbox wait and handling p50/p99."""
    with running_server("--registry", str(REGISTRY_DIR), "--memory", "--cart-idle", "1") as server:
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            for user in ("dot", "eve"):
                add = http.post(f"/api/cart/{user}/items", json={"sku": "KB-002", "quantity": 1})
                assert add.status_code == 200
        page = browser.new_context(viewport=WIDE, locale=LOCALE).new_page()
        page.goto(f"{server.base_url}/ops")
        carts = page.locator('#kind-rows tr[data-kind="cart"]')
        expect(carts.locator('[data-label="Activations"]')).to_have_text("2")
        expect(carts.locator('[data-label="Passivations"]')).to_have_text("2", timeout=10_000)
        expect(carts.locator('[data-label="Live"]')).to_have_text("0")
        for column in ("Wait p50", "Wait p99", "Handling p50", "Handling p99"):
            expect(carts.locator(f'[data-label="{column}"]')).to_have_text(
                re.compile(r"^\d+(\.\d)? (µs|ms|s)$")
            )
        expect(page.locator("#kinds-empty")).to_be_hidden()
