"""Reading a registry folder of YAML files into validated entries, all or nothing."""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from trioshop.domain.money import parse_cents
from trioshop.registry.entries import (
    ActorDefinition,
    DataEntry,
    Entry,
    HttpRouter,
    HttpService,
    ProcessHost,
    Product,
    ServiceDefinition,
)
from trioshop.registry.registry import Registry
from trioshop.runtime import RestartPolicy

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class RegistryError(ValueError):
    """The registry cannot be loaded; ``problems`` lists every fault, each naming file and entry."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class _EntryProblem(ValueError):
    """One field of one entry is wrong; the loader adds the file and entry to the message."""


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _field(raw: Mapping[str, Any], key: str, kind: type | tuple[type, ...], expected: str) -> Any:
    if key not in raw:
        raise _EntryProblem(f"missing field '{key}' (expected {expected})")
    value = raw[key]
    # bool is an int subclass; a YAML 'yes' must not pass for a count.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise _EntryProblem(f"field '{key}' must be {expected}, got {value!r} (bool)")
    if not isinstance(value, kind):
        raise _EntryProblem(
            f"field '{key}' must be {expected}, got {value!r} ({_type_name(value)})"
        )
    return value


def _mapping(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key, {})
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _EntryProblem(f"field '{key}' must be a mapping, got {value!r} ({_type_name(value)})")
    return value


def _duration(raw: Mapping[str, Any], key: str, default: float | None = None) -> float:
    if key not in raw and default is not None:
        return default
    value = _field(raw, key, (int, float, str), "a duration such as 1.5, '500ms' or '2s'")
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise _EntryProblem(
                f"field '{key}' must be a duration such as '500ms', '2s' or '1m', got {value!r}"
            )
        return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if value < 0:
        raise _EntryProblem(f"field '{key}' must not be negative, got {value!r}")
    return float(value)


def _allow_only(raw: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(raw) - allowed - {"name", "kind", "meta"})
    if unknown:
        raise _EntryProblem(
            f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: {sorted(allowed)}"
        )


def _http_service(id: str, source: str, meta: Mapping[str, Any], raw: Mapping[str, Any]) -> Entry:
    _allow_only(raw, {"addr"})
    return HttpService(id, source, meta, addr=_field(raw, "addr", str, "a string 'host:port'"))


def _http_router(id: str, source: str, meta: Mapping[str, Any], raw: Mapping[str, Any]) -> Entry:
    _allow_only(raw, {"prefix"})
    return HttpRouter(id, source, meta, prefix=_field(raw, "prefix", str, "a path such as '/api'"))


def _process_host(id: str, source: str, meta: Mapping[str, Any], raw: Mapping[str, Any]) -> Entry:
    _allow_only(raw, {"host"})
    host = _mapping(raw, "host")
    workers = _field(host, "workers", int, "a positive integer") if "workers" in host else 8
    if workers < 1:
        raise _EntryProblem(f"field 'host.workers' must be a positive integer, got {workers!r}")
    return ProcessHost(id, source, meta, workers=workers)


def _registry_entry(
    id: str, source: str, meta: Mapping[str, Any], raw: Mapping[str, Any]
) -> Entry:
    if meta.get("type") != "product":
        data = {k: v for k, v in raw.items() if k not in {"name", "kind", "meta"}}
        return DataEntry(id, source, meta, data=data)
    _allow_only(raw, {"sku", "price", "stock"})
    sku = _field(raw, "sku", str, "a non-empty string")
    if not sku.strip():
        raise _EntryProblem("field 'sku' must be a non-empty string")
    price = _field(raw, "price", (int, float, str), "a non-negative number with at most 2 decimals")
    try:
        price_cents = parse_cents(price)
    except ValueError as exc:
        raise _EntryProblem(f"field 'price': {exc}") from None
    stock = _field(raw, "stock", int, "a non-negative integer")
    if stock < 0:
        raise _EntryProblem(f"field 'stock' must be a non-negative integer, got {stock!r}")
    title = _field(meta, "title", str, "a non-empty string (meta.title)")
    if not title.strip():
        raise _EntryProblem("field 'meta.title' must be a non-empty string")
    return Product(id, source, meta, sku=sku, title=title, price_cents=price_cents, stock=stock)


def _process_actor(id: str, source: str, meta: Mapping[str, Any], raw: Mapping[str, Any]) -> Entry:
    _allow_only(raw, {"handler", "mailbox"})
    handler = _field(raw, "handler", str, "'package.module:callable'")
    mailbox = _field(raw, "mailbox", int, "a positive integer") if "mailbox" in raw else 256
    return ActorDefinition(id, source, meta, handler=handler, mailbox=mailbox)


def _process_service(
    id: str, source: str, meta: Mapping[str, Any], raw: Mapping[str, Any]
) -> Entry:
    _allow_only(raw, {"process", "lifecycle", "subscribe"})
    process = _field(raw, "process", str, "'package.module:callable'")
    subscribe = None
    if "subscribe" in raw:
        topic = _field(raw, "subscribe", str, "'system/kind' such as 'shop/order.checkout'")
        system, sep, kind = topic.partition("/")
        if not (sep and system and kind):
            raise _EntryProblem(
                f"field 'subscribe' must be 'system/kind' such as 'shop/order.checkout', "
                f"got {topic!r}"
            )
        subscribe = (system, kind)
    restart = _mapping(_mapping(raw, "lifecycle"), "restart")
    policy = RestartPolicy(
        max_attempts=_field(restart, "max_attempts", int, "a positive integer"),
        initial_delay=_duration(restart, "initial_delay"),
        max_delay=_duration(restart, "max_delay", 90.0),
        backoff_factor=_field(restart, "backoff_factor", (int, float), "a number >= 1")
        if "backoff_factor" in restart
        else 2.0,
        jitter=_field(restart, "jitter", (int, float), "a number in [0, 1]")
        if "jitter" in restart
        else 0.1,
        stable_threshold=_duration(restart, "stable_threshold", 5.0),
    )
    return ServiceDefinition(
        id, source, meta, process=process, restart=policy, subscribe=subscribe
    )


_BUILDERS: dict[str, Callable[[str, str, Mapping[str, Any], Mapping[str, Any]], Entry]] = {
    HttpService.KIND: _http_service,
    HttpRouter.KIND: _http_router,
    ProcessHost.KIND: _process_host,
    Product.KIND: _registry_entry,
    ActorDefinition.KIND: _process_actor,
    ServiceDefinition.KIND: _process_service,
}


def _load_file(path: Path, label: str, problems: list[str]) -> list[Entry]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        problems.append(f"{label}: invalid YAML: {exc}")
        return []
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{label}: cannot read file: {exc}")
        return []
    if not isinstance(document, Mapping):
        problems.append(f"{label}: expected a mapping with 'version', 'namespace' and 'entries'")
        return []
    namespace = document.get("namespace")
    if not isinstance(namespace, str) or not _NAME.match(namespace):
        problems.append(
            f"{label}: 'namespace' must be a name of letters, digits, '_', '.', '-', "
            f"got {namespace!r}"
        )
        return []
    if "version" not in document:
        problems.append(f"{label}: missing 'version'")
    raw_entries = document.get("entries")
    if not isinstance(raw_entries, list):
        problems.append(f"{label}: 'entries' must be a list, got {_type_name(raw_entries)}")
        return []

    entries: list[Entry] = []
    for index, raw in enumerate(raw_entries):
        where = f"{label}: entry #{index + 1}"
        if not isinstance(raw, Mapping):
            problems.append(f"{where}: expected a mapping, got {_type_name(raw)}")
            continue
        name = raw.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            problems.append(f"{where}: 'name' must be a name of letters, digits, '_', '.', '-'")
            continue
        entry_id = f"{namespace}:{name}"
        where = f"{label}: entry '{entry_id}'"
        kind = raw.get("kind")
        builder = _BUILDERS.get(kind) if isinstance(kind, str) else None
        if builder is None:
            problems.append(f"{where}: unknown kind {kind!r}; expected one of {sorted(_BUILDERS)}")
            continue
        try:
            meta = _mapping(raw, "meta")
            entries.append(builder(entry_id, label, dict(meta), raw))
        except (_EntryProblem, ValueError, TypeError) as exc:
            problems.append(f"{where} ({kind}): {exc}")
    return entries


def load_registry(folder: str | Path) -> Registry:
    """Load and validate every ``*.yaml``/``*.yml`` file of *folder*, in file-name order.

    Returns a :class:`Registry` only if every file and entry is valid and every id is unique;
    otherwise raises :class:`RegistryError` listing every problem found, so nothing is ever
    half-loaded.
    """
    root = Path(folder)
    if not root.is_dir():
        raise RegistryError([f"{root}: not a directory; pass the registry folder (--registry DIR)"])
    files = sorted(p for p in root.iterdir() if p.suffix in {".yaml", ".yml"} and p.is_file())
    if not files:
        raise RegistryError([f"{root}: no .yaml files found"])
    problems: list[str] = []
    entries: list[Entry] = []
    seen: dict[str, str] = {}
    digest = hashlib.sha256()
    for path in files:
        with contextlib.suppress(OSError):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        label = str(path)
        for entry in _load_file(path, label, problems):
            if entry.id in seen:
                problems.append(
                    f"{label}: entry '{entry.id}': duplicate id, "
                    f"already defined in {seen[entry.id]}"
                )
                continue
            seen[entry.id] = label
            entries.append(entry)
    skus: dict[str, str] = {}
    for entry in entries:
        if isinstance(entry, Product):
            if entry.sku in skus:
                problems.append(
                    f"{entry.source}: entry '{entry.id}': duplicate sku {entry.sku!r}, "
                    f"already used by '{skus[entry.sku]}'"
                )
            skus[entry.sku] = entry.id
    if problems:
        raise RegistryError(problems)
    return Registry(tuple(entries), folder=str(root), version=digest.hexdigest()[:16])


__all__ = ["RegistryError", "load_registry"]
