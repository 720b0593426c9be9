"""The product catalog: the registry's products, looked up by SKU, in registry order."""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from trioshop.registry import Product, Registry


@attrs.frozen
class Catalog:
    """An immutable view of the products of one registry; a reload builds a new one."""

    products: tuple[Product, ...]
    _by_sku: dict[str, Product] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_by_sku", {p.sku: p for p in self.products})

    @classmethod
    def from_registry(cls, registry: Registry) -> Catalog:
        return cls(tuple(registry.products))

    def get(self, sku: str) -> Product | None:
        """The product with *sku*, or ``None``."""
        return self._by_sku.get(sku)

    def __iter__(self) -> Iterator[Product]:
        return iter(self.products)

    def __len__(self) -> int:
        return len(self.products)
