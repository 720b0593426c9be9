"""The exception table: its per-route entries name real routes, and lookups follow the MRO."""

from __future__ import annotations

from trioshop.domain import ItemNotInCart, NoActiveCart
from trioshop.http import create_app
from trioshop.http.errors import ANSWERS, ROUTE_ANSWERS, answer_for
from trioshop.registry import Registry
from trioshop.runtime import ActorTimeout
from trioshop.store import OutcomeUnknown, StoreClosed, StoreError


def test_route_answers_name_endpoints_of_the_app(registry: Registry) -> None:
    """Every per-route entry is keyed by an endpoint the app has (a renamed route fails)."""
    endpoints = {rule.endpoint for rule in create_app(registry).url_map.iter_rules()}
    assert set(ROUTE_ANSWERS) <= endpoints


def test_route_entry_wins_and_others_keep_the_shared_answer() -> None:
    """A route's own entry overrides the shared one for it only."""
    assert answer_for(ActorTimeout, "api.checkout") is ROUTE_ANSWERS["api.checkout"][ActorTimeout]
    assert answer_for(ActorTimeout, "api.view_cart") is ANSWERS[ActorTimeout]
    not_in_cart = ROUTE_ANSWERS["api.remove_item"][ItemNotInCart]
    assert answer_for(NoActiveCart, "api.remove_item") is not_in_cart
    assert answer_for(ItemNotInCart, "api.view_cart") is None  # no shared answer: a 500


def test_nearest_base_class_answers() -> None:
    """A subclass without an entry gets its nearest base's; one with an entry gets its own."""
    assert answer_for(StoreClosed) is ANSWERS[StoreError]
    assert answer_for(OutcomeUnknown) is ANSWERS[OutcomeUnknown]
