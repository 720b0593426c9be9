"""Tests of /metrics' per-kind actor families: histograms and counters labelled by kind."""

from __future__ import annotations

import re

from tests.helpers import ShopClient
from tests.http.test_operations import metric, scrape

HISTOGRAMS = (
    "trioshop_actor_mailbox_wait_seconds",
    "trioshop_actor_handling_seconds",
    "trioshop_actor_activation_seconds",
)


async def test_actor_histograms_are_labelled_by_kind_never_by_user(
    shop_client: ShopClient,
) -> None:
    """Three users' carts are one ``cart`` series per family; counts follow the requests."""
    for user in ("alice", "bob", "carol"):
        await shop_client.add(user, "KB-002")
    await shop_client.add("alice", "MOUSE-003")
    text = await scrape(shop_client)
    for family in HISTOGRAMS:
        assert f"# TYPE {family} histogram" in text
        kinds = set(re.findall(rf'^{family}_count\{{kind="([^"]+)"\}}', text, re.MULTILINE))
        assert kinds == {"cart"}
        assert metric(text, f"{family}_bucket", kind="cart", le="+Inf") == metric(
            text, f"{family}_count", kind="cart"
        )
    handled = metric(text, "trioshop_actor_handling_seconds_count", kind="cart")
    assert handled >= 4
    assert metric(text, "trioshop_actor_mailbox_wait_seconds_count", kind="cart") == handled
    assert metric(text, "trioshop_actor_activation_seconds_count", kind="cart") == 3
    assert metric(text, "trioshop_actor_kind_live", kind="cart") == 3
    assert "alice" not in text
    assert re.search(r'^trioshop_actor_passivations_total\{kind="cart"\} 0\.0$', text, re.M)
