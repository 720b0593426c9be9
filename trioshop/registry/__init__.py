"""The YAML registry: every entry of the app (infrastructure, catalog, actors, services)."""

from trioshop.registry.entries import (
    ActorDefinition,
    DataEntry,
    Entry,
    HttpRouter,
    HttpService,
    ProcessHost,
    Product,
    ServiceDefinition,
    resolve_callable,
)
from trioshop.registry.loader import RegistryError, load_registry
from trioshop.registry.registry import Registry

__all__ = [
    "ActorDefinition",
    "DataEntry",
    "Entry",
    "HttpRouter",
    "HttpService",
    "ProcessHost",
    "Product",
    "Registry",
    "RegistryError",
    "ServiceDefinition",
    "load_registry",
    "resolve_callable",
]
