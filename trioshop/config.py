"""Runtime settings of a shop server: timeouts, limits and sizes, validated on creation."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any, Literal

import attrs
from attrs import validators as v

# Where ``trioshop run`` looks for its registry and keeps its database, unless told otherwise.
DEFAULT_REGISTRY = "registry"
DEFAULT_DATA_DIR = "data"
# The environment variable that holds the admin token (``trioshop run`` and ``cluster`` read it).
ADMIN_TOKEN_ENV = "TRIOSHOP_ADMIN_TOKEN"
# The environment variable that turns the orders relay to Redis Streams on (``--events-redis``).
EVENTS_REDIS_ENV = "TRIOSHOP_EVENTS_REDIS"
# The environment variable that turns tracing on (``--otel-exporter``).
OTEL_EXPORTER_ENV = "TRIOSHOP_OTEL_EXPORTER"

_positive = [v.instance_of(float), v.gt(0.0)]


def _seconds(default: float) -> float:
    return attrs.field(default=default, converter=float, validator=_positive)


def _positive_or_none(
    instance: object, attribute: attrs.Attribute[Any], value: object
) -> None:
    if value is not None and (not isinstance(value, float) or value <= 0):
        raise ValueError(
            f"{attribute.name} must be a positive number of seconds or None, got {value!r}"
        )


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(text: object) -> IPAddress:
    """The IPv4 or IPv6 address *text* names (an address is returned as it is).

    Raises :class:`ValueError` saying what is expected (a name, a network or a number is not
    an address).
    """
    if isinstance(text, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return text
    try:
        if isinstance(text, str):
            return ipaddress.ip_address(text)
    except ValueError:
        pass
    raise ValueError(f"expected an IP address such as 127.0.0.1, got {text!r}")


def _ip_set(values: object) -> frozenset[IPAddress]:
    """*values* (addresses, or one address as a string) parsed once, as a set to look up."""
    if isinstance(values, str):
        values = (values,)
    if not isinstance(values, Iterable):
        raise TypeError(f"expected IP addresses such as ['127.0.0.1'], got {values!r}")
    return frozenset(parse_ip(value) for value in values)


ExporterKind = Literal["console", "otlp-file", "otlp"]


def parse_exporter(spec: str) -> tuple[ExporterKind, str]:
    """Where *spec* (``--otel-exporter``'s value) sends traces, as ``(kind, where)``:
    ``("console", "")``, ``("otlp-file", PATH)`` or ``("otlp", URL)`` (an OTLP/HTTP
    collector's http:// or https:// URL).

    Raises :class:`ValueError` naming the three accepted forms for any other text.
    """
    kind, sep, where = spec.partition(":")
    if spec == "console":
        return "console", ""
    if sep and kind == "otlp-file" and where:
        return "otlp-file", where
    if sep and kind == "otlp" and where.startswith(("http://", "https://")):
        return "otlp", where
    raise ValueError(f"expected console, otlp-file:PATH or otlp:http://HOST:4318, got {spec!r}")


def _exporter_or_none(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise TypeError(f"{attribute.name} must be a string or None, got {value!r}")
    parse_exporter(value)


@attrs.frozen
class Settings:
    """Everything about a server run that is not in the registry.

    Every wait in the server has its named timeout here: a request handler never waits on a
    cart longer than ``read_timeout`` (``checkout_timeout`` for checkout).
    """

    read_timeout: float = _seconds(3.0)
    checkout_timeout: float = _seconds(5.0)
    shutdown_timeout: float = _seconds(5.0)
    # A write that started before its request's deadline (its ticket was claimed: the store
    # took it into a transaction) is waited for up to this long more, so that a 504 never
    # hides a change that happened. Past it, the 504 says the change may have happened.
    settle_timeout: float = _seconds(10.0)
    # An HTTP connection that sends nothing for this long is closed (idle keep-alive clients).
    idle_connection_timeout: float = _seconds(30.0)
    max_live_carts: int = attrs.field(default=100_000, validator=[v.instance_of(int), v.gt(0)])
    mailbox_capacity: int | None = attrs.field(
        default=None, validator=v.optional([v.instance_of(int), v.gt(0)])
    )
    bus_capacity: int = attrs.field(default=1024, validator=[v.instance_of(int), v.gt(0)])
    max_body_bytes: int = attrs.field(default=64 * 1024, validator=[v.instance_of(int), v.gt(0)])
    retry_after_seconds: int = attrs.field(default=1, validator=[v.instance_of(int), v.gt(0)])
    # A readiness probe (GET /readyz) waits this long for the store before answering 503.
    readiness_timeout: float = _seconds(1.0)
    # Who answers: every answer carries ``X-Served-By: <node_id>`` (None: no header).
    node_id: str | None = attrs.field(default=None, validator=v.optional(v.instance_of(str)))
    # Seconds without a message before a cart actor is passivated; None: never.
    cart_idle_timeout: float | None = attrs.field(default=1800.0, validator=_positive_or_none)
    # None keeps everything in memory (--memory); otherwise the SQLite database's folder.
    data_dir: str | None = attrs.field(default=None, validator=v.optional(v.instance_of(str)))
    # A postgresql:// URL: the shared PostgreSQL store instead (data_dir is then unused).
    database_url: str | None = attrs.field(
        default=None, repr=False, validator=v.optional(v.instance_of(str))
    )
    # Connections (and worker threads) of the PostgreSQL store's pool.
    database_pool_size: int = attrs.field(default=8, validator=[v.instance_of(int), v.gt(0)])
    # An order a node claimed for a service but never acknowledged (the node died) waits
    # this long before another node's copy of the service takes it over.
    outbox_claim_timeout: float = _seconds(30.0)
    # Bearer token for /api/admin/*; None: the admin API answers loopback clients only.
    admin_token: str | None = attrs.field(default=None, repr=False)
    # Peers whose X-Forwarded-For names the client (a proxy in front, such as the cluster's
    # HAProxy); from any other peer the header is ignored: the TCP peer is the client.
    trusted_proxies: frozenset[IPAddress] = attrs.field(default=(), converter=_ip_set)
    sqlite_synchronous: str = attrs.field(
        default="FULL", validator=v.in_(["OFF", "NORMAL", "FULL", "EXTRA"])
    )
    # A redis:// URL: every order is also published to the Redis stream ``events_stream``
    # (the registry's relay service); None: orders stay inside the shop.
    events_redis: str | None = attrs.field(
        default=None, repr=False, validator=v.optional(v.instance_of(str))
    )
    events_stream: str = attrs.field(
        default="trioshop.orders", validator=[v.instance_of(str), v.min_len(1)]
    )
    # The stream keeps about this many entries (XADD MAXLEN ~): older ones are trimmed.
    events_maxlen: int = attrs.field(default=100_000, validator=[v.instance_of(int), v.gt(0)])
    # Where traces go: "console", "otlp-file:PATH" or "otlp:URL"; None: tracing is off.
    otel_exporter: str | None = attrs.field(default=None, validator=_exporter_or_none)
    # The share of new traces sampled (a request with a traceparent follows its parent).
    otel_sample_ratio: float = attrs.field(
        default=1.0, converter=float, validator=[v.ge(0.0), v.le(1.0)]
    )
