"""The kinds of registry entry trioshop understands, as frozen, validated attrs classes."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import attrs
from attrs import validators as v

from trioshop.config import Settings
from trioshop.domain.limits import MAX_PRICE_CENTS, MAX_SKU_LENGTH, MAX_STOCK
from trioshop.runtime import RestartPolicy


def _is_reference(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    """Check that *value* looks like ``package.module:callable``."""
    module, sep, name = value.partition(":") if isinstance(value, str) else ("", "", "")
    if not sep or not module or not name.isidentifier():
        raise ValueError(
            f"field '{attribute.name}' must be 'package.module:callable', got {value!r}"
        )


def resolve_callable(reference: str) -> Callable[..., Any]:
    """Import the callable named by ``package.module:callable``.

    Raises :class:`LookupError` naming the reference when the module cannot be imported
    (whatever its import raised: a missing module, a ``SyntaxError``, an exception at import
    time) or has no such attribute, and :class:`TypeError` when the attribute is not callable.
    """
    module_name, _, attr = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:  # importing runs arbitrary code: any failure counts
        raise LookupError(
            f"cannot import module {module_name!r} for {reference!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    try:
        target = getattr(module, attr)
    except AttributeError:
        raise LookupError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not callable(target):
        raise TypeError(f"{reference!r} is not callable")
    return target  # type: ignore[no-any-return]


def _text(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"field '{_label(attribute)}' must be a non-empty string, got {value!r}")


def _whole(minimum: int, maximum: int | None = None) -> Callable[..., None]:
    """An integer in ``[minimum, maximum]``; a YAML ``true`` is not a count."""
    bounds = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"

    def check(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < minimum
            or (maximum is not None and value > maximum)
        ):
            raise ValueError(
                f"field '{_label(attribute)}' must be an integer {bounds}, got {value!r}"
            )

    return check


def _label(attribute: attrs.Attribute[Any]) -> str:
    """The field's name as the registry file spells it (``metadata['yaml']``)."""
    return str(attribute.metadata.get("yaml", attribute.name))


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


def listen_address(addr: str) -> str:
    """``HOST:PORT`` from *addr*, ``HOST:PORT`` or ``:PORT``: an empty host means all
    interfaces (``0.0.0.0``), as in the registry's ``http.service`` and ``--bind``."""
    host, _, port = addr.rpartition(":")
    return f"{host or '0.0.0.0'}:{port}"


@attrs.frozen
class HttpService(Entry):
    """``http.service``: where the HTTP server listens (``addr`` as ``host:port`` or ``:port``)."""

    KIND: ClassVar[str] = "http.service"

    addr: str = attrs.field(kw_only=True)

    @addr.validator
    def _check_addr(self, attribute: attrs.Attribute[str], value: object) -> None:
        port = value.rpartition(":")[2] if isinstance(value, str) else ""
        if ":" not in str(value) or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"field 'addr' must be 'host:port' or ':port', got {value!r}")

    @property
    def bind(self) -> str:
        """The address in hypercorn's form (see :func:`listen_address`)."""
        return listen_address(self.addr)


@attrs.frozen
class HttpRouter(Entry):
    """``http.router``: the path prefix every API route is mounted under (e.g. ``/api``)."""

    KIND: ClassVar[str] = "http.router"

    prefix: str = attrs.field(kw_only=True)

    @prefix.validator
    def _check_prefix(self, attribute: attrs.Attribute[str], value: object) -> None:
        if (
            not isinstance(value, str)
            or not value.startswith("/")
            or (len(value) > 1 and value.endswith("/"))
        ):
            raise ValueError(
                f"field 'prefix' must be a path starting with '/' and not ending with one, "
                f"got {value!r}"
            )


@attrs.frozen
class ProcessHost(Entry):
    """``process.host``: ``host.workers`` bounds the threads used for blocking work.

    A Trio host runs every actor on one thread; ``workers`` does not add event loops. It sizes
    the :class:`trio.CapacityLimiter` that blocking calls (files, SQLite) go through.
    """

    KIND: ClassVar[str] = "process.host"

    workers: int = attrs.field(
        kw_only=True, default=8, validator=_whole(1), metadata={"yaml": "host.workers"}
    )


@attrs.frozen
class Product(Entry):
    """``registry.entry`` with ``meta.type: product``: a catalog item, price in integer cents."""

    KIND: ClassVar[str] = "registry.entry"

    sku: str = attrs.field(kw_only=True, validator=_text)
    title: str = attrs.field(kw_only=True, validator=_text, metadata={"yaml": "meta.title"})
    price_cents: int = attrs.field(
        kw_only=True, validator=_whole(0, MAX_PRICE_CENTS), metadata={"yaml": "price (in cents)"}
    )
    stock: int = attrs.field(kw_only=True, validator=_whole(0, MAX_STOCK))

    @sku.validator
    def _check_sku(self, attribute: attrs.Attribute[str], value: str) -> None:
        if "/" in value or len(value) > MAX_SKU_LENGTH or not value.isprintable():
            raise ValueError(
                f"field 'sku' must be at most {MAX_SKU_LENGTH} printable characters without "
                f"'/', got {value!r}"
            )


@attrs.frozen
class DataEntry(Entry):
    """``registry.entry`` of any other type: free-form data kept as written."""

    KIND: ClassVar[str] = "registry.entry"

    data: Mapping[str, Any] = attrs.field(kw_only=True, factory=dict)


@attrs.frozen
class ActorDefinition(Entry):
    """``process.actor``: an actor kind, its behaviour factory (``module:function``) and mailbox."""

    KIND: ClassVar[str] = "process.actor"

    handler: str = attrs.field(kw_only=True, validator=_is_reference)
    mailbox: int = attrs.field(kw_only=True, default=256, validator=_whole(1))


# The settings a service may be turned on by: those that are None (off) unless given.
OPTIONAL_SETTINGS = frozenset(
    field.name for field in attrs.fields(Settings) if field.default is None
)


@attrs.frozen
class ServiceDefinition(Entry):
    """``process.service``: a long-running callable (``module:function``) run under a supervisor."""

    KIND: ClassVar[str] = "process.service"

    process: str = attrs.field(kw_only=True, validator=_is_reference)
    restart: RestartPolicy = attrs.field(kw_only=True, validator=v.instance_of(RestartPolicy))
    subscribe: tuple[str, str] | None = attrs.field(kw_only=True, default=None)
    # The run setting (a ``Settings`` field, off by default) without which the service is
    # neither started nor registered in the store: ``events_redis`` for the orders relay.
    enabled_by: str | None = attrs.field(kw_only=True, default=None)

    @enabled_by.validator
    def _check_enabled_by(self, attribute: attrs.Attribute[str | None], value: object) -> None:
        if value is not None and (not isinstance(value, str) or value not in OPTIONAL_SETTINGS):
            raise ValueError(
                f"field 'enabled_by' must name a setting that is off by default, one of "
                f"{sorted(OPTIONAL_SETTINGS)}, got {value!r}"
            )

    def enabled(self, settings: Settings) -> bool:
        """Whether the service runs with *settings*: always, or when its setting is set."""
        return self.enabled_by is None or getattr(settings, self.enabled_by) is not None
