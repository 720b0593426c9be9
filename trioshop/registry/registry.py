"""An immutable, loaded registry: lookup by id and queries on kind and meta fields."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, TypeVar

import attrs

from trioshop.registry.entries import (
    ActorDefinition,
    Entry,
    HttpRouter,
    HttpService,
    ProcessHost,
    Product,
    ServiceDefinition,
)

E = TypeVar("E", bound=Entry)


@attrs.frozen
class Registry:
    """Every entry of a registry folder, in file order then entry order.

    A registry never changes once built; a reload builds a new one and swaps it whole.
    """

    entries: tuple[Entry, ...]
    folder: str = ""
    version: str = ""  # a digest of the files' names and contents
    loaded_at: float = attrs.field(factory=time.time)
    _by_id: dict[str, Entry] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {entry.id: entry for entry in self.entries})

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, entry_id: str) -> Entry:
        """The entry with id ``namespace:name``; raises :class:`KeyError` if there is none."""
        try:
            return self._by_id[entry_id]
        except KeyError:
            raise KeyError(f"no registry entry {entry_id!r}") from None

    def find(
        self, kind: str | None = None, *, of_type: type[E] = Entry, **meta: Any  # type: ignore[assignment]
    ) -> list[E]:
        """Entries matching *kind*, the Python class *of_type* and every ``meta`` field given.

        ``find(kind="registry.entry", type="product")`` is the seed's product query.
        """
        return [
            entry
            for entry in self.entries
            if (kind is None or kind == entry.KIND)
            and isinstance(entry, of_type)
            and all(entry.meta.get(key) == value for key, value in meta.items())
        ]

    def one(self, of_type: type[E]) -> E:
        """The one entry of *of_type*; raises :class:`LookupError` for none or several."""
        found = self.find(of_type=of_type)
        if len(found) != 1:
            raise LookupError(
                f"the registry must define exactly one {of_type.KIND} entry, found {len(found)}"
            )
        return found[0]

    @property
    def products(self) -> list[Product]:
        return self.find(of_type=Product)

    @property
    def initial_stock(self) -> dict[str, int]:
        """Each product's stock as the registry gives it, by SKU (the store's seed)."""
        return {p.sku: p.stock for p in self.products}

    @property
    def services(self) -> list[ServiceDefinition]:
        return self.find(of_type=ServiceDefinition)

    @property
    def http_service(self) -> HttpService:
        return self.one(HttpService)

    @property
    def router(self) -> HttpRouter:
        return self.one(HttpRouter)

    @property
    def process_host(self) -> ProcessHost:
        return self.one(ProcessHost)

    def actor(self, name: str) -> ActorDefinition:
        """The ``process.actor`` entry called *name* (in any namespace)."""
        for entry in self.find(of_type=ActorDefinition):
            if entry.name == name:
                return entry
        raise LookupError(f"the registry has no process.actor entry named {name!r}")
