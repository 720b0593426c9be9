"""The shop: the cart actor and the cart API, the catalog, the services, reloads, and the
assembly that opens them."""

from trioshop.shop.cart_api import CartFactory, Carts
from trioshop.shop.reload import ReloadReport
from trioshop.shop.runnable import load_runnable_registry
from trioshop.shop.shop import Shop, ShopStatistics

__all__ = [
    "CartFactory",
    "Carts",
    "ReloadReport",
    "Shop",
    "ShopStatistics",
    "load_runnable_registry",
]
