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


class _WrittenFloat(float):
    """A YAML float that remembers how it was written, so a price is read from its digits.

    ``price: 1499.999999999999999999`` is 1500.0 as a float; its text shows three decimals
    and more, and is refused rather than rounded.
    """

    written: str

    def __str__(self) -> str:
        return self.written

    __repr__ = __str__


class _RegistryYamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, with floats that keep their written text."""


def _construct_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    value = _WrittenFloat(loader.construct_yaml_float(node))
    value.written = str(loader.construct_scalar(node)).replace("_", "")
    return value


_RegistryYamlLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)


class RegistryError(ValueError):
    """The registry cannot be loaded; ``problems`` lists every fault, each naming file and entry.

    ``entries`` holds the entries that were valid on their own, so that a caller can still
    check their code and list those problems too.
    """

    def __init__(self, problems: list[str], entries: tuple[Entry, ...] = ()) -> None:
        self.problems = problems
        self.entries = entries
        super().__init__("\n".join(problems))


class _EntryProblem(ValueError):
    """One field of one entry is wrong; the loader adds the file and entry to the message."""


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _required(raw: Mapping[str, Any], key: str, label: str | None = None) -> Any:
    """The value of *key*; its type and range are checked by the entry class it goes to."""
    if key not in raw:
        raise _EntryProblem(f"missing field '{label or key}'")
    return raw[key]


def _present(raw: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    """The given keys that *raw* has: absent ones take the entry class's default."""
    return {key: raw[key] for key in keys if key in raw}


def _mapping(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key, {})
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _EntryProblem(f"field '{key}' must be a mapping, got {value!r} ({_type_name(value)})")
    return value


def _duration(raw: Mapping[str, Any], key: str) -> Any:
    """Seconds from a number or a string such as ``'500ms'``, ``'2s'``, ``'1m'``."""
    value = _required(raw, key)
    if not isinstance(value, str):
        return value  # a number: RestartPolicy checks it
    match = _DURATION.match(value)
    if match is None:
        raise _EntryProblem(
            f"field '{key}' must be a duration such as '500ms', '2s' or '1m', got {value!r}"
        )
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def _allow_only(raw: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(raw) - allowed - {"name", "kind", "meta"})
    if unknown:
        raise _EntryProblem(
            f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: {sorted(allowed)}"
        )


def _http_service(id: str, source: str, meta: Mapping[str, Any], raw: Mapping[str, Any]) -> Entry:
    _allow_only(raw, {"addr"})
    return HttpService(id, source, meta, addr=_required(raw, "addr"))


def _http_router(id: str, source: str, meta: Mapping[str, Any], raw: Mapping[str, Any]) -> Entry:
    _allow_only(raw, {"prefix"})
    return HttpRouter(id, source, meta, prefix=_required(raw, "prefix"))


def _process_host(id: str, source: str, meta: Mapping[str, Any], raw: Mapping[str, Any]) -> Entry:
    _allow_only(raw, {"host"})
    return ProcessHost(id, source, meta, **_present(_mapping(raw, "host"), "workers"))


def _registry_entry(
    id: str, source: str, meta: Mapping[str, Any], raw: Mapping[str, Any]
) -> Entry:
    if meta.get("type") != "product":
        data = {k: v for k, v in raw.items() if k not in {"name", "kind", "meta"}}
        return DataEntry(id, source, meta, data=data)
    _allow_only(raw, {"sku", "price", "stock"})
    try:
        price_cents = parse_cents(_required(raw, "price"))
    except ValueError as exc:
        raise _EntryProblem(f"field 'price': {exc}") from None
    return Product(
        id, source, meta, sku=_required(raw, "sku"), title=_required(meta, "title", "meta.title"),
        price_cents=price_cents, stock=_required(raw, "stock"),
    )


def _process_actor(id: str, source: str, meta: Mapping[str, Any], raw: Mapping[str, Any]) -> Entry:
    _allow_only(raw, {"handler", "mailbox"})
    return ActorDefinition(
        id, source, meta, handler=_required(raw, "handler"), **_present(raw, "mailbox")
    )


def _process_service(
    id: str, source: str, meta: Mapping[str, Any], raw: Mapping[str, Any]
) -> Entry:
    _allow_only(raw, {"process", "lifecycle", "subscribe", "enabled_by"})
    subscribe = None
    if "subscribe" in raw:
        topic = raw["subscribe"]
        system, sep, kind = topic.partition("/") if isinstance(topic, str) else ("", "", "")
        if not (sep and system and kind):
            raise _EntryProblem(
                f"field 'subscribe' must be 'system/kind' such as 'shop/order.checkout', "
                f"got {topic!r}"
            )
        subscribe = (system, kind)
    restart = _mapping(_mapping(raw, "lifecycle"), "restart")
    durations = ["initial_delay", *(k for k in ("max_delay", "stable_threshold") if k in restart)]
    policy = RestartPolicy(
        max_attempts=_required(restart, "max_attempts"),
        **{key: _duration(restart, key) for key in durations},
        **_present(restart, "backoff_factor", "jitter"),
    )
    return ServiceDefinition(
        id, source, meta, process=_required(raw, "process"), restart=policy, subscribe=subscribe,
        **_present(raw, "enabled_by"),
    )


_BUILDERS: dict[str, Callable[[str, str, Mapping[str, Any], Mapping[str, Any]], Entry]] = {
    HttpService.KIND: _http_service,
    HttpRouter.KIND: _http_router,
    ProcessHost.KIND: _process_host,
    Product.KIND: _registry_entry,
    ActorDefinition.KIND: _process_actor,
    ServiceDefinition.KIND: _process_service,
}


def _yaml_problem(error: Exception) -> str:
    """*error* in one line: where the YAML is wrong and what is wrong there."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    if isinstance(error, yaml.MarkedYAMLError) and mark is not None and problem:
        return f" at line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return f": {type(error).__name__}: {' '.join(str(error).split())}"


def _load_file(path: Path, label: str, problems: list[str]) -> list[Entry]:
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_RegistryYamlLoader)
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{label}: cannot read file: {exc}")
        return []
    except Exception as exc:  # YAMLError, and what constructors raise (bad dates, nesting)
        problems.append(f"{label}: invalid YAML{_yaml_problem(exc)}")
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
        raise RegistryError(problems, tuple(entries))
    return Registry(tuple(entries), folder=str(root), version=digest.hexdigest()[:16])


__all__ = ["RegistryError", "load_registry"]
