"""Tests of the registry loader: the shipped registry, queries, and every validation error."""

from __future__ import annotations

from pathlib import Path

import pytest

from trioshop.registry import (
    ActorDefinition,
    Product,
    RegistryError,
    ServiceDefinition,
    load_registry,
)

REGISTRY = Path(__file__).parents[2] / "registry"

PRODUCT = """
version: "1.0"
namespace: shop
entries:
  - name: thing
    kind: registry.entry
    meta: {{type: product, title: Thing}}
    sku: {sku}
    price: {price}
    stock: {stock}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def load_error(folder: Path) -> str:
    with pytest.raises(RegistryError) as info:
        load_registry(folder)
    return str(info.value)


def test_shipped_registry_loads_seed_entries() -> None:
    """The repository's registry has the seed's gateway, router, host, products and services."""
    registry = load_registry(REGISTRY)
    assert registry.http_service.addr == ":8080"
    assert registry.router.prefix == "/api"
    assert registry.process_host.workers == 8
    assert [(p.sku, p.price_cents, p.stock) for p in registry.products] == [
        ("LAPTOP-001", 149999, 50),
        ("KB-002", 14999, 200),
        ("MOUSE-003", 7999, 300),
        ("MON-004", 59999, 75),
        ("HP-005", 29999, 150),
    ]
    assert registry.get("app:product.laptop").meta["title"] == "Laptop Pro 16"
    services = {s.name: s.restart for s in registry.services}
    assert set(services) == {"delivery", "notifier", "relay"}
    assert services["delivery"].max_attempts == 10
    assert services["delivery"].initial_delay == 1.0
    assert isinstance(registry.actor("cart"), ActorDefinition)


def test_find_filters_on_meta_in_file_order() -> None:
    """find(kind, **meta) returns the matching entries in file order; get() by id."""
    registry = load_registry(REGISTRY)
    products = registry.find("registry.entry", type="product")
    names = ["laptop", "keyboard", "mouse", "monitor", "headphones"]
    assert [p.name for p in products] == [f"product.{name}" for name in names]
    assert all(isinstance(p, Product) for p in products)
    assert registry.find("process.service", of_type=ServiceDefinition)[0].name == "delivery"
    with pytest.raises(KeyError, match="no registry entry 'app:nope'"):
        registry.get("app:nope")


@pytest.mark.parametrize(
    ("sku", "price", "stock", "expected"),
    [
        ("X-1", "-1", 5, "non-negative"),
        ("X-1", "abc", 5, "expected a number"),
        ("X-1", "1.999", 5, "at most two decimals"),
        ("X-1", "true", 5, "bool"),
        ("X-1", "1.5", -2, "field 'stock' must be an integer from 0 to 1000000000"),
        ("X-1", "1.5", "1.5", "field 'stock' must be an integer from 0 to 1000000000"),
        ("X-1", "1.5", 100000000000000000000, "field 'stock' must be an integer from 0 to"),
        ("X-1", "1000000.01", 5, "must be an integer from 0 to 100000000"),
        ("[1]", "1.5", 2, "field 'sku' must be a non-empty string"),
        ("A/B", "1.5", 2, "without '/'"),
    ],
)
def test_bad_product_fields_are_named(
    tmp_path: Path, sku: str, price: str, stock: object, expected: str
) -> None:
    """A product with a bad sku, price or stock is refused, naming file, entry and field."""
    path = write(tmp_path, "p.yaml", PRODUCT.format(sku=sku, price=price, stock=stock))
    message = load_error(tmp_path)
    assert str(path) in message
    assert "entry 'shop:thing'" in message
    assert expected in message


def test_product_without_sku(tmp_path: Path) -> None:
    """A product without a sku is refused with 'missing field'."""
    write(tmp_path, "p.yaml", PRODUCT.replace("    sku: {sku}\n", "").format(price=1, stock=1))
    assert "missing field 'sku'" in load_error(tmp_path)


def test_unknown_kind(tmp_path: Path) -> None:
    """An entry of an unknown kind is refused with the list of known kinds."""
    write(tmp_path, "a.yaml", 'version: "1"\nnamespace: a\nentries:\n  - {name: x, kind: nope}\n')
    message = load_error(tmp_path)
    assert "entry 'a:x': unknown kind 'nope'" in message
    assert "process.service" in message


def test_duplicate_id_across_files(tmp_path: Path) -> None:
    """The same namespace:name in two files is refused, naming both files."""
    text = 'version: "1"\nnamespace: a\nentries:\n  - {name: gw, kind: http.service, addr: ":1"}\n'
    first = write(tmp_path, "a.yaml", text)
    second = write(tmp_path, "b.yaml", text)
    message = load_error(tmp_path)
    assert f"{second}: entry 'a:gw': duplicate id, already defined in {first}" in message


def test_bad_yaml(tmp_path: Path) -> None:
    """A file that is not valid YAML is refused, naming the file."""
    path = write(tmp_path, "broken.yaml", "entries: [unclosed\n")
    assert f"{path}: invalid YAML" in load_error(tmp_path)


def test_nothing_half_loaded(tmp_path: Path) -> None:
    """One bad file fails the whole load, and every problem is reported at once."""
    write(tmp_path, "a.yaml", PRODUCT.format(sku="A", price=1, stock=1))
    write(tmp_path, "b.yaml", PRODUCT.format(sku="B", price=-1, stock=1).replace("shop", "s2"))
    write(tmp_path, "c.yaml", 'version: "1"\nnamespace: c\nentries:\n  - {name: r, kind: x}\n')
    with pytest.raises(RegistryError) as info:
        load_registry(tmp_path)
    assert len(info.value.problems) == 2


def test_duplicate_sku(tmp_path: Path) -> None:
    """Two products with one sku are refused."""
    write(tmp_path, "a.yaml", PRODUCT.format(sku="A", price=1, stock=1))
    write(tmp_path, "b.yaml", PRODUCT.format(sku="A", price=1, stock=1).replace("shop", "s2"))
    assert "duplicate sku 'A'" in load_error(tmp_path)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("process: nomodule\n    lifecycle: {restart: {max_attempts: 3, initial_delay: 1s}}",
         "'package.module:callable'"),
        ("process: a.b:c\n    lifecycle: {restart: {initial_delay: 1s}}",
         "missing field 'max_attempts'"),
        ("process: a.b:c\n    lifecycle: {restart: {max_attempts: 3, initial_delay: soon}}",
         "duration"),
        ("process: a.b:c\n    lifecycle: {restart: {max_attempts: 0, initial_delay: 1}}",
         "max_attempts"),
    ],
)
def test_bad_service_entries(tmp_path: Path, body: str, expected: str) -> None:
    """A service with a bad callable reference or restart policy is refused, naming the field."""
    write(
        tmp_path,
        "s.yaml",
        f'version: "1"\nnamespace: s\nentries:\n  - name: svc\n    kind: process.service\n'
        f"    {body}\n",
    )
    message = load_error(tmp_path)
    assert "entry 's:svc' (process.service)" in message
    assert expected in message


def test_bad_http_service_addr(tmp_path: Path) -> None:
    """An http.service addr without a port is refused."""
    write(tmp_path, "a.yaml", 'version: "1"\nnamespace: a\nentries:\n'
          '  - {name: gw, kind: http.service, addr: "localhost"}\n')
    assert "field 'addr' must be 'host:port'" in load_error(tmp_path)


def test_unknown_field_is_refused(tmp_path: Path) -> None:
    """A misspelt field (prise for price) is refused rather than ignored."""
    write(tmp_path, "p.yaml", PRODUCT.format(sku="A", price=1, stock=1) + "    prise: 2\n")
    assert "unknown field(s) 'prise'" in load_error(tmp_path)


def test_missing_folder() -> None:
    """A registry path that is not a folder says to pass --registry."""
    with pytest.raises(RegistryError, match="--registry"):
        load_registry("/nonexistent/registry")


def test_price_with_more_digits_than_a_float_holds_is_refused(tmp_path: Path) -> None:
    """A price whose digits a float would round (to 1500.0) is refused as written."""
    write(tmp_path, "p.yaml", PRODUCT.format(sku="X", price="1499.999999999999999999", stock=1))
    assert "1499.999999999999999999" in load_error(tmp_path)


@pytest.mark.parametrize(
    "text",
    ["x: " + "[" * 5000 + "]" * 5000, "x: 2001-13-45", "x: [unclosed"],
)
def test_any_yaml_failure_is_a_listed_problem(tmp_path: Path, text: str) -> None:
    """Whatever parsing a file raises (nesting, bad dates, syntax) is a problem naming it."""
    path = write(tmp_path, "bad.yaml", text)
    assert f"{path}: invalid YAML" in load_error(tmp_path)
