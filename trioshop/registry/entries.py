"""The kinds of registry entry trioshop understands, as frozen, validated attrs classes."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import attrs
from attrs import validators as v

from trioshop.runtime import RestartPolicy


def _is_reference(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    """Check that *value* looks like ``package.module:callable``."""
    module, sep, name = value.partition(":")
    if not sep or not module or not name.isidentifier():
        raise ValueError(
            f"field '{attribute.name}' must be 'package.module:callable', got {value!r}"
        )


def resolve_callable(reference: str) -> Callable[..., Any]:
    """Import the callable named by ``package.module:callable``.

    Raises :class:`LookupError` naming the reference when the module or attribute is missing,
    and :class:`TypeError` when the attribute is not callable.
    """
    module_name, _, attr = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise LookupError(f"cannot import module {module_name!r} for {reference!r}: {exc}") from exc
    try:
        target = getattr(module, attr)
    except AttributeError:
        raise LookupError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not callable(target):
        raise TypeError(f"{reference!r} is not callable")
    return target  # type: ignore[no-any-return]


_non_empty_str = v.and_(v.instance_of(str), v.min_len(1))
_positive_int = [v.instance_of(int), v.gt(0)]


@attrs.frozen
class Entry:
    """What every entry has: its id (``namespace:name``), kind, meta and the file it came from."""

    KIND: ClassVar[str] = ""

    id: str = attrs.field(validator=v.instance_of(str))
    source: str = attrs.field(validator=v.instance_of(str))
    meta: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def name(self) -> str:
        return self.id.partition(":")[2]

    @property
    def namespace(self) -> str:
        return self.id.partition(":")[0]


@attrs.frozen
class HttpService(Entry):
    """``http.service``: where the HTTP server listens (``addr`` as ``host:port`` or ``:port``)."""

    KIND: ClassVar[str] = "http.service"

    addr: str = attrs.field(kw_only=True, validator=v.instance_of(str))

    def __attrs_post_init__(self) -> None:
        _, sep, port = self.addr.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"field 'addr' must be 'host:port' or ':port', got {self.addr!r}")

    @property
    def bind(self) -> str:
        """The address in hypercorn's form (an empty host means all interfaces)."""
        host, _, port = self.addr.rpartition(":")
        return f"{host or '0.0.0.0'}:{port}"


@attrs.frozen
class HttpRouter(Entry):
    """``http.router``: the path prefix every API route is mounted under (e.g. ``/api``)."""

    KIND: ClassVar[str] = "http.router"

    prefix: str = attrs.field(kw_only=True, validator=v.instance_of(str))

    def __attrs_post_init__(self) -> None:
        if not self.prefix.startswith("/") or (len(self.prefix) > 1 and self.prefix.endswith("/")):
            raise ValueError(
                f"field 'prefix' must start with '/' and not end with one, got {self.prefix!r}"
            )


@attrs.frozen
class ProcessHost(Entry):
    """``process.host``: ``host.workers`` bounds the threads used for blocking work.

    A Trio host runs every actor on one thread; ``workers`` does not add event loops. It sizes
    the :class:`trio.CapacityLimiter` that blocking calls (files, SQLite) go through.
    """

    KIND: ClassVar[str] = "process.host"

    workers: int = attrs.field(kw_only=True, validator=_positive_int)


@attrs.frozen
class Product(Entry):
    """``registry.entry`` with ``meta.type: product``: a catalog item, price in integer cents."""

    KIND: ClassVar[str] = "registry.entry"

    sku: str = attrs.field(kw_only=True, validator=_non_empty_str)
    title: str = attrs.field(kw_only=True, validator=_non_empty_str)
    price_cents: int = attrs.field(kw_only=True, validator=[v.instance_of(int), v.ge(0)])
    stock: int = attrs.field(kw_only=True, validator=[v.instance_of(int), v.ge(0)])


@attrs.frozen
class DataEntry(Entry):
    """``registry.entry`` of any other type: free-form data kept as written."""

    KIND: ClassVar[str] = "registry.entry"

    data: Mapping[str, Any] = attrs.field(kw_only=True, factory=dict)


@attrs.frozen
class ActorDefinition(Entry):
    """``process.actor``: an actor kind, its behaviour factory (``module:function``) and mailbox."""

    KIND: ClassVar[str] = "process.actor"

    handler: str = attrs.field(kw_only=True, validator=[v.instance_of(str), _is_reference])
    mailbox: int = attrs.field(kw_only=True, default=256, validator=_positive_int)


@attrs.frozen
class ServiceDefinition(Entry):
    """``process.service``: a long-running callable (``module:function``) run under a supervisor."""

    KIND: ClassVar[str] = "process.service"

    process: str = attrs.field(kw_only=True, validator=[v.instance_of(str), _is_reference])
    restart: RestartPolicy = attrs.field(kw_only=True, validator=v.instance_of(RestartPolicy))
    subscribe: tuple[str, str] | None = attrs.field(kw_only=True, default=None)
