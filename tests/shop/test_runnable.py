"""Whether the shop can run a registry: every failure to import or use its code is a problem."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import registry_with
from trioshop.registry import RegistryError
from trioshop.shop.runnable import load_runnable_registry

MODULES = {
    "raises_at_import": "raise RuntimeError('boom at import')\n",
    "bad_syntax": "def broken(:\n",
    "exits_at_import": "raise SystemExit(3)\n",
    "not_a_factory": "def make(user_id, deps):\n    return 42\n",
    "sync_service": "def run(ctx, *, task_status):\n    task_status.started()\n",
}


@pytest.fixture
def modules(tmp_path: Path) -> Iterator[Path]:
    """A folder on sys.path holding modules that fail in every way a registry's code can."""
    folder = tmp_path / "code"
    folder.mkdir()
    for name, text in MODULES.items():
        (folder / f"{name}.py").write_text(text)
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    for name in MODULES:
        sys.modules.pop(name, None)


def problems(folder: Path) -> str:
    with pytest.raises(RegistryError) as refused:
        load_runnable_registry(str(folder))
    return str(refused.value)


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("raises_at_import:run", "RuntimeError: boom at import"),
        ("bad_syntax:run", "SyntaxError"),
        ("exits_at_import:run", "SystemExit"),
        ("sync_service:run", "must be an async function"),
    ],
)
def test_service_code_that_cannot_run_is_a_problem(
    tmp_path: Path, modules: Path, reference: str, expected: str
) -> None:
    """A service whose module fails to import, or is not async, is named with file and entry."""
    folder = registry_with(tmp_path, {"trioshop.shop.delivery:run": reference})
    message = problems(folder)
    assert f"{folder / 'processes.yaml'}: entry 'app:delivery' (process.service)" in message
    assert expected in message


def test_cart_handler_must_build_a_behaviour(tmp_path: Path, modules: Path) -> None:
    """A cart handler returning something without ``async handle`` is refused at check time."""
    folder = registry_with(tmp_path, {"trioshop.shop.cart_actor:new_cart": "not_a_factory:make"})
    message = problems(folder)
    assert "entry 'app:cart' (process.actor)" in message
    assert "must return a behaviour" in message


def test_service_names_are_unique_across_namespaces(registry_copy: Path) -> None:
    """Two services named alike in two namespaces are refused: they would share one slot."""
    (registry_copy / "more.yaml").write_text(
        'version: "1.0"\nnamespace: extra\nentries:\n'
        "  - name: delivery\n    kind: process.service\n"
        "    process: trioshop.shop.delivery:run\n"
        "    lifecycle: {restart: {max_attempts: 1, initial_delay: 1s}}\n"
    )
    message = problems(registry_copy)
    assert "'app:delivery'" in message and "'extra:delivery'" in message
    assert "share the name 'delivery'" in message
