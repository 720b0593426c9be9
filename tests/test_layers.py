"""The package's import graph: layers import only downward, no cycles, no private reach-ins."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "trioshop"

# Lowest first. A module may import its own layer and the layers below it, never above.
LAYERS: list[tuple[str, ...]] = [
    # foundations: no shop concept (telemetry: the OpenTelemetry API's helpers every layer may
    # use; telemetry_sdk: the SDK's set-up from Settings, which only the CLI calls)
    (
        "trioshop", "trioshop.logs", "trioshop.config",
        "trioshop.telemetry", "trioshop.telemetry_sdk",
    ),
    ("trioshop.runtime",),  # actors, bus, supervisor: knows nothing of the shop
    ("trioshop.domain",),  # values, refusals, the pure rules
    ("trioshop.registry",),  # the YAML registry's entries
    ("trioshop.store",),  # durable state
    ("trioshop.shop",),  # cart actor, cart API, services, reloads
    ("trioshop.shop.assembly",),  # opens and wires the shop in shutdown order
    ("trioshop.http",),  # the QuartTrio app and routes
    ("trioshop.node",),  # one node's signals, serving and shop, in shutdown order
    ("trioshop.cluster",),  # N nodes behind HAProxy, as processes
    # entry points
    ("trioshop.cli", "trioshop.__main__", "trioshop.testing"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, name: str) -> Iterator[tuple[str, str | None]]:
    """Every trioshop module *path* imports (anywhere, TYPE_CHECKING blocks included), with the
    imported name for ``from`` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                yield base, alias.name


def layer_of(module: str) -> int:
    best, index = -1, -1
    for number, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and len(prefix) > best:
                best, index = len(prefix), number
    assert index >= 0, f"{module} is in no layer: add it to LAYERS"
    return index


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for target, imported in imports(path, name):
            if not target.startswith("trioshop"):
                continue
            submodule = f"{target}.{imported}" if imported else target
            edges[name].add(submodule if submodule in known else target)
    return edges


def test_every_module_has_a_layer() -> None:
    """Each module of the package belongs to exactly one declared layer."""
    for name in modules():
        layer_of(name)


def test_imports_only_run_downward() -> None:
    """No module imports from a layer above its own."""
    upward = [
        f"{source} (layer {layer_of(source)}) imports {target} (layer {layer_of(target)})"
        for source, targets in graph().items()
        for target in targets
        if layer_of(target) > layer_of(source)
    ]
    assert upward == []


def test_no_import_cycles() -> None:
    """The module graph is acyclic: no two modules depend on each other, even indirectly."""
    edges = graph()
    state: dict[str, str] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for target in sorted(edges.get(node, ())):
            # A package's __init__ importing its own submodules is how packages are built;
            # the reverse edge (a submodule importing its package) is what a cycle would be.
            if node != target and not target.startswith(node + "."):
                if state.get(target) == "open":
                    cycles.append([*trail, node, target])
                elif target not in state:
                    visit(target, [*trail, node])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert cycles == []


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_private_names_from_other_packages(name: str) -> None:
    """A module imports no ``_private`` name or module from outside its own package."""

    def private(part: str) -> bool:
        return part.startswith("_") and not part.endswith("__")

    path = modules()[name]
    own_package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    reached = [
        f"{target}:{imported}"
        for target, imported in imports(path, name)
        if target.startswith("trioshop")
        and target.rpartition(".")[0] != own_package
        and target != own_package
        and (
            private(imported or "") or any(private(part) for part in target.split("."))
        )
    ]
    assert reached == []
